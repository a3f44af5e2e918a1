"""Write the latest benchmark figures (benchmarks/results/*.json) into README.md,
between the `bench:start` and `bench:end` markers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _serving_rows(results: dict[str, Any]) -> list[str]:
    rows: list[str] = []
    if "serving_speed" in results:
        r = results["serving_speed"]
        base = r["servers"]["mlflow"]
        goal = (
            "≥ 2× the requests/s of `mlflow models serve`, p99 and peak RSS no higher "
            "(batch 1, one keep-alive client)"
        )
        cases = (
            ("mlops_onnx_exported", f"`mlops serve --backend onnx` (an exported file) {goal}"),
            ("mlops_onnx", f"`mlops serve --backend onnx` (converted at start) {goal}"),
            ("mlops_torch", "`mlops serve` with the torch backend, the same load (reported)"),
        )
        for server, label in cases:
            if server not in r["servers"]:
                continue
            c, q = r["servers"][server], r["ratios"][server]
            rows.append(
                f"| {label} | "
                f"{c['batch_1']['requests_per_s']:.0f} req/s, p99 {c['batch_1']['p99_ms']:.2f} "
                f"ms, {c['peak_rss_mb']:.0f} MB | {base['batch_1']['requests_per_s']:.0f} "
                f"req/s, p99 {base['batch_1']['p99_ms']:.2f} ms, {base['peak_rss_mb']:.0f} MB | "
                f"{q['throughput_over_mlflow_batch_1']}× req/s, "
                f"{q['p99_over_mlflow_batch_1']}× p99, {q['peak_rss_over_mlflow']}× RSS | "
                f"{r['measured_at']} |"
            )
    if "serving_flood" in results:
        rows.append(_flood_row(results["serving_flood"]))
    return rows


def _flood_row(r: dict[str, Any]) -> str:
    during, quiet = r["health_flooded"], r["health_quiet"]
    rate = sum(k["requests_per_s"] for k in r["flood"].values())
    return (
        f"| `mlops serve`: `/health` within 100 ms (p99) while {r['load']['flooders']} "
        f"clients send hostile bodies without pause | p99 {during['p99_ms']:.1f} ms, p50 "
        f"{during['p50_ms']:.1f} ms ({rate:.0f} hostile requests/s) | nobody flooding: p99 "
        f"{quiet['p99_ms']:.1f} ms, p50 {quiet['p50_ms']:.1f} ms | "
        f"{r['p99_flooded_over_quiet']}× p99 | {r['measured_at']} |"
    )


def _scaling_rows(c: dict[str, Any], measured_at: str) -> list[str]:
    """The sweep-scaling rows: distinct configurations and best value against wall time
    (older result files: trials per minute, which counted repeated trials too)."""
    rows = []
    if "distinct_per_minute_speedup" in c:
        n = len(c["runs"])
        w1 = sum(x["workers_1"]["distinct_per_minute"] for x in c["runs"]) / n
        w2 = sum(x["workers_2"]["distinct_per_minute"] for x in c["runs"]) / n
        rows.append(
            f"| sweep: 2 workers ≥ 1.7× the distinct configurations per minute of 1 "
            f"(same wall time, {c['budget_s']:.0f} s, {c['seeds']} seeds) | {w2:.1f} "
            f"distinct/min ({c['repeated_trials_2_workers']} repeated trials) | 1 worker "
            f"{w1:.1f} distinct/min | {c['distinct_per_minute_speedup']}× | {measured_at} |"
        )
        reached = [x["seconds_to_it"] for x in c["runs"] if x["seconds_to_it"]["workers_2"]]
        if reached:
            t1 = sum(x["workers_1"] for x in reached) / len(reached)
            t2 = sum(x["workers_2"] for x in reached) / len(reached)
            rows.append(
                f"| sweep: time to the best value 1 worker reached in the budget (reported) | "
                f"2 workers {t2:.0f} s (reached in {c['reached_by_2_workers']} seeds) | "
                f"1 worker {t1:.0f} s | {c['time_to_1_worker_best_ratio']}× | {measured_at} |"
            )
        return rows
    if "speedup_running" in c:
        rows.append(
            f"| sweep: 2 workers ≥ 1.7× the trials per minute of 1 while trials run "
            f"({c['trials']} trials) | {c['workers_2']['trials_per_minute_running']} "
            f"trials/min | 1 worker {c['workers_1']['trials_per_minute_running']} "
            f"trials/min | {c['speedup_running']}× | {measured_at} |"
        )
    rows.append(
        f"| sweep: the same, end to end (process start-up and final plots included) | "
        f"{c['workers_2']['trials_per_minute']} trials/min | "
        f"1 worker {c['workers_1']['trials_per_minute']} trials/min | "
        f"{c['speedup']}× | {measured_at} |"
    )
    return rows


def lines() -> list[str]:
    """One table row per measured figure."""
    results = {
        p.stem: json.loads(p.read_text()) for p in (ROOT / "benchmarks/results").glob("*.json")
    }
    rows = [
        "| goal | measured | baseline (same run) | ratio | measured at |",
        "|---|---|---|---|---|",
    ]
    if "noop_repro" in results:
        r = results["noop_repro"]
        rows.append(
            f"| `dvc repro` with nothing changed takes about a second | "
            f"{r['noop_repro']['median_s']:.2f} s median | "
            f"`dvc version` {r['dvc_startup']['median_s']:.2f} s; "
            f"full repro {r['full_repro_s']:.0f} s | {r['noop_over_dvc_startup']}× DVC start-up, "
            f"{r['noop_over_full_repro']:.1%} of a full run | {r['measured_at']} |"
        )
    if "cli_startup" in results:
        r = results["cli_startup"]
        rows.append(
            f"| `mlops --help` imports neither torch nor mlflow | "
            f"{r['mlops_help']['median_s']:.2f} s median | `import torch, mlflow` "
            f"{r['import_torch_mlflow']['median_s']:.2f} s; "
            f"bare Python {r['python_bare']['median_s']:.2f} s | "
            f"{r['help_over_heavy_imports']:.0%} of the heavy imports | {r['measured_at']} |"
        )
    if "train_overhead" in results:
        r = results["train_overhead"]
        for case, c in r["cases"].items():
            store = compiler = fused = ""
            if "time_ratio_vs_fused" in c:
                fused = f" ({c['time_ratio_vs_fused']}× the same loop with fused kernels)"
            if "store_open_mb" in c:
                store = f" (MLflow store +{c['store_open_mb']:.0f} MB)"
                compiler = f" (+{c['bare_compiler_s']:.2f} s importing torch's compiler, unclocked)"
            rows.append(
                f"| training job ≤ 1.05× time, ≤ 1.10× peak memory of a bare loop ({case}, "
                f"{c['epochs']} epochs) | {c['platform_s']:.2f} s, {c['platform_peak_mb']:.0f} MB"
                f"{store} | bare loop {c['bare_s']:.2f} s{compiler}, {c['bare_peak_mb']:.0f} MB | "
                f"{c['time_ratio']}× time{fused}, {c['memory_ratio']}× memory | "
                f"{c.get('measured_at', r['measured_at'])} |"
            )
    rows += _data_rows(results)
    if "registry_speed" in results:
        r = results["registry_speed"]
        for op, c in r["in_process"].items():
            rows.append(
                f"| registry `{op}` with {r['versions']} versions ≤ 2× the bare MLflow call | "
                f"{c['ours_s'] * 1000:.1f} ms median | bare MLflow {c['bare_mlflow_s'] * 1000:.1f}"
                f" ms | {c['ratio']}× | {r['measured_at']} |"
            )
        for op, c in r["commands"].items():
            rows.append(
                f"| `mlops registry {op}` as a command ≤ 0.2× `mlflow --help` | "
                f"{c['median_s']:.2f} s median | `mlflow --help` "
                f"{r['mlflow_help']['median_s']:.2f} s | {c['over_mlflow_help']}× | "
                f"{r['measured_at']} |"
            )
    if "sweep_speed" in results:
        r = results["sweep_speed"]
        if "pruning" in r:
            p = r["pruning"]
            n = len(p["seeds"])
            for name in [k for k in ("successive_halving", "median", "hyperband") if k in p]:
                rows.append(
                    f"| pruning ({name}): ≤ 0.5× the epochs, best within 0.5 points "
                    f"(30 trials × 20 epochs, {n} seeds) | {p[name]['epochs_ratio']}× epochs "
                    f"| no pruning | {p[name]['mean_best_delta_points'] + 0.0:+} points (mean) | "
                    f"{r['measured_at']} |"
                )
        if "scaling" in r:
            rows += _scaling_rows(r["scaling"], r["measured_at"])
        if "storage" in r:
            c = r["storage"]
            rows.append(
                f"| Optuna storage overhead per trial (reported) | SQLite (WAL) "
                f"{c['sqlite_ms_per_trial']} ms | in memory {c['in_memory_ms_per_trial']} ms | "
                f"+{c['overhead_ms_per_trial']} ms | {r['measured_at']} |"
            )
    rows += _serving_rows(results)
    if "export_size" in results:
        r = results["export_size"]
        for fmt, label in (("onnx", "ONNX"), ("torchscript", "TorchScript")):
            fp32, int8, q = r["variants"][fmt], r["variants"][f"{fmt}_int8"], r["ratios"][fmt]
            rows.append(
                f"| `mlops export --format {fmt} --quantize int8` against fp32 (reported) | "
                f"{int8['size_kb']} kB, p50 {int8['p50_ms']} ms, accuracy {int8['accuracy']} | "
                f"{label} fp32 {fp32['size_kb']} kB, p50 {fp32['p50_ms']} ms, accuracy "
                f"{fp32['accuracy']} | {q['size_int8_over_fp32']}× size, "
                f"{q['p50_int8_over_fp32']}× p50, {q['accuracy_int8_minus_fp32_points']:+} points "
                f"| {r['measured_at']} |"
            )
    return rows


def _data_rows(results: dict[str, Any]) -> list[str]:
    """Image training throughput and the memory of streamed splits."""
    rows: list[str] = []
    if "image_throughput" in results:
        r = results["image_throughput"]
        s, q = r["samples_per_s"], r["ratios"]
        rows.append(
            f"| image training ≥ 0.95× the samples/s of a hand-written ImageFolder + "
            f"DataLoader loop ({r['setup']['images']} PNG/JPEG/WebP files, CNN, 2 workers) | "
            f"streamed {s['platform_stream']:.0f} samples/s (in memory "
            f"{s['platform_memory']:.0f}) | hand-written {s['handwritten']:.0f} samples/s | "
            f"{q['stream_over_handwritten']}× (in memory {q['memory_over_handwritten']}×) | "
            f"{r['measured_at']} |"
        )
    if "stream_memory" in results:
        r = results["stream_memory"]
        jobs, q = r["jobs"], r["ratios"]
        rows.append(
            f"| peak memory of a training job on 10× the rows ≤ 1.3× (tabular, 2 DataLoader "
            f"workers) | 2M rows streamed: {jobs['2M']['peak_pss_mb']:.0f} MB | 200k rows in "
            f"memory: {jobs['200k']['peak_pss_mb']:.0f} MB | "
            f"{q['peak_memory_2M_over_200k']}× (200k streamed instead: "
            f"{q['throughput_200k_streamed_over_memory']}× the rows/s) | {r['measured_at']} |"
        )
    return rows + _text_rows(results) + _loop_rows(results)


def _loop_rows(results: dict[str, Any]) -> list[str]:
    """Batched serving, a shadow challenger and workers (the production loop)."""
    rows: list[str] = []
    if "serving_workers" in results:
        w = results["serving_workers"]
        rows.append(
            f"| `mlops serve --workers 2` ≥ 1.7× the requests/s of one worker at {w['clients']} "
            f"clients ({w['model']}, batch-1 requests; clients on the same {w['cores']} cores) | "
            f"{w['workers_2']['requests_per_s']:.0f} req/s, p99 {w['workers_2']['p99_ms']:.1f} ms"
            f" | 1 worker {w['workers_1']['requests_per_s']:.0f} req/s, p99 "
            f"{w['workers_1']['p99_ms']:.1f} ms | {w['ratio']}× req/s, {w['p99_ratio']}× p99 | "
            f"{w['measured_at']} |"
        )
    if "batched_serving" not in results:
        return rows
    r = results["batched_serving"]
    b, s = r["batching"], r["shadow"]
    return [
        *rows,
        f"| `mlops serve --batch-max 32` ≥ 2× the requests/s of unbatched serving at "
        f"{r['clients']} concurrent clients, p99 no worse ({r['model']}, batch-1 requests) | "
        f"{b['batched']['requests_per_s']:.0f} req/s, p99 {b['batched']['p99_ms']:.1f} ms | "
        f"unbatched {b['unbatched']['requests_per_s']:.0f} req/s, p99 "
        f"{b['unbatched']['p99_ms']:.1f} ms | {b['ratio']}× req/s, {b['p99_ratio']}× p99 | "
        f"{r['measured_at']} |",
        f"| `--shadow`: the primary's p50 and p99 within 10% of no shadow (one client, "
        f"{r['model']}, `--feedback` in both) | p50 {s['on']['p50_ms']:.2f} ms, p99 "
        f"{s['on']['p99_ms']:.2f} ms | p50 {s['off']['p50_ms']:.2f} ms, p99 "
        f"{s['off']['p99_ms']:.2f} ms | {s['p50_ratio']}× p50, {s['p99_ratio']}× p99 | "
        f"{r['measured_at']} |",
    ]


def _text_rows(results: dict[str, Any]) -> list[str]:
    """Text training with length bucketing, and serving a text model."""
    rows: list[str] = []
    if "text_throughput" in results:
        r = results["text_throughput"]
        rows.append(
            f"| text training with length bucketing ≥ 1.5× the tokens/s of batches padded to "
            f"max_length ({r['train_rows']} package descriptions, {r['tokens_per_row']} tokens "
            f"a row on average, max_length {r['max_length']}, {r['family']}) | "
            f"{r['bucketed_tokens_per_s']:.0f} tokens/s | padded {r['padded_tokens_per_s']:.0f} "
            f"tokens/s | {r['ratio']}× | {r['measured_at']} |"
        )
    if "text_serving" in results:
        r = results["text_serving"]
        for backend, b in r["backends"].items():
            rows.append(
                f"| `mlops serve --backend {backend}`: a text model ≥ 0.8× the requests/s of a "
                f"numeric model of the same network (batch 1, transformer over ≤ 64 tokens) | "
                f"{b['text_requests_per_s']:.0f} req/s | numeric {b['numeric_requests_per_s']:.0f}"
                f" req/s | {b['ratio']}× | {r['measured_at']} |"
            )
    return rows


def main() -> None:
    """Replace the figures block of the README."""
    readme = ROOT / "README.md"
    block = "<!-- bench:start -->\n" + "\n".join(lines()) + "\n<!-- bench:end -->"
    text = re.sub(
        r"<!-- bench:start -->.*<!-- bench:end -->", block, readme.read_text(), flags=re.S
    )
    readme.write_text(text)
    print("\n".join(lines()))


if __name__ == "__main__":
    main()
