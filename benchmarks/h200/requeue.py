"""Queues the three sampled configs of gpu-seconds-configs.yaml again in a study database (argument): to measure
them again after a change, in the same study (its incumbent, SGLang's defaults, decides where their search starts)."""

import sys
from pathlib import Path

import optuna
import yaml

study = optuna.load_study(study_name="h200-gpu-seconds-standby", storage=f"sqlite:///{sys.argv[1]}")
for params in yaml.safe_load(Path("benchmarks/h200/gpu-seconds-configs.yaml").read_text()):
    study.enqueue_trial(params, skip_if_exists=False)
