"""`python -m tuner` is `tune`, for environments where the console script is not installed."""

from tuner.cli import app

app(prog_name="tune")
