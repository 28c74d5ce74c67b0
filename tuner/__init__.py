"""sglang-tuner: tune SGLang launch flags with Optuna against real servers and real benchmarks."""

__version__ = "0.1.0"
