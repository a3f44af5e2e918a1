"""`mlops serve`: a registered version behind HTTP (FastAPI on uvicorn), with a torch or
ONNX Runtime backend, Prometheus metrics, a hot swap when its stage's alias moves, and a
sampled SQLite sink of inputs and predictions for monitoring.

Nothing here is imported by `mlops --help`; each module imports its heavy libraries in
the functions that need them.
"""
