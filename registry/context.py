"""What every registry operation needs: where the stores are, the registry's params,
the primary metric, and who is acting."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from mlops import tracking, workspace
from mlops.owners import current_actor
from mlops.params import RegistryParams, load_params
from mlops.settings import Settings
from registry.db.store import RegistryStore
from registry.stages import StagePolicy


@dataclass
class Context:
    """Settings, params and actor of one registry command."""

    settings: Settings
    params: RegistryParams = field(default_factory=RegistryParams)
    primary_metric: str = "accuracy"
    actor: str = field(default_factory=current_actor)

    @classmethod
    def load(cls, settings: Settings | None = None, params_file: Path | None = None) -> Context:
        """From the environment and the project's params.yaml (defaults if it is absent)."""

        settings = settings or Settings.from_env()
        path = params_file or settings.root / workspace.PARAMS
        if not path.is_file():
            return cls(settings)
        params = load_params(path)
        return cls(settings, params.registry, params.evaluate.primary_metric)

    @cached_property
    def store(self) -> RegistryStore:
        """The registry's tables in the platform database."""
        return RegistryStore(self.settings.database_url)

    @cached_property
    def policy(self) -> StagePolicy:
        """Stages and transitions from the params."""
        return StagePolicy(self.params)

    def connect_mlflow(self) -> None:
        """Point MLflow at the configured tracking store (imports mlflow)."""

        tracking.connect(self.settings)
