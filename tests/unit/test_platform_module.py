"""The source root `platform/` must never shadow the standard library's `platform`."""

from __future__ import annotations

import platform
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_platform_is_the_stdlib_module() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    module_file = Path(platform.__file__).resolve()
    assert module_file.is_relative_to(stdlib)
    assert not module_file.is_relative_to(REPO)
    assert callable(platform.python_version)


def test_no_init_in_platform_source_root() -> None:
    assert (REPO / "platform" / "mlops").is_dir()
    assert not (REPO / "platform" / "__init__.py").exists()


def test_platform_is_stdlib_with_repo_root_first_on_path() -> None:
    code = (
        "import sys; assert 'platform' not in sys.modules; "
        "sys.path[:0] = [{root!r}, {src!r}]; "
        "import platform, sysconfig, pathlib; "
        "print(pathlib.Path(platform.__file__).resolve()"
        ".is_relative_to(pathlib.Path(sysconfig.get_paths()['stdlib']).resolve()))"
    ).format(root=str(REPO), src=str(REPO / "platform"))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "True"
