"""Measuring a server: workloads, bench_serving's metrics, the streaming client and its HTTP transport, the SLO load
search."""
