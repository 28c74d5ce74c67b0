#!/usr/bin/env bash
# deploy-best.sh: the best feasible config of study 'h200-qwen3-8b-chat' (trial 0),
# exported by sglang-tuner on 2026-12-02 05:47 UTC.
# Launcher: launcher=process, command=python3 -m sglang.launch_server
# SGLang version (from /get_server_info): 0.5.17
# Measured with ISL 512 / OSL 128, startup 174.0 s, GPU peak 136507 MiB:
#   concurrency  60:     910.4 output tok/s, median TTFT     25.6 ms, median TPOT    6.51 ms (+0.0% vs SGLang defaults)
#   concurrency 120:    1904.8 output tok/s, median TTFT     27.2 ms, median TPOT    7.81 ms (+0.0% vs SGLang defaults)
#   concurrency 240:    3626.3 output tok/s, median TTFT     32.2 ms, median TPOT   10.98 ms (+0.0% vs SGLang defaults)
#   concurrency 480:    5805.8 output tok/s, median TTFT     76.2 ms, median TPOT   37.72 ms (+0.0% vs SGLang defaults)
#   concurrency 360:    4993.8 output tok/s, median TTFT     35.5 ms, median TPOT   16.54 ms (+0.0% vs SGLang defaults)
#   concurrency 420:    5686.5 output tok/s, median TTFT     45.4 ms, median TPOT   23.07 ms (+0.0% vs SGLang defaults)
set -euo pipefail

# Serve elsewhere without editing: HOST=... PORT=... CUDA_VISIBLE_DEVICES=... ./deploy-best.sh (defaults: what was measured)
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-30000}
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
exec python3 -m sglang.launch_server \
  --model-path /tmp/sglrt/model-qwen3-8b \
  --host "$HOST" \
  --port "$PORT" \
  --load-format dummy \
  --attention-backend triton \
  --sampling-backend pytorch \
  --grammar-backend none \
  --log-level info
