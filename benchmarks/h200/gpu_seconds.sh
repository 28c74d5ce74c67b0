#!/usr/bin/env bash
# Issue 22 on the H200: the same four configs measured before (every trial-cost switch off) and after (the
# defaults): one side, then the other (below). A step starts only if its estimated seconds fit what is left of BUDGET_S, so no trial is cut off
# by the call's end. Call it again (back to back, the machine warm) until both studies hold 4 trials; the study
# databases (benchmarks/h200/gpu-seconds/) are copied under $OUT every 10 s. Copy them back into this checkout before
# the next call: the machine gets this checkout's files, so a database left only there is gone and its side starts
# anew (2026-12-06: a second "before" call ran the defaults and trial 1 again); on a warm machine the script stops
# when a study holds fewer trials than its last call there left. Run from the repository root with
# .gpu and .whl carried:
#   bash benchmarks/h200/gpu_seconds.sh 560
# GPU_SIDES="before" (or "after") runs one side only; "standby" is "after" with launcher.prestart_spawned on.
# GPU_TRIALS: the trials a study holds when done (4).
set -uo pipefail
budget=${1:-560}
total=${GPU_TRIALS:-4}
sides=${GPU_SIDES:-after before}
t0=$SECONDS
bash benchmarks/h200/prepare.sh
source .gpu/env.sh
export PYTHONPATH=$PWD:/tmp/site:$PYTHONPATH PYTHONUNBUFFERED=1
# Pairs compare only on one kind of card: an H200's studies live apart from the H100's (gpu-seconds/h200/).
# An H100's "before" and first "after" are complete (gpu-seconds/, 2026-12-05, before the scheduler's stand-by):
# on an H100 a new "after" study (gpu-seconds/h100-standby/) measures the defaults as they are now, against that
# "before" (its switches, all off, are unchanged).
# GPU_SUB names another folder: a pair of studies run side by side on one machine (gpu-seconds/h100-pair/).
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
  *H200*) sub=gpu-seconds/h200 ;;
  *) sub=gpu-seconds/h100-standby; sides=${GPU_SIDES:-after} ;;
esac
sub=${GPU_SUB:-$sub}
mkdir -p "benchmarks/h200/$sub" "$OUT/$sub"
# GPU_PROBE=1: beside the study, on the CPU, spawn_import_probe.py says which variables a scheduler's imports read
# and where (what refuses a stand-by), in $OUT/$sub/probe.txt.
[ "${GPU_PROBE:-0}" = 1 ] && { python3 benchmarks/h200/spawn_import_probe.py > "$OUT/$sub/probe.txt" 2>&1 & }
done_trials() {  # the trials that count against a study's budget (Tuner.trials_done)
  python3 - "$1" <<'PY'
import sqlite3, sys
try:
    con = sqlite3.connect(sys.argv[1])
    print(con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0])
except sqlite3.Error:
    print(0)
