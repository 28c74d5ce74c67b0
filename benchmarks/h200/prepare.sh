#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root, with .gpu (../shared/gpu) and .whl carried:
# unpack SGLang 0.5.17 and the model configs, install the tuner's wheels the image lacks, and print what runs.
# Then: source .gpu/env.sh; export PYTHONPATH=$PWD:/tmp/site:$PYTHONPATH
set -euo pipefail
bash .gpu/setup.sh >/dev/null
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
nvidia-smi --query-gpu=index,name,memory.used,memory.total,driver_version --format=csv,noheader
