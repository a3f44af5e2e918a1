"""The model registry: versions, stages, promotion gates, comparison, history, rollback.

MLflow's model registry stores versions and artifacts; this package adds lineage,
stages held through aliases and tags, and (in later work) gates and a ledger.
"""
