"""The model registry: versions, stages, promotion gates, comparison, ledger, rollback.

MLflow's model registry stores versions and artifacts; this package adds stages held
through aliases and tags, gates with evidence, an append-only ledger with rollback in
the platform database (`registry.db`), comparison with significance tests, and lineage.
"""
