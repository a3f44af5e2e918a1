"""A real full disk for tests: a small tmpfs mounted in a user and mount namespace of our
own (`unshare`), so nothing outside sees it and it goes away with its holder process.
Commands run inside the namespace through `nsenter`; they see the tmpfs, the rest of the
machine as usual."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.project import clean_env

FILL = """
import os, sys
path, leave = sys.argv[1], int(sys.argv[2])
stat = os.statvfs(os.path.dirname(path))
size = stat.f_bavail * stat.f_frsize - leave
with open(path, "wb") as f:
    if size > 0:
        os.posix_fallocate(f.fileno(), 0, size)
"""
TABLES = """
import sqlite3, sys
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(" ".join(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")))
"""


class SmallDisk:
    """A tmpfs of `size` (e.g. "16m") at `where`, seen only by the commands of `run`."""

    def __init__(self, where: Path, size: str) -> None:
        self.where = where
        where.mkdir(parents=True, exist_ok=True)
        unshare = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]
        self.holder = subprocess.Popen([*unshare, "sleep", "infinity"])
        ours = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 30
        while not self._entered(ours):
            assert self.holder.poll() is None, "unshare failed (user namespaces disabled?)"
            assert time.monotonic() < deadline, "unshare did not start"
            time.sleep(0.01)
        done = self.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)])
        assert done.returncode == 0, done.stderr

    def _entered(self, ours: str) -> bool:
        try:
            theirs = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
            comm = Path(f"/proc/{self.holder.pid}/comm").read_text().strip()
        except OSError:
            return False
        return theirs != ours and comm == "sleep"

    def run(
        self, cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside the namespace (as a user's shell would, plus `env`)."""
        enter = ["nsenter", "-t", str(self.holder.pid), "-U", "-m", "--preserve-credentials"]
        # The folder as seen inside (--wd would keep a handle from outside, and renames
        # between it and absolute paths would cross mounts: EXDEV).
        enter.append(f"--wdns={cwd or Path.cwd()}")
        return subprocess.run(
            [*enter, *cmd], env={**clean_env(), **(env or {})}, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip

    def fill(self, leave_bytes: int) -> None:
        """Take all the free space but `leave_bytes`."""
        done = self.run([sys.executable, "-c", FILL, str(self.where / "filler"), str(leave_bytes)])
        assert done.returncode == 0, done.stderr

    def available(self) -> int:
        """Bytes free on the disk."""
        code = "import os, sys; s = os.statvfs(sys.argv[1]); print(s.f_bavail * s.f_frsize)"
        done = self.run([sys.executable, "-c", code, str(self.where)])
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    def free(self) -> None:
        """Give the space back."""
        done = self.run(["rm", "-f", str(self.where / "filler")])
        assert done.returncode == 0, done.stderr

    def clear(self) -> None:
        """Remove everything on the disk."""
        done = self.run(["sh", "-c", f'rm -rf "{self.where}"/* "{self.where}"/.[!.]*'])
        assert done.returncode == 0, done.stderr

    def tables(self, db: Path) -> list[str]:
        """The tables of a SQLite file on the disk ([] when it does not exist)."""
        done = self.run([sys.executable, "-c", TABLES, str(db)])
        return done.stdout.split() if done.returncode == 0 else []

    def close(self) -> None:
        """End the holder: the namespace and its tmpfs go away."""
        self.holder.kill()
        self.holder.wait()
        shutil.rmtree(self.where, ignore_errors=True)
