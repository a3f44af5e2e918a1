"""`python -m mlops`: the `mlops` command (how `mlops sweep run` starts its workers)."""

from mlops.cli import main

main()
