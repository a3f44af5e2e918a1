"""What an export is asked to do (`Request`) and what it measured (`Measured`, `Report`):
plain data shared by the export service and the conversion run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from registry.export import parity as export_parity
from registry.export.records import variant


@dataclass(frozen=True)
class Request:
    """What to export: format, quantization, pruning, and the accuracy an export may lose."""

    fmt: str = "onnx"
    quantize: str | None = None
    prune: float | None = None
    max_drop: float = export_parity.MAX_DROP

    @property
    def variant(self) -> str:
        """The export's name: `onnx`, `onnx-int8`, `torchscript-pruned50`, …"""
        return variant(self.fmt, self.quantize, self.prune)


@dataclass(frozen=True)
class Measured:
    """One row of the report: a model file and how it did on the test split."""

    label: str
    file: str
    size_bytes: int
    p50_ms: float
    metric: float


@dataclass(frozen=True)
class Report:
    """Everything one export measured, and where it went (empty `artifact` if refused)."""

    model: str
    version: int
    variant: str
    format: str
    quantize: str | None
    prune: float | None
    sparsity: float | None
    metric: str
    rows: int
    test_md5: str
    baseline: Measured
    exported: Measured
    sha256: str
    parity: export_parity.Parity
    passed: bool
    artifact: str = ""
    report: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the verdict of every check."""
        return asdict(self)
