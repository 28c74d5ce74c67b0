#!/usr/bin/env bash
# Issue 22 on the H200: the same four configs measured before (every trial-cost switch off) and after (the
# defaults), one trial of each in turn so that both sides see the same machine: before 1, after 1, before 2, ...
# Each step is `tune start --trials N` (resuming its study); a step starts only if its estimated seconds fit what is
# left of BUDGET_S, so no trial is cut off by the call's end. Call it again (back to back, the machine warm) until
# both studies hold 4 trials; the study databases (benchmarks/h200/gpu-seconds/) are copied under $OUT after every
# step. Run from the repository root with .gpu and .whl carried:
#   bash benchmarks/h200/gpu_seconds.sh 560
set -uo pipefail
budget=${1:-560}
t0=$SECONDS
bash benchmarks/h200/prepare.sh
source .gpu/env.sh
export PYTHONPATH=$PWD:/tmp/site:$PYTHONPATH PYTHONUNBUFFERED=1
# Pairs compare only on one kind of card: an H200's studies live apart from the H100's (gpu-seconds/h200/).
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
  *H200*) sub=gpu-seconds/h200 ;;
  *) sub=gpu-seconds ;;
esac
mkdir -p "benchmarks/h200/$sub" "$OUT/$sub"
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
enqueue() {  # trials 4, 7 and 10 of the recorded chat study, as the first trials the sampler would hand out
  python3 - "$1" <<'PY'
import sys
import optuna
import yaml
storage = f"sqlite:///{sys.argv[1]}"
study = optuna.load_study(study_name=optuna.study.get_all_study_names(storage)[0], storage=storage)
if len(study.trials) < 2:
    for params in yaml.safe_load(open("benchmarks/h200/gpu-seconds-configs.yaml")):
        study.enqueue_trial(params)
PY
}
for n in 1 2 3 4; do
  for side in before after; do
    db=benchmarks/h200/$sub/$side.db
    [ "$n" = 2 ] && enqueue "$db"
    [ "$(done_trials "$db")" -ge "$n" ] && continue
    # A trial's seconds as recorded on this machine (startup 70-90 s, 175-205 s with a cold JIT cache; the load
    # search ~100 s before, ~25 s after) plus a margin.
    est=$([ "$side" = before ] && echo "${EST_BEFORE:-230}" || echo "${EST_AFTER:-150}")
    [ -n "$(ls -A /tmp/sglrt/triton-cache 2>/dev/null)" ] || est=$((est + 130))
    left=$((budget - (SECONDS - t0)))
    if [ "$left" -lt "$est" ]; then echo "stop: $side trial $n needs ~${est}s, ${left}s left"; break 2; fi
    echo "== $side trial $n ($(date -u +%T), ${left}s left)"
    s=$SECONDS
    python3 -m tuner start -c benchmarks/h200/gpu-seconds-$side.yaml --storage "sqlite:///$db" --trials "$n" --quiet &
    tuner=$!
    ( sleep "$left"; kill -INT $tuner 2>/dev/null ) &
    timer=$!
    wait $tuner
    echo "tune start exited $? after $((SECONDS - s)) s"
    kill $timer 2>/dev/null
    python3 -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))" \
      "$db" "$OUT/$sub/$side.db"
  done
done
for side in before after; do
  python3 -m tuner status -c benchmarks/h200/gpu-seconds-$side.yaml --storage "sqlite:///benchmarks/h200/$sub/$side.db" \
    > "$OUT/$sub/status-$side.txt" 2>&1
done
tar czf "$OUT/$sub/trials.tgz" --exclude=artifacts trials/h200-gpu-seconds-before trials/h200-gpu-seconds-after 2>/dev/null
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
ls -la "$OUT/$sub"
