#!/usr/bin/env bash
# Issue 22 on the GPU: the prestart lever (tuner/serve/prestart.py) measured. One `tune start` runs three trials in a
# row of gpu-seconds-after.yaml's study settings (SGLang's defaults, then chat trials 4 and 7 of the recorded study,
# the configs of "after" trials 1 and 2): trials 1 and 2 launch on interpreters that imported while the trial
# before ran. Compare their startup phases with the same configs in gpu-seconds/after.db (started fresh, one
# `tune start` per trial). The study database is copied under $OUT every 10 s and at the end. Run from the
# repository root with .gpu and .whl carried, after gpu_seconds.sh on the same machine (warm caches):
#   bash benchmarks/h200/prestart.sh 540
set -uo pipefail
budget=${1:-540}
bash benchmarks/h200/prepare.sh
source .gpu/env.sh
export PYTHONPATH=$PWD:/tmp/site:$PYTHONPATH PYTHONUNBUFFERED=1
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
  *H200*) sub=gpu-seconds/h200 ;;
  *) sub=gpu-seconds ;;
esac
db=benchmarks/h200/$sub/prestart.db
mkdir -p "$(dirname "$db")" "$OUT/$sub"
copy() { python3 -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))" "$db" "$OUT/$sub/prestart.db"; }
# Every 10 s: the database under $OUT, and which processes hold a CUDA context (a prestarted interpreter must not).
( while sleep 10; do
    copy 2>/dev/null
    { date -u +%T; nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader
      ps -eo pid,etimes,args | grep -- "-c import importlib" | grep -v grep | cut -c1-80; } >> "$OUT/$sub/holders.txt"
  done ) >/dev/null 2>&1 &
copier=$!
# The library under `tune start`: the study is made (and its baseline queued, as Tuner._enqueue_references does)
# before the two chat configs are queued behind it, so that they are sampled trials the incumbent can stop.
# timeout, not a sleeping subshell: an orphaned sleep would hold the call's output open to its end.
timeout -s TERM "$budget" python3 - "$PWD/$db" <<'PY'
import sys
import yaml
from tuner.config.run import load_config
from tuner.search.study import Tuner
from tuner.trial.record import TrialRecord
config = load_config("benchmarks/h200/gpu-seconds-after.yaml").model_copy(
    update={"study": "h200-gpu-seconds-prestart", "storage": f"sqlite:///{sys.argv[1]}", "trials": 3})
tuner = Tuner(config)
study = tuner.prepare()
if not study.trials:
    study.enqueue_trial({}, user_attrs=TrialRecord(baseline=True).attrs())
    for params in yaml.safe_load(open("benchmarks/h200/gpu-seconds-configs.yaml"))[:2]:
        study.enqueue_trial(params)
tuner.run()
PY
echo "tune start exited $?"
kill $copier 2>/dev/null
copy
python3 -m tuner status -c benchmarks/h200/gpu-seconds-after.yaml --study h200-gpu-seconds-prestart \
  --storage "sqlite:///$db" 2>&1 | tee "$OUT/$sub/status-prestart.txt"
grep -h "prestarted" trials/h200-gpu-seconds-prestart/*/server.log | head -5
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
