"""The workspace's layout, in one place: where each stage reads and writes, relative to
the project root (a stage's working directory). Everything else takes these paths (as
`root / workspace.X`) instead of spelling them."""

from pathlib import Path

PARAMS = Path("params.yaml")
EXTERNAL = Path("data/external")
RAW = Path("data/raw/dataset.parquet")
SCHEMA = Path("data/raw/schema.json")
VALIDATION = Path("reports/validation.json")
SPLIT_DIR = Path("data/split")
SPLITS = {name: SPLIT_DIR / f"{name}.parquet" for name in ("train", "val", "test")}
# The schema with what is fitted on the train split (a mixed table's column encoding).
SPLIT_SCHEMA = SPLIT_DIR / "schema.json"
BEST_PARAMS = Path("reports/best_params.json")
TUNE_METRICS = Path("reports/tune.json")
MODEL_DIR = Path("models")
HISTORY = Path("reports/train_history.json")
METRICS = Path("reports/metrics.json")
CONFUSION = Path("reports/confusion.json")
VAL_SCORE = Path("reports/val_score.json")
PLOTS_DIR = Path("reports/plots")
PREDICTIONS_PNG = PLOTS_DIR / "test_predictions.png"
CURVES_PNG = PLOTS_DIR / "learning_curves.png"
REGISTERED = Path("reports/registered.json")
CHECKPOINT = Path("checkpoints/train.pt")
DRIFT_DIR = Path("reports/drift")  # mlops monitor drift: one plot per version
PERFORMANCE_DIR = Path("reports/performance")  # mlops monitor performance: one per version
