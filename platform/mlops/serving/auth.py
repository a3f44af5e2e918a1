"""`mlops serve --auth-token-env NAME`: a bearer token, read from the environment variable
NAME (never from the command line, where any user of the machine could read it in the
process list), checked on every request but `/health` and `/ready`.

The token is compared in constant time (sha256 of each side, then `hmac.compare_digest`,
so neither its content nor its length leaks through timing).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping

from mlops.errors import UserError

MIN_TOKEN = 32
# RFC 6750's b64token: what fits in a header without quoting.
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
HOW = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def read_token(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The token in environment variable `name`, or one `UserError` line saying why not."""
    value = (os.environ if environ is None else environ).get(name, "")
    where = f"--auth-token-env {name}"
    if not value:
        raise UserError(f"{where}: {name} is not set (make one with {HOW})")
    if len(value) < MIN_TOKEN:
        raise UserError(f"{where}: the token must have at least {MIN_TOKEN} characters ({HOW})")
    if not _TOKEN.fullmatch(value):
        raise UserError(f"{where}: the token may hold only letters, digits and -._~+/= ({HOW})")
    return value


class Guard:
    """Whether a request's `Authorization: Bearer …` header carries the token."""

    def __init__(self, token: str) -> None:
        self._digest = hashlib.sha256(token.encode()).digest()

    def allows(self, authorization: bytes | None) -> bool:
        """True for `Bearer <token>` (the scheme in any case), False for anything else."""
        if authorization is None:
            return False
        scheme, _, given = bytes(authorization).partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(hashlib.sha256(given.strip()).digest(), self._digest)
