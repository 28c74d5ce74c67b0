#!/usr/bin/env bash
# deploy-best.sh: the best feasible config of study 'h200-qwen3-8b' (trial 3),
# exported by sglang-tuner on 2026-11-28 13:42 UTC.
# Launcher: launcher=process, command=python3 -m sglang.launch_server
# SGLang version (from /get_server_info): 0.5.17
# Measured with ISL 512 / OSL 128, startup 78.9 s, GPU peak 103205 MiB:
#   concurrency   1:     191.6 output tok/s, median TTFT     21.4 ms, median TPOT    5.09 ms (+2.1% vs SGLang defaults)
#   concurrency  16:    2234.4 output tok/s, median TTFT    131.8 ms, median TPOT    6.27 ms (+0.0% vs SGLang defaults)
#   concurrency  64:    4677.7 output tok/s, median TTFT    428.2 ms, median TPOT   10.32 ms (+0.7% vs SGLang defaults)
set -euo pipefail

export CUDA_VISIBLE_DEVICES=0
exec python3 \
  -m \
  sglang.launch_server \
  --model-path /tmp/sglrt/model-qwen3-8b \
  --host 127.0.0.1 \
  --port 30000 \
  --load-format dummy \
  --attention-backend triton \
  --sampling-backend pytorch \
  --grammar-backend none \
  --log-level info \
  --mem-fraction-static 0.7 \
  --cuda-graph-max-bs-decode 128 \
  --triton-attention-num-kv-splits 16 \
  --chunked-prefill-size 4096 \
  --schedule-policy lof
