"""What the tracking store lets the current user do to a registered model, asked
before anything is written, and how a refusal by the store is recognised.

A tracking server started with `mlops server start --auth` runs MLflow's basic auth: a
stage change needs `update` on the registered model (to move an alias and set tags) and
`delete` when it removes an alias (the exclusive stage a version leaves). MLflow's auth
API answers for the caller itself (`users/current`, `users/permissions/get`, resolved
the way the server resolves a real request); an admin may do everything.

Without a server (SQLite or PostgreSQL reached directly) the store has no users: the
access is `open`. A server without auth has no `users/current` route (404): `open` too.
Anything else the server answers (a custom auth plugin, an error) is `unknown`: the
change is tried and undone if the store refuses it, and its intent is not taken as
proof that its actor was allowed (see `registry.promotion.repair`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlops.settings import redact

CURRENT_USER = "/api/2.0/mlflow/users/current"
USER_PERMISSION = "/api/3.0/mlflow/users/permissions/get"
# MLflow's permission names → (can update, can delete).
CAPABILITIES = {
    "MANAGE": (True, True),
    "EDIT": (True, False),
    "USE": (False, False),
    "READ": (False, False),
    "DENY": (False, False),
    "NO_PERMISSIONS": (False, False),
}
OPEN, UNKNOWN, UNAUTHENTICATED = "open", "unknown", "unauthenticated"


@dataclass(frozen=True)
class Access:
    """The current user's rights on one registered model in the tracking store."""

    store: str
    user: str | None
    permission: str

    @property
    def known(self) -> bool:
        """True when the store said what the user may do (or has no users at all)."""
        return self.permission != UNKNOWN

    def allows(self, delete: bool) -> bool:
        """May the user move an alias and set tags (and remove an alias, if `delete`)?
        `unknown` is allowed here: the writes are tried and undone when refused."""
        if self.permission in (OPEN, UNKNOWN):
            return True
        update, can_delete = CAPABILITIES.get(self.permission, (False, False))
        return update and (can_delete or not delete)

    def needs(self, delete: bool) -> str:
        """The permission a change needs, in MLflow's words."""
        return "MANAGE" if delete else "EDIT"

    def as_evidence(self) -> dict[str, Any]:
        """For the ledger and the intent: who the store saw, what it granted."""
        return {"store": self.store, "user": self.user, "permission": self.permission}


def is_refusal(exc: BaseException) -> bool:
    """True for the store refusing the caller (HTTP 401/403, PERMISSION_DENIED,
    UNAUTHENTICATED), as opposed to an outage or a missing resource."""
    code = str(getattr(exc, "error_code", ""))
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return True
    status = getattr(exc, "get_http_status_code", None)
    try:
        return callable(status) and status() in (401, 403)
    except Exception:  # an MlflowException without a REST code
        return False


def refusal_text(exc: BaseException) -> str:
    """The store's refusal in a few words (first line, no response body dump)."""
    code = str(getattr(exc, "error_code", "")) or "refused"
    first = str(exc).splitlines()[0] if str(exc) else ""
    if "failed with error code" in first:  # MLflow's REST wrapper: keep the endpoint
        first = first.split(" failed with", 1)[0].removeprefix("API request to endpoint ")
    return f"{code} ({first[:160]})" if first else code


def check(tracking_uri: str, model: str) -> Access:
    """Ask the tracking store what the current user may do to `model`."""
    store = redact(tracking_uri)
    if not tracking_uri.startswith(("http://", "https://")):
        return Access(store, None, OPEN)
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(tracking_uri)
    try:
        me = http_request(creds, CURRENT_USER, "GET", max_retries=2, timeout=30)
        if me.status_code == 404:
            return Access(store, None, OPEN)
        if me.status_code == 401:
            return Access(store, creds.username, UNAUTHENTICATED)
        if me.status_code != 200:
            return Access(store, creds.username, UNKNOWN)
        user = me.json()["user"]
        name = str(user["username"])
        if user.get("is_admin"):
            return Access(store, name, "MANAGE")
        params = {"username": name, "resource_type": "registered_model", "resource_id": model}
        found = http_request(creds, USER_PERMISSION, "GET", params=params, max_retries=2)
        if found.status_code != 200:
            return Access(store, name, UNKNOWN)
        permission = str(found.json().get("permission", UNKNOWN))
    except (MlflowException, OSError, ValueError, KeyError, TypeError):
        return Access(store, creds.username, UNKNOWN)  # the writes will tell
    return Access(store, name, permission if permission in CAPABILITIES else UNKNOWN)
