"""Where a server listens: a free port, and whether its bind address reaches beyond this
machine (for the warnings of `mlops serve`, `mlops server start`, `mlops ui` and
`mlops sweep dashboard` when they listen there without authentication)."""

from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback one (127.0.0.0/8, ::1, or
    `localhost`); False for a wildcard (`0.0.0.0`, `::`, empty), any other interface, or a
    name that does not resolve (a warning too many beats one too few)."""
    name = host.strip().strip("[]")
    if not name:
        return False
    if name.lower() == "localhost":
        return True
    try:
        return _loopback(name)
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    try:
        return bool(found) and all(_loopback(str(info[4][0])) for info in found)
    except ValueError:
        return False


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def open_ui_warning(what: str, host: str, port: int, reach: str) -> str | None:
    """The one warning line for a web UI without authentication that listens beyond
    loopback (`reach`: what anyone who reaches it can do), else None."""
    if is_loopback(host):
        return None
    return (
        f"{what} on {host}:{port} listens beyond this machine with no authentication: anyone "
        f"who reaches the port can {reach}; bind 127.0.0.1 (the default) and reach it "
        "through an SSH tunnel, or run `mlops server start --auth` for a team"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
