"""What the `mlops registry` commands share: the context, checked names, the pending-change
warning of read commands, progress that starts at the first step, and the tracking
store's refusals as one line. Imports only the console at import time: the rest is
imported by the command that needs it (`mlops --help` stays fast)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from mlops import console

if TYPE_CHECKING:
    from registry.context import Context


def ctx(with_params: bool = False) -> Context:
    """The registry context (with the project's params.yaml when `with_params`)."""
    from mlops.settings import Settings
    from registry.context import Context

    return Context.load() if with_params else Context(Settings.from_env())


def name(model: str) -> str:
    """`model`, once it is a valid model name (one line, exit 2, if not)."""
    from registry.stages import check_model_name

    return check_model_name(model)


def warn_pending(ctx: Context, model: str | None) -> None:
    """One warning line when a change of `model` (or any) was left unfinished."""
    from registry.queries import pending, pending_warning

    found = pending(ctx, model)
    if found:
        console.warning(pending_warning(found))


@contextmanager
def progress() -> Iterator[Callable[[str], None]]:
    """`step(text)` for a long command: the status appears at the first step, so a
    command refused before any work prints its one error line alone."""
    with ExitStack() as stack:
        update: Callable[[str], None] | None = None

        def step(text: str) -> None:
            nonlocal update
            if update is None:
                update = stack.enter_context(console.status(text))
            else:
                update(text)

        yield step


@contextmanager
def store_refusals() -> Iterator[None]:
    """The tracking store refusing the user (401/403) is one line and exit 1."""
    try:
        yield
    except Exception as exc:
        from registry.stages import Refused
        from registry.store_access import is_refusal, refusal_text

        if not is_refusal(exc):
            raise
        raise Refused(f"the tracking store refused: {refusal_text(exc)}") from None
