"""Hyperparameter search with Optuna: the objective (one trial = one training job), sweeps
over parallel workers, the worker process, the CLI, the search space, and the Optuna
storage with its retry wrapper."""
