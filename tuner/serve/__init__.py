"""Running a server: the launcher interface, local processes, Docker containers, readiness, GPUs (NVML)."""
