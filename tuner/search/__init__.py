"""The study: Optuna storage, the objective, the trial loop, launcher choice, confirmation re-runs."""
