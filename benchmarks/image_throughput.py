"""Image training throughput: the platform's streamed image path against a hand-written
ImageFolder + DataLoader loop, on the same files, model and transforms.

A folder of real PNG/JPEG/WebP files is drawn with Pillow (tests/shapes.py: circles,
squares, triangles, 64x64), decoded to 32x32 RGB. Each round trains the same CNN for the
same epochs, each variant in a fresh process with one torch thread and 2 DataLoader workers:

- `platform_stream`: what the train stage runs for a split above `stream_above_mb`: the
  split's Parquet row groups (the images' encoded bytes, as `ingest` stores them) decoded
  by the DataLoader workers (`mlops.streaming.Stream`), `mlops.training.train_model`.
- `handwritten`: the loop a PyTorch user writes with torchvision's `ImageFolder` (its
  default loader is Pillow; torchvision itself cannot be installed beside our CPU torch, see
  the README): a Dataset that opens each file, converts to RGB and resizes with Pillow's
  bilinear filter, a shuffling DataLoader, AdamW with fused kernels, the same validation
  pass each epoch.
- `platform_memory`: the path a split under the limit takes (decoded once, indexed in
  memory); reported, not a target.

Samples/s = epochs x training images / wall seconds of the training call (model built,
data opened, every epoch with its validation). Target: platform_stream >= 0.95x
handwritten. Writes results/image_throughput.json
(`python benchmarks/image_throughput.py [ROUNDS]`).
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
from tests.shapes import make_folder

PER_CLASS, EPOCHS, BATCH, SIZE = 500, 3, 64, 32
VARIANTS = ("platform_stream", "handwritten", "platform_memory")

PREPARE = r"""
import sys
from pathlib import Path
from mlops.data import infer_schema, write_parquet
from mlops.images import ImageFormat
from mlops.images.source import read_folder
folder, out = Path(sys.argv[1]), Path(sys.argv[2])
fmt = ImageFormat("image", (SIZE, SIZE), 3)
found = read_folder(folder, "image", folder)
frame = found.frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
val = frame.iloc[:96].reset_index(drop=True)
schema = infer_schema(frame, str(folder), "target", image=fmt)
write_parquet(frame, out / "train.parquet")
write_parquet(val, out / "val.parquet")
schema.save(out / "schema.json")
val[["_file", "target"]].to_csv(out / "val_files.csv", index=False)
""".replace("SIZE", str(SIZE))

WORKER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import torch
from mlops.data import Schema, features_and_target, read_parquet
from mlops.models import build_model, spec_for_data
from mlops.params import LoaderParams, TrainParams
from mlops.streaming import Stream
from mlops.training import train_model

variant, work, folder = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
EPOCHS, BATCH, SIZE = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
schema = Schema.load(work / "schema.json")
loader = LoaderParams(workers=2, prefetch=2, stream_above_mb=0.0, shuffle_buffer=1024)
params = TrainParams.model_validate({
    "epochs": EPOCHS, "batch_size": BATCH, "device": "cpu", "threads": 1,
    "schedule": {"name": "none"}, "early_stopping": {"patience": 0},
    "loader": loader.model_dump(), "model": {"family": "cnn"},
})
val = features_and_target(read_parquet(work / "val.parquet"), schema)
stream = Stream(work / "train.parquet", schema, loader, params.seed)
spec = spec_for_data(params.model, schema, stream)  # the same spec for every variant
n = len(stream)

if variant.startswith("platform"):
    start = time.perf_counter()
    train = stream
    if variant == "platform_memory":
        train = features_and_target(read_parquet(work / "train.parquet"), schema)
    train_model(lambda: build_model(spec), params, train, val)
    seconds = time.perf_counter() - start
else:
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torch.nn import functional as F

    class Folder(Dataset):  # torchvision.datasets.ImageFolder with its Pillow loader
        def __init__(self, root):
            classes = sorted(p.name for p in root.iterdir() if p.is_dir())
            self.samples = [(p, i) for i, c in enumerate(classes)
                            for p in sorted((root / c).iterdir())]
        def __len__(self):
            return len(self.samples)
        def __getitem__(self, index):
            path, label = self.samples[index]
            with open(path, "rb") as f:
                image = Image.open(f).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            x = torch.from_numpy(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy())
            return x.float().div_(255.0), label

    torch.manual_seed(params.seed)
    torch.set_num_threads(1)
    start = time.perf_counter()
    model = build_model(spec)
    data = DataLoader(Folder(folder), batch_size=BATCH, shuffle=True, num_workers=2,
                      prefetch_factor=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate,
                                  weight_decay=params.weight_decay, fused=True)
    xv, yv = torch.from_numpy(val[0]), torch.from_numpy(val[1])
    for epoch in range(EPOCHS):
        model.train()
        for xb, yb in data:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(xv)
            F.cross_entropy(out, yv), (out.argmax(1) == yv).float().mean()
    seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "samples_per_s": EPOCHS * n / seconds, "images": n}))
"""


def _run(variant: str, work: Path, folder: Path) -> dict[str, float]:
    cmd = [sys.executable, "-c", WORKER, variant, str(work), str(folder),
           str(EPOCHS), str(BATCH), str(SIZE)]  # fmt: skip
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(rounds: int = 3) -> None:
    with tempfile.TemporaryDirectory(prefix="mlops-bench-images-") as tmp:
        folder, work = Path(tmp) / "shapes", Path(tmp) / "work"
        work.mkdir()
        make_folder(folder, PER_CLASS, seed=0, size=64)
        subprocess.run([sys.executable, "-c", PREPARE, str(folder), str(work)], env=env(),
                       check=True)  # fmt: skip
        found: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for i in range(rounds):
            order = VARIANTS[i % 3 :] + VARIANTS[: i % 3]  # each variant goes first in turn
            for variant in order:
                result = _run(variant, work, folder)
                found[variant].append(result["samples_per_s"])
                print(f"round {i + 1}: {variant:16s} {result['samples_per_s']:8.0f} samples/s")
    medians = {v: round(statistics.median(s), 1) for v, s in found.items()}
    result = {
        "setup": {
            "images": 3 * PER_CLASS, "files": "PNG/JPEG/WebP 64x64 -> 32x32 RGB",
            "model": "cnn (params.yaml preset)", "epochs": EPOCHS, "batch_size": BATCH,
            "dataloader_workers": 2, "torch_threads": 1, "rounds": rounds,
        },
        "samples_per_s": medians,
        "runs": {v: [round(s, 1) for s in r] for v, r in found.items()},
        "ratios": {
            f"{v.removeprefix('platform_')}_over_handwritten": round(
                medians[v] / medians["handwritten"], 3
            )
            for v in ("platform_stream", "platform_memory")
        },
        "target": "stream_over_handwritten >= 0.95",
    }  # fmt: skip
    path = write_result("image_throughput", result)
    print(json.dumps(result["ratios"]), "->", path)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
