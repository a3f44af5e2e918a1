"""The authorization function of `mlops server start --auth` (the `authorization_function`
of MLflow's basic-auth config): MLflow's own basic auth, then one rule MLflow cannot express.

MLflow lets any signed-in user, a READ-only one included, create an experiment or a
registered model of any name, and makes its creator the manager: a name the team means to
use (`digits`) can be taken ("squatted") before its owner registers it. MLflow's DENY
grants cannot stop that without also denying reads, and its create right (USE on a
workspace) exists only with workspaces on. So here, a user may create an experiment or
registered model (or rename one to a name) only when the users file grants them EDIT or
MANAGE on that name or on `*`; MLflow admins may create anything, and a file whose
`default_permission` is EDIT or MANAGE lets everyone create (it opens everything anyway).
MLflow's demo generator, which creates an experiment and prompts, is left to admins.

Runs inside the MLflow server process, which has flask and mlflow loaded; the rights come
from the JSON file named by `MLOPS_AUTH_CREATE_RIGHTS`, written at start (no file: only
admins create).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any

from flask import Response, request

RIGHTS_ENV = "MLOPS_AUTH_CREATE_RIGHTS"
FUNCTION = "mlops.server.gate:authenticate"
EXPERIMENT, MODEL, DEMO = "experiment", "registered model", "demo"
# (path suffix, what it creates, the JSON field that names it); MLflow's own validator table
# adds any other path it routes to the same handlers.
KNOWN = {
    ("/mlflow/experiments/create", "POST"): (EXPERIMENT, "name"),
    ("/mlflow/experiments/update", "POST"): (EXPERIMENT, "new_name"),
    ("/mlflow/registered-models/create", "POST"): (MODEL, "name"),
    ("/mlflow/registered-models/rename", "POST"): (MODEL, "new_name"),
    ("/mlflow/demo/generate", "POST"): (DEMO, ""),
}


@dataclass(frozen=True)
class Rights:
    """Who may create what: names per user and kind (`*`: any name)."""

    everyone: bool = False
    users: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rights:
        users = {
            str(user): {str(kind): frozenset(map(str, names)) for kind, names in kinds.items()}
            for user, kinds in dict(data.get("users") or {}).items()
        }
        return cls(bool(data.get("everyone")), users)

    def may_create(self, user: str, kind: str, name: str | None) -> bool:
        """Whether `user` (not an admin) may create `kind` named `name` (None: unknown)."""
        if self.everyone:
            return True
        if kind == DEMO:
            return False
        names = self.users.get(user, {}).get(kind, frozenset())
        return "*" in names or (name is not None and name in names)


def refusal(user: str, kind: str, name: str | None) -> str:
    """The one-line reason of a refused creation."""
    if kind == DEMO:
        return f"Permission denied: {user} may not generate MLflow's demo data (admins only)"
    what = f"{kind} {name!r}" if name else f"a {kind} without a name"
    return (
        f"Permission denied: {user} may not create {what}: the users file of `mlops server "
        f"start --auth` grants {user} no EDIT or MANAGE on that name"
    )


@functools.cache
def _rights() -> Rights:
    path = os.environ.get(RIGHTS_ENV, "")
    try:
        with open(path, encoding="utf-8") as handle:
            return Rights.from_json(json.load(handle))
    except (OSError, ValueError, TypeError, AttributeError):
        return Rights()  # fail closed: only admins create


@functools.cache
def _gated() -> dict[tuple[str, str], tuple[str, str]]:
    """(path, method) → (what it creates, the JSON field naming it), for every route."""
    from mlflow.server import auth

    table = {
        (f"{prefix}/{version}{suffix}", method): found
        for (suffix, method), found in KNOWN.items()
        for prefix in ("/api", "/ajax-api")
        for version in ("2.0", "3.0")
    }
    creates = {
        auth.validate_can_create_experiment: (EXPERIMENT, "name"),
        auth.validate_can_create_registered_model: (MODEL, "name"),
    }
    for (path, method), validator in auth.BEFORE_REQUEST_VALIDATORS.items():
        if validator in creates:
            table[path, method] = creates[validator]
    return table


def authenticate() -> Any:
    """MLflow's basic auth, then refuse a creation the users file does not grant (403)."""
    from mlflow.server import auth

    found = auth.authenticate_request_basic_auth()
    if isinstance(found, Response):
        return found
    gated = _gated().get((request.path, request.method))
    if gated is None:
        return found
    kind, key = gated
    user = str(found.username)
    if auth.store.get_user(user).is_admin:
        return found
    name: str | None = None
    if key:
        body = request.get_json(force=True, silent=True)
        value = body.get(key) if isinstance(body, dict) else None
        name = value if isinstance(value, str) and value else None
        if key == "new_name" and kind == EXPERIMENT and name is None and isinstance(body, dict):
            return found  # an update that renames nothing
    if _rights().may_create(user, kind, name):
        return found
    message = refusal(user, kind, name)
    return Response(
        json.dumps({"error_code": "PERMISSION_DENIED", "message": message}),
        status=403,
        mimetype="application/json",
    )
