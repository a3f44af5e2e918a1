"""Prometheus metrics of one server, in their own registry (never the process-wide one).
Under `--workers N` (`PROMETHEUS_MULTIPROC_DIR` set) every worker's values are summed
(counters, histograms) or taken from the live workers (gauges) at each scrape.

Names (the Grafana dashboard in platform/deploy/ reads these):

- `mlops_requests_total{endpoint, status}`: HTTP requests answered
- `mlops_request_latency_seconds{endpoint}`: a histogram of server-side latency
- `mlops_batch_size`: a histogram of rows per `/predict` request that was answered
- `mlops_predictions_total{model, version, class}`: predicted classes (classification)
- `mlops_model_info{model, version, stage, backend, sha256, role}`: 1 for each version
  served (role `primary`, or the challenger's: `shadow`, `canary`)
- `mlops_model_version{model}`: the version number served
- `mlops_model_swaps_total{model}` · `mlops_model_swap_failures_total{model}`: hot swaps
- `mlops_sink_rows_total` · `mlops_sink_dropped_total`: rows sampled to the sink
- `mlops_unseen_categories_total{model, version, column}`: categorical values of a mixed
  table the served version never saw in training (for a text column: unknown pieces)
- `mlops_coalesced_requests` (a histogram) · `mlops_model_calls_total`: with `--batch-max`,
  requests answered by each model call, and the calls
- `mlops_shadow_scored_total` · `mlops_shadow_dropped_total`: rows the shadow challenger
  scored, and dropped (its queue full) rather than slow the answers
- `mlops_feedback_labels_total{model, version}`: labels received on `/feedback`
- `mlops_live_labelled{model, version}`: labelled answers in the sliding window
- `mlops_live_accuracy{model, version}` · `mlops_live_rmse{model, version}`: the served
  versions' live accuracy (classification) or RMSE (regression) over that window
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:
    from mlops.serving.model import Served

ENDPOINTS = ("/predict", "/feedback", "/health", "/ready", "/metadata", "/metrics")
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
NAMES = (
    "mlops_requests_total",
    "mlops_request_latency_seconds",
    "mlops_batch_size",
    "mlops_predictions_total",
    "mlops_model_info",
    "mlops_model_version",
    "mlops_model_swaps_total",
    "mlops_model_swap_failures_total",
    "mlops_sink_rows_total",
    "mlops_sink_dropped_total",
)


class ServingMetrics:
    """The server's collectors, with the children of the hot path resolved once."""

    def __init__(self, model: str) -> None:
        disable_created_metrics()  # no `_created` series: the server owns its process
        self.model = model
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mlops_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "mlops_request_latency_seconds", "Server-side latency", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch = Histogram(
            "mlops_batch_size", "Rows per answered /predict", buckets=BATCH_BUCKETS, registry=r
        )
        self.predictions = Counter(
            "mlops_predictions", "Predictions by class", ["model", "version", "class"], registry=r
        )
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.info = Gauge(
            "mlops_model_info", "The version served (value 1)",
            ["model", "version", "stage", "backend", "sha256", "role"], registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.version = Gauge(
            "mlops_model_version", "Version served", ["model"], registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.swaps = Counter(
            "mlops_model_swaps", "Hot swaps to a new version", ["model"], registry=r
        ).labels(model)
        self.swap_failures = Counter(
            "mlops_model_swap_failures", "New versions not loaded", ["model"], registry=r
        ).labels(model)
        self.sink_rows = Counter("mlops_sink_rows", "Rows written to the sink", registry=r)
        self.sink_dropped = Counter(
            "mlops_sink_dropped", "Sampled rows dropped (sink behind)", registry=r
        )
        self.unseen_categories = Counter(
            "mlops_unseen_categories",
            "Categorical values (text: pieces) the served version never saw in training",
            ["model", "version", "column"], registry=r,
        )  # fmt: skip
        self.coalesced_requests = Histogram(
            "mlops_coalesced_requests", "Requests answered by one model call (--batch-max)",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_calls = Counter(
            "mlops_model_calls", "Model calls made for coalesced requests", registry=r
        )
        self.shadow_scored = Counter(
            "mlops_shadow_scored", "Rows the shadow challenger scored", registry=r
        )
        self.shadow_dropped = Counter(
            "mlops_shadow_dropped", "Rows the shadow challenger dropped (queue full)", registry=r
        )
        self.feedback_labels = Counter(
            "mlops_feedback_labels", "Labels received on /feedback", ["model", "version"],
            registry=r,
        )  # fmt: skip
        self.live_labelled = Gauge(
            "mlops_live_labelled", "Labelled answers in the live window", ["model", "version"],
            registry=r, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.live_accuracy = Gauge(
            "mlops_live_accuracy", "Accuracy over the live window of labelled answers",
            ["model", "version"], registry=r, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.live_rmse = Gauge(
            "mlops_live_rmse", "RMSE over the live window of labelled answers",
            ["model", "version"], registry=r, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self._status: dict[tuple[str, int], Any] = {}
        self._latency = {e: self.latency.labels(e) for e in (*ENDPOINTS, "other")}
        self._classes: dict[int, list[Any]] = {}
        self._info_labels: dict[str, tuple[str, ...]] = {}

    def endpoint(self, path: str) -> str:
        """The endpoint label of a path (unknown paths share one label)."""
        return path if path in self._latency else "other"

    def answered(self, endpoint: str, status: int, seconds: float) -> None:
        """Count a request and observe its latency."""
        child = self._status.get((endpoint, status))
        if child is None:
            child = self._status[endpoint, status] = self.requests.labels(endpoint, str(status))
        child.inc()
        self._latency[endpoint].observe(seconds)

    def predicted(self, served: Served, rows: int, index: np.ndarray) -> None:
        """Observe a batch and count its predicted classes under the served version."""

        self.batch.observe(rows)
        if not served.classification:
            return
        children = self._classes.get(served.version)
        if children is None:
            children = self._classes[served.version] = [
                self.predictions.labels(self.model, str(served.version), str(c))
                for c in served.spec.classes
            ]
        if rows == 1:
            children[int(index[0])].inc()
            return
        counts = np.bincount(index, minlength=len(children))
        for i in np.flatnonzero(counts):
            children[i].inc(float(counts[i]))

    def unseen(self, served: Served, counts: dict[str, int]) -> None:
        """Count a batch's categories unseen in training, by column."""
        for column, n in counts.items():
            if n:
                self.unseen_categories.labels(self.model, str(served.version), column).inc(n)

    def coalesced(self, requests: int, rows: int) -> None:
        """Count one coalesced model call and the requests it answers."""
        del rows
        self.model_calls.inc()
        self.coalesced_requests.observe(requests)

    def live(self, model: str, version: int, task: str, labelled: int, value: float) -> None:
        """Set a version's live window: how many labelled answers, and their accuracy or
        RMSE."""
        labels = (model, str(version))
        self.live_labelled.labels(*labels).set(labelled)
        gauge = self.live_rmse if task == "regression" else self.live_accuracy
        gauge.labels(*labels).set(value)

    def serving(self, served: Served, stage: str | None, role: str = "primary") -> None:
        """Label the version served in `role` (the previous one's info series is removed);
        `mlops_model_version` is the primary's."""
        labels = (self.model, str(served.version), stage or "", served.built.predictor.backend,
                  served.sha256, role)  # fmt: skip
        previous = self._info_labels.get(role)
        if previous is not None and previous != labels:
            if self.multiprocess:  # its value stays in this worker's file: 0, not served
                self.info.labels(*previous).set(0)
            else:
                self.info.remove(*previous)
        self.info.labels(*labels).set(1)
        self._info_labels[role] = labels
        if role == "primary":
            self.version.labels(self.model).set(served.version)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""

        if not self.multiprocess:
            return generate_latest(self.registry)
        every = CollectorRegistry()
        multiprocess.MultiProcessCollector(every)
        return generate_latest(every)
