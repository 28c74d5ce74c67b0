#!/usr/bin/env bash
# One device call of a study on the H200: resume it for up to BUDGET_S seconds, stop it the way a user would
# (SIGINT: the server is stopped, the trial in flight is recorded interrupted and re-queued), then copy the study
# database, the trial folders and `tune status` under $OUT. Run from the repository root with .gpu and .whl
# carried (benchmarks/h200/prepare.sh), and studies/ carried when the machine may be fresh:
#   bash benchmarks/h200/study.sh runs/h200-qwen3-8b-chat.yaml 540
# SGLang's own default attention on Hopper (fa3) needs ../shared/gpu/fa3 staged first on the same warm machine:
# one call with the kit (.gpu) to run .gpu/setup.sh, then three calls back to back, each carrying one part in .fa3
# with stage.sh and the checksums, each running `bash .fa3/stage.sh` (the machine keeps /tmp 30 s between calls).
set -uo pipefail
run=$1
budget=${2:-540}
t0=$SECONDS
bash benchmarks/h200/prepare.sh
source .gpu/env.sh
export PYTHONPATH=$PWD:/tmp/site:$PYTHONPATH PYTHONUNBUFFERED=1
study=$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['study'])" "$run")
if [ "${BUSY_CHECK:-0}" = 1 ]; then
  # Issue 12 on real hardware: another process holds 100 GiB of the GPU; tune start must refuse, naming it.
  python3 -c "import torch, time; x = torch.empty(100 * 2**30, dtype=torch.uint8, device='cuda'); print('holding', flush=True); time.sleep(300)" &
  holder=$!
  until nvidia-smi --query-compute-apps=pid --format=csv,noheader | grep -q "$holder"; do sleep 0.5; done
  sleep 2
  { echo "\$ tune start -c $run   (while PID $holder holds 100 GiB)"; timeout 120 python3 -m tuner start -c "$run" --study busy-check --storage sqlite:////tmp/busy-check.db; echo "exit code $?"; } > "$OUT/busy_check.txt" 2>&1
  kill $holder; wait $holder 2>/dev/null
  while [ -n "$(nvidia-smi --query-compute-apps=pid --format=csv,noheader)" ]; do sleep 0.5; done
  cat "$OUT/busy_check.txt"
fi
left=$((budget - (SECONDS - t0)))
python3 -m tuner start -c "$run" &
tuner=$!
# A machine can stop answering mid-call, and what is under $OUT comes back even then: copy the study database
# there whenever it changes (SQLite's online backup: a consistent copy while the tuner writes), so that every
# finished trial survives the call.
db=studies/"$study".db
( last=""; while kill -0 $tuner 2>/dev/null; do
    now=$(stat -c %Y "$db" 2>/dev/null || true)
    if [ -n "$now" ] && [ "$now" != "$last" ]; then
      python3 -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))" \
        "$db" "$OUT/$study.db" && last=$now
    fi
    sleep 5
  done ) &
saver=$!
# Ends only the tuner, by PID: it stops its own server (never pkill -f: it can match this script's shell).
( sleep "$left"; kill -INT $tuner 2>/dev/null ) &
timer=$!
wait $tuner
echo "tune start exited $?"
kill $timer $saver 2>/dev/null
python3 -m tuner status -c "$run" > "$OUT/status.txt" 2>&1
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv >> "$OUT/status.txt"
tar czf "$OUT/$study.tgz" --exclude=artifacts studies/"$study".db trials/"$study"
ls -la "$OUT"
