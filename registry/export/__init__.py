"""`mlops export`: one home for exporting a version. `records` reads what a version's tags
say about its exports (the gates and serving use it, never the service); `service`
exports and attaches (`run` converts and measures, `formats` writes ONNX and TorchScript,
`parity` holds an export to the PyTorch model); `cli` parses and prints."""
