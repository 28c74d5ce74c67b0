#!/usr/bin/env bash
# One device call: export deploy-best.sh from the study, start it as a user would, then on that server
#  1. sglang.bench_serving --output-details (per-request TTFT/ITL/latency/output lengths: tests' parity data),
#  2. tune bench with the study's own load search, from START_RATE (the rates at and above it are the study's),
# and stop the server by its process group. Needs studies/ and trials/ of the study carried.
#   bash benchmarks/h200/reproduce.sh runs/h200-qwen3-8b-chat.yaml 16
set -uo pipefail
run=$1
start_rate=${2:-}
bash benchmarks/h200/prepare.sh
source .gpu/env.sh
export PYTHONPATH=$PWD:/tmp/site:$PYTHONPATH PYTHONUNBUFFERED=1
python3 -m tuner export -c "$run" --out /tmp/deploy || exit 1
cp /tmp/deploy/deploy-best.sh "$OUT/"
setsid bash /tmp/deploy/deploy-best.sh > "$OUT/deploy-server.log" 2>&1 &
server=$!
t0=$SECONDS
until curl -sf -o /dev/null http://127.0.0.1:30000/health; do
  kill -0 $server 2>/dev/null || { echo "deploy-best.sh exited"; tail -20 "$OUT/deploy-server.log"; exit 1; }
  sleep 1
done
echo "deploy-best.sh healthy after $((SECONDS - t0)) s"
python3 -m sglang.bench_serving --backend sglang-oai --dataset-name random-ids --random-range-ratio 1 \
  --random-input-len 512 --random-output-len 128 --num-prompts 64 --max-concurrency 16 --seed 1 \
  --host 127.0.0.1 --port 30000 --model /tmp/sglrt/model-qwen3-8b --tokenizer /tmp/sglrt/model-qwen3-8b \
  --output-file "$OUT/bench_serving_details.jsonl" --output-details 2>&1 | tail -25
bench_run=$run
if [ -n "$start_rate" ]; then
  bench_run=/tmp/bench-run.yaml
  sed "s/start_rate: [0-9.]*/start_rate: $start_rate/" "$run" > $bench_run
fi
python3 -m tuner bench -c $bench_run --out "$OUT/deploy-best-bench.csv" 2>&1 | tail -15
kill -TERM -- -$server; sleep 3; kill -KILL -- -$server 2>/dev/null
ls -la "$OUT"
