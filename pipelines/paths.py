"""Where each stage reads and writes, relative to the stage's working directory."""

from pathlib import Path

PARAMS = Path("params.yaml")
EXTERNAL = Path("data/external")
RAW = Path("data/raw/dataset.parquet")
SCHEMA = Path("data/raw/schema.json")
VALIDATION = Path("reports/validation.json")
SPLITS = {name: Path(f"data/split/{name}.parquet") for name in ("train", "val", "test")}
BEST_PARAMS = Path("reports/best_params.json")
TUNE_METRICS = Path("reports/tune.json")
MODEL_DIR = Path("models")
HISTORY = Path("reports/train_history.json")
METRICS = Path("reports/metrics.json")
CONFUSION = Path("reports/confusion.json")
VAL_SCORE = Path("reports/val_score.json")
PREDICTIONS_PNG = Path("reports/plots/test_predictions.png")
CURVES_PNG = Path("reports/plots/learning_curves.png")
REGISTERED = Path("reports/registered.json")
CHECKPOINT = Path("checkpoints/train.pt")
