#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .gpu (../shared/gpu) carried: launch real
# SGLang 0.5.17 at memory fractions around tuner/sglang/feasibility.py's predicted boundary and keep the lines that say
# what happened (weights loaded, KV pool, or the refusal). Each server is stopped once its KV pool is allocated.
# Output: $OUT/kv_pool_check.log (one block per launch) and nvidia-smi's total memory.
set -uo pipefail
bash .gpu/setup.sh >/dev/null
source .gpu/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/kv_pool_check.log"
n=0
check() {  # model, then flags
  local model=$1; shift
  n=$((n + 1))
  local log="$OUT/launch-$n.log"
  echo "=== $n qwen3-$model $*" >> "$OUT/kv_pool_check.log"
  local t0=$SECONDS
  setsid python3 -m sglang.launch_server --model-path /tmp/sglrt/model-qwen3-$model --load-format dummy \
    --attention-backend triton --sampling-backend pytorch --grammar-backend none --host 127.0.0.1 --port 30123 \
    "$@" > "$log" 2>&1 &
  local pid=$!
  while kill -0 $pid 2>/dev/null && ! grep -q "KV Cache is allocated" "$log" && (( SECONDS - t0 < 150 )); do
    sleep 1
  done
  kill -9 -- -$pid 2>/dev/null; wait $pid 2>/dev/null
  grep -E "Load weight (begin|end)|KV Cache is allocated|Error|leave no GPU memory|context_length \(" "$log" \
    | cut -c1-400 >> "$OUT/kv_pool_check.log"
  echo "elapsed $((SECONDS - t0)) s" >> "$OUT/kv_pool_check.log"
  sleep 3  # the GPU's memory back before the next launch
}
check 8b --context-length 65536
check 32b --mem-fraction-static 0.9
check 32b --mem-fraction-static 0.46
check 32b --mem-fraction-static 0.42
check 32b --mem-fraction-static 0.38
check 8b --mem-fraction-static 0.105
