"""One worker of `mlops sweep run`: `python -m mlops.tuning.worker --study NAME --total N
--parent RUN --threads T --seed S [--deadline EPOCH]`.

Joins a study created beforehand and runs trials until the study has N finished ones
in total, each a child of the sweep's run, with the sampler seed the sweep gave it.
Reads params.yaml of the project and the `MLOPS_*` settings. (People join a study with
`mlops sweep worker`.)
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from mlops import console, workspace
from mlops.errors import MlopsError
from mlops.params import load_params
from mlops.settings import Settings
from mlops.tuning.objective import STOP, Job, work


def _stop(_signum: int, _frame: FrameType | None) -> None:
    # Graceful: the trial stops at its next epoch (FAIL), no new trial starts.
    STOP.set()


def main(argv: list[str] | None = None) -> None:
    """Entry point; exit 0 when the study has its trials, 130 when interrupted."""
    parser = argparse.ArgumentParser(prog="python -m mlops.tuning.worker")
    parser.add_argument("--study", required=True)
    parser.add_argument("--total", type=int, required=True, help="finished trials in total")
    parser.add_argument("--parent", default=None, help="the sweep's MLflow run id")
    parser.add_argument("--threads", type=int, default=None, help="default: train.threads")
    parser.add_argument("--seed", type=int, default=None, help="the sampler's (tune.seed)")
    parser.add_argument("--deadline", type=float, default=None, help="epoch seconds")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    try:
        settings = Settings.from_env()
        params = load_params(settings.root / workspace.PARAMS)
        job = Job(settings, params, args.study, args.parent, args.threads, args.seed)
        work(job, args.total, args.deadline)
        if STOP.is_set():
            sys.exit(130)
    except MlopsError as exc:
        console.error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
