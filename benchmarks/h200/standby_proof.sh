#!/usr/bin/env bash
# Issue 22: the shortest real run that shows stand-bys taking SGLang's spawns, for a call too short for
# gpu_seconds.sh: gpu-seconds-standby.yaml's study of two trials in one run (the defaults, fresh, which record their
# spawns; then the first of gpu-seconds-configs.yaml, on stand-bys), with a warm-up of at most 10 s and one load
# level of 3 s. CUDA graphs stay on: a cold machine builds its kernels whichever way (with graphs off the builds
# moved into SGLang's warm-up), and the first trial's startup pays them. Its numbers are no GPU-seconds comparison:
# the second trial's record (`spawned`), its log's "# prestarted:" lines and its spawn phase say whether the
# hand-over happened; spawn_import_probe.py runs beside it (probe.txt: which variables the imports read, where).
# From the repository root with .gpu and .whl carried:   bash benchmarks/h200/standby_proof.sh 330
set -uo pipefail
budget=${1:-330}
bash benchmarks/h200/prepare.sh
source .gpu/env.sh
export PYTHONPATH=$PWD:/tmp/site:$PYTHONPATH PYTHONUNBUFFERED=1
mkdir -p "$OUT/standby-proof"
python3 benchmarks/h200/spawn_import_probe.py > "$OUT/standby-proof/probe.txt" 2>&1 &
db=$OUT/standby-proof/standby-proof.db  # under $OUT from the start: whatever the call's end, it comes back
timeout -s TERM "$budget" python3 - "$db" "$PWD" <<'PY'
import sys

import yaml

from tuner.config.run import load_config
from tuner.search.study import Tuner
from tuner.trial.record import TrialRecord

db, root = sys.argv[1:]
run = yaml.safe_load(open(f"{root}/benchmarks/h200/gpu-seconds-standby.yaml"))
run.update(study="h200-standby-proof", storage=f"sqlite:///{db}", trials_dir=f"{root}/trials", trials=2,
           space=f"{root}/search_spaces/h200-qwen3-8b-chat.yaml")
run["objective"]["load_search"].update(max_rate=4, level_duration_s=3, min_prompts=8)
run["workload"]["warmup_max_s"] = 10
yaml.safe_dump(run, open("/tmp/standby-proof.yaml", "w"))
tuner = Tuner(load_config("/tmp/standby-proof.yaml"))
study = tuner.prepare()
if not study.trials:
    study.enqueue_trial({}, user_attrs=TrialRecord(baseline=True).attrs())
    study.enqueue_trial(yaml.safe_load(open(f"{root}/benchmarks/h200/gpu-seconds-configs.yaml"))[0])
tuner.run()
PY
echo "tune exited $?"
python3 -m tuner status -c /tmp/standby-proof.yaml 2>&1 | tee "$OUT/standby-proof/status.txt"
grep -H "# prestarted" trials/h200-standby-proof/*/server.log | tee "$OUT/standby-proof/prestarted.txt"
tar czf "$OUT/standby-proof/trials.tgz" --exclude=artifacts trials/h200-standby-proof 2>/dev/null
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
