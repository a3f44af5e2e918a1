"""What every stage does around its own work: load params and settings, turn errors into
one line and an exit code (2 bad input, 1 failure, 130 interrupted)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from mlops import workspace
from mlops.errors import Interrupted, MlopsError, full_disk
from mlops.params import Params, load_params
from mlops.settings import Settings


@dataclass(frozen=True)
class StageContext:
    """Validated params and resolved settings for one stage."""

    name: str
    params: Params
    settings: Settings

    @property
    def experiment(self) -> str:
        """The MLflow experiment of this pipeline."""
        return self.params.pipeline.name


def run_stage(name: str, body: Callable[[StageContext], None]) -> None:
    """Run a stage body and exit with the platform's exit codes."""
    try:
        params = load_params(workspace.PARAMS)
        body(StageContext(name, params, Settings.from_env()))
    except MlopsError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, Interrupted):
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a full disk, however wrapped: one line, not a traceback
        line = full_disk(exc)
        if line is None:
            raise
        print(f"{name}: error: {line}", file=sys.stderr)
        sys.exit(1)
