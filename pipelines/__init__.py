"""The DVC stages of the pipeline: `python -m pipelines.<stage>`."""
