"""Production monitoring: the drift service and CLI, the reference data a version was
trained on, the drift statistics and their plot."""
