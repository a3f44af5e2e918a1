"""`mlops serve MODEL@STAGE`: parse the options, print what is served, run the server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlops import console

Export = Annotated[
    str | None,
    typer.Option(
        metavar="VARIANT",
        help="With --backend onnx: the passing export to serve (onnx-int8, onnx-pruned50, "
        "…; default: the plain onnx export, else one converted at start).",
    ),
]
AuthTokenEnv = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="Require Authorization: Bearer TOKEN, the token read from environment "
        "variable NAME (32+ characters); /health and /ready stay open.",
    ),
]


def serve(
    target: Annotated[
        str, typer.Argument(help="MODEL@STAGE (follows the stage) or MODEL@VERSION (fixed).")
    ],
    host: Annotated[
        str, typer.Option(help="Interface to bind; beyond loopback, set a token too.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).", min=0, max=65535)] = 8000,
    backend: Annotated[str, typer.Option(help="torch, or onnx (ONNX Runtime).")] = "torch",
    poll: Annotated[
        float, typer.Option(help="Seconds between checks of the stage's holder (0: never).", min=0)
    ] = 5.0,
    log_inputs: Annotated[
        float,
        typer.Option(help="Fraction of requests whose rows and predictions go to the sink."),
    ] = 0.0,
    sink: Annotated[
        Path | None, typer.Option(help="SQLite sink (default: MLOPS_HOME/serving/MODEL.db).")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Most rows per request.", min=1)] = 1024,
    threads: Annotated[
        int, typer.Option(help="Intra-op threads of the model (torch or ONNX Runtime).", min=1)
    ] = 1,
    export: Export = None,
    auth_token_env: AuthTokenEnv = None,
    feedback: Annotated[
        bool,
        typer.Option(
            "--feedback",
            help="Record every answer in the sink so POST /feedback can join labels to it "
            "(live accuracy on /metrics, `mlops monitor performance`).",
        ),
    ] = False,
    live_window: Annotated[
        int, typer.Option(help="Labelled answers the live accuracy on /metrics covers.", min=1)
    ] = 1000,
    batch_max: Annotated[
        int,
        typer.Option(
            help="Coalesce concurrent requests into model calls of at most N rows (0: off).",
            min=0,
        ),
    ] = 0,
    batch_wait_ms: Annotated[
        float,
        typer.Option(
            help="With --batch-max: the most a request waits for others (only while others "
            "are arriving).",
            min=0,
            max=1000,
        ),
    ] = 2.0,
    shadow: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL@STAGE",
            help="A challenger that scores every request too, off the response path (its "
            "scores recorded beside the answers; what it cannot keep up with is dropped).",
        ),
    ] = None,
    canary: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL@STAGE:P%",
            help="A challenger that answers P% of the requests instead (e.g. digits@staging:10%).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Processes answering on the port, each with its own copy of the model.",
        ),
    ] = 1,
) -> None:
    """Serve a registered version over HTTP: /predict, /feedback, /health, /ready, /metadata,
    /metrics.

    A stage target is watched: when a promotion or rollback moves it, the new version is
    loaded and verified in the background and swapped in without dropping requests.
    """
    from mlops.serving import service
    from mlops.settings import Settings

    options = service.ServeOptions(
        target=target, host=host, port=port, backend=backend, poll_s=poll,
        log_inputs=log_inputs, sink=sink, max_batch=max_batch, threads=threads, export=export,
        auth_token_env=auth_token_env, feedback=feedback, live_window=live_window,
        shadow=shadow, canary=canary, batch_max=batch_max, batch_wait_ms=batch_wait_ms,
    )  # fmt: skip
    settings = Settings.from_env()
    found = service.resolve_target(settings, options)
    if workers > 1:
        _serve_workers(settings, options, found, workers)
        return
    with console.status(f"Loading {found.name} version {found.version.version} …"):
        prepared = service.prepare(settings, options, found)
    console.table("mlops serve", ["", "value"], _summary(prepared, options))
    exposed = service.exposure(prepared)
    if exposed is not None:
        console.warning(exposed)
    console.out.print(
        f"Serving on {prepared.url}  (POST /predict · GET /metadata /metrics · Ctrl-C to stop)",
        soft_wrap=True,
    )
    service.run(prepared)
    console.out.print("Server stopped")


def _serve_workers(settings: Any, options: Any, found: Any, workers: int) -> None:
    """`--workers N`: N processes on the port; this one supervises them."""
    import signal

    from mlops.serving import workers as pool_of

    with console.status(f"Starting {workers} workers, each loading {found.name} "
                        f"version {found.version.version} …"):  # fmt: skip
        pool = pool_of.start(settings, options, workers)
    received: list[int] = []
    previous = {s: signal.signal(s, lambda n, _f: received.append(n))
                for s in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    console.out.print(
        f"Serving {found.name}{found.ref} on {pool.url} with {workers} workers "
        "(POST /predict · GET /metadata /metrics · Ctrl-C to stop)",
        soft_wrap=True,
    )
    try:
        pool_of.supervise(pool, received)
    finally:
        pool_of.stop(pool)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    console.out.print("Server stopped")


def _summary(prepared: Any, options: Any) -> list[tuple[str, str]]:
    """What is served, how, and what watches it: the rows of the start-up table."""
    state = prepared.state
    served = state.current
    stage = f" ({state.stage})" if state.stage else ""
    built = served.built
    logged = f"{options.log_inputs:.0%} of requests" + (
        ", every answer for /feedback" if options.feedback else ""
    )
    return [
        ("model", f"{served.name} v{served.version}{stage}"),
        ("sha256", f"{served.sha256[:12]}… verified"),
        ("backend", f"{built.predictor.backend} ({built.source}"
                    + (f" {built.export})" if built.source == "exported" else ")")),
        ("swap", f"checks {state.stage} every {options.poll_s:g} s" if prepared.watcher else "off"),
        ("sink", f"{state.sink.path} ({logged})" if state.sink else "off"),
        ("auth", f"bearer token from {options.auth_token_env}" if prepared.token else "off"),
        ("challenger", _rival(state)),
        ("batching", f"up to {options.batch_max} rows a model call, waits ≤ "
                     f"{options.batch_wait_ms:g} ms" if options.batch_max else "off"),
    ]  # fmt: skip


def _rival(state: Any) -> str:
    rival = state.challenger
    if rival is None:
        return "off"
    share = (
        f" answers {state.canary.share:.0%} of requests"
        if state.canary
        else (" scores every request")
    )
    return f"{rival.role} {rival.current.name} v{rival.current.version} ({rival.target}):{share}"
