"""Text training throughput: batches bucketed by length against batches padded to
`max_length`, the same model on the same texts.

The corpus is the installed packages' summaries and description paragraphs, labelled by
their Trove topic (tests/corpus.py, nothing downloaded), tokenized with a BPE tokenizer
trained on them (8,000 pieces, `max_length` 128: the params.yaml default). Each round
trains the same transformer (the default family size) for the same epochs with
`mlops.training.train_model`, each variant in a fresh process with one torch thread:

- `bucketed`: `train.loader.bucket_by_length: true` (the default): spans of 50 batches
  sorted by token count, each batch cut to its longest row;
- `padded`: `bucket_by_length: false`: shuffled batches of full 128-id rows.

Tokens/s = epochs x the training rows' real tokens (pads not counted) / wall seconds of
the training call (model built, every epoch with its validation). The validation loss
of both is recorded too: bucketing changes which rows share a batch, not what is learned.
Target: bucketed >= 1.5x padded. Writes results/text_throughput.json
(`python benchmarks/text_throughput.py [ROUNDS [FAMILY]]`).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._timing import env, write_result

EPOCHS, MAX_LENGTH = 2, 128
VARIANTS = ("bucketed", "padded")

PREPARE = r"""
import sys
from pathlib import Path
import numpy as np
from mlops.columns import Encoding
from mlops.params import TokenizerParams
from tests.corpus import package_texts
out = Path(sys.argv[1])
frame = package_texts().sample(frac=1.0, random_state=0).reset_index(drop=True)
classes = sorted(frame["topic"].unique())
y = frame["topic"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
params = TokenizerParams(vocab_size=8000, max_length=MAX_LENGTH)
cut = int(len(frame) * 0.85)
encoding = Encoding.fit(frame.iloc[:cut], {"text": "text"}, 16, 10000, params)
x, _ = encoding.transform(frame)
np.savez(out / "data.npz", x=x, y=y, cut=cut)
(out / "encoding.json").write_text(__import__("json").dumps(encoding.as_dict()))
""".replace("MAX_LENGTH", str(MAX_LENGTH))

WORKER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from mlops.columns import Encoding
from mlops.models import build_model, make_spec
from mlops.params import Params
from mlops.training import train_model
variant, family, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
data = np.load(folder / "data.npz")
x, y, cut = data["x"], data["y"], int(data["cut"])
encoding = Encoding.from_dict(json.loads((folder / "encoding.json").read_text()))
params = Params.model_validate({"train": {
    "epochs": EPOCHS, "early_stopping": {"patience": 0}, "threads": 1, "device": "cpu",
    "model": {"family": family}, "loader": {"bucket_by_length": variant == "bucketed"}}})
p = params.train
width = x.shape[1]
spec = make_spec(p.model, [0, 1, 2], [0.0] * width, [1.0] * width, [width],
                 features=["text"], encoding=encoding)
train, val = (x[:cut], y[:cut]), (x[cut:], y[cut:])
start = time.perf_counter()
result = train_model(lambda: build_model(spec), p, train, val)
seconds = time.perf_counter() - start
tokens = int((x[:cut, encoding.text_start:] != 0).sum())
print(json.dumps({"seconds": seconds, "tokens": tokens * EPOCHS, "rows": cut * EPOCHS,
                  "val_loss": min(h.metrics["val_loss"] for h in result.history)}))
""".replace("EPOCHS", str(EPOCHS))


def measure(variant: str, family: str, folder: Path) -> dict[str, float]:
    """One fresh process: seconds, real tokens and rows trained on."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER, variant, family, str(folder)],
        env=env(), capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _median(runs: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 4)


def main() -> None:
    """Alternate the variants' runs; report median tokens/s and their ratio."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    family = sys.argv[2] if len(sys.argv) > 2 else "transformer"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        subprocess.run([sys.executable, "-c", PREPARE, str(folder)], env=env(), check=True,
                       cwd=Path(__file__).parents[1])  # fmt: skip
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for i in range(rounds):
            for variant in VARIANTS[i % 2 :] + VARIANTS[: i % 2]:  # each one first in turn
                runs[variant].append(measure(variant, family, folder))
                print(variant, runs[variant][-1], flush=True)
    rate = {v: statistics.median(r["tokens"] / r["seconds"] for r in runs[v]) for v in VARIANTS}
    result = {
        "family": family,
        "epochs": EPOCHS,
        "max_length": MAX_LENGTH,
        "rounds": rounds,
        "train_rows": int(runs["bucketed"][0]["rows"] // EPOCHS),
        "tokens_per_row": round(runs["bucketed"][0]["tokens"] / runs["bucketed"][0]["rows"], 1),
        "bucketed_tokens_per_s": round(rate["bucketed"], 1),
        "padded_tokens_per_s": round(rate["padded"], 1),
        "ratio": round(rate["bucketed"] / rate["padded"], 3),
        "val_loss": {v: _median(runs[v], "val_loss") for v in VARIANTS},
    }
    print(result)
    print(f"-> {write_result('text_throughput', result)}")


if __name__ == "__main__":
    main()