PY
}
enqueue() {  # side, database: the study made, its baseline (the defaults) queued as a run would, then trials 4, 7
  # and 10 of the recorded chat study as the first trials the sampler would hand out (as prestart.sh does)
  python3 - "$@" <<'PY'
import sys
import yaml
from tuner.config.run import load_config
from tuner.search.study import Tuner
from tuner.trial.record import TrialRecord
config = load_config(f"benchmarks/h200/gpu-seconds-{sys.argv[1]}.yaml")
study = Tuner(config.model_copy(update={"storage": f"sqlite:///{sys.argv[2]}"})).prepare()
if not study.trials:
    study.enqueue_trial({}, user_attrs=TrialRecord(baseline=True).attrs())
    for params in yaml.safe_load(open("benchmarks/h200/gpu-seconds-configs.yaml")):
        study.enqueue_trial(params)
PY
}
copy() { python3 -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))" "$1" "$2"; }
# A step: `tune start --trials N` of one side (resuming its study), started only if its estimated seconds fit what
# is left of the budget; its database is copied under $OUT every 10 s and at its end.
step() {  # side, trials to reach, estimated seconds
  local side=$1 n=$2 est=$3 db=benchmarks/h200/$sub/$1.db
  local left=$((budget - (SECONDS - t0)))
  if [ "$left" -lt "$est" ]; then echo "stop: $side to $n trials needs ~${est}s, ${left}s left"; return 1; fi
  echo "== $side to $n trials ($(date -u +%T), ${left}s left)"
  local s=$SECONDS
  # Also every 10 s: which processes hold a CUDA context, beside any prestarted interpreter (which must hold none).
  ( while sleep 10; do
      copy "$db" "$OUT/$sub/$side.db" 2>/dev/null
      { date -u +%T; nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader
        ps -eo pid,etimes,args | grep -- "-c import importlib" | grep -v grep | cut -c1-60; } >> "$OUT/$sub/holders.txt"
    done ) >/dev/null 2>&1 &
  local copier=$!
  # timeout, not a sleeping subshell: an orphaned sleep would hold the call's output open to its end.
  timeout -s TERM "$left" python3 -m tuner start -c benchmarks/h200/gpu-seconds-$side.yaml --storage "sqlite:///$db" \
    --trials "$n" --quiet
  echo "tune start exited $? after $((SECONDS - s)) s"
  touch /tmp/sglrt/.gpu-seconds-built
  kill $copier 2>/dev/null
  copy "$db" "$OUT/$sub/$side.db"
}
# A trial's seconds as recorded on H100 and H200 (a warm startup 55-90 s; the load search ~100 s before, 8-30 s
# after) plus a margin; SGLang's defaults, a study's first trial, run their whole curve on either side (~180 s).
est_before=${EST_BEFORE:-230} est_after=${EST_AFTER:-120} est_first=${EST_FIRST:-200}
# One side, then the other, "after" first, each in one `tune start` of as many trials as fit (consecutive trials
# of one run are what launcher.prestart and its stand-bys, on in "after" and "standby", need).
for side in $sides; do
  db=benchmarks/h200/$sub/$side.db
  est=$([ "$side" = before ] && echo "$est_before" || echo "$est_after")
  done_n=$(done_trials "$db")
  # What an earlier call on this (warm) machine left in this study: fewer here means its database was not copied
  # back into the checkout, and running on would start the study anew.
  mark=/tmp/sglrt/.gpu-seconds-$(echo "$sub" | tr / -)-$side
  if [ -e "$mark" ] && [ "$done_n" -lt "$(cat "$mark")" ]; then
    echo "stop: $db holds $done_n trials, this machine's last call left $(cat "$mark"): copy that call's" \
      "$sub/$side.db back into benchmarks/h200/$sub/ first"
    exit 1
  fi
  [ "$done_n" -ge "$total" ] && continue
  # A machine this script has not yet run a trial on builds its kernels first (~130 s more); its cache folders
  # may hold the kit's files either way, so they cannot tell.
  [ -e /tmp/sglrt/.gpu-seconds-built ] && cold=0 || cold=130
  left=$((budget - (SECONDS - t0)))
  first=$(( done_n == 0 && est_first > est ? est_first - est : 0 ))  # the defaults' whole curve, beyond a trial
  fit=$(( (left - 20 - cold - first) / est ))
  n=$(( done_n + fit < total ? done_n + fit : total ))
  [ "$n" -gt "$done_n" ] || { echo "stop: $side needs ~${est}s a trial, ${left}s left"; break; }
  enqueue "$side" "$PWD/$db"
  step "$side" "$n" $(( est * (n - done_n) + first ))
  ok=$?
  done_trials "$db" > "$mark"
  [ "$ok" = 0 ] || break
  [ "$(done_trials "$db")" -ge "$total" ] || break
done
for side in $sides; do
  python3 -m tuner status -c benchmarks/h200/gpu-seconds-$side.yaml --storage "sqlite:///benchmarks/h200/$sub/$side.db" \
    > "$OUT/$sub/status-$side.txt" 2>&1
done
tar czf "$OUT/$sub/trials.tgz" --exclude=artifacts $(for side in $sides; do echo trials/h200-gpu-seconds-$side; done) 2>/dev/null
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
ls -la "$OUT/$sub"
