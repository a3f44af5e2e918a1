"""Every `dvc.yaml` stage depends on all the first-party code it runs, so editing any of
it makes `dvc repro` re-run the stage instead of calling a stale output up to date."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.unit.stage_imports import missing_deps, stage_files

REPO = Path(__file__).resolve().parents[2]


def test_every_stage_depends_on_the_code_it_runs() -> None:
    missing = missing_deps(REPO)
    lines = [f"stage {stage}: add to deps: {', '.join(files)}" for stage, files in missing.items()]
    assert not missing, "dvc.yaml misses code deps:\n" + "\n".join(lines)


def test_a_module_taken_out_of_a_stage_is_named(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "dvc.yaml").read_text())
    deps = config["stages"]["train"]["deps"]
    deps.remove("platform/mlops/data.py")
    edited = tmp_path / "dvc.yaml"
    edited.write_text(yaml.safe_dump(config, sort_keys=False))
    assert missing_deps(REPO, edited) == {"train": ["platform/mlops/data.py"]}


def test_a_folder_dep_covers_its_files(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "dvc.yaml").read_text())
    deps = config["stages"]["register"]["deps"]
    config["stages"]["register"]["deps"] = [d for d in deps if not d.startswith("registry/")]
    edited = tmp_path / "dvc.yaml"
    edited.write_text(yaml.safe_dump(config, sort_keys=False))
    lacking = missing_deps(REPO, edited)["register"]
    assert lacking and all(f.startswith("registry/") for f in lacking)
    config["stages"]["register"]["deps"].append("registry")
    edited.write_text(yaml.safe_dump(config, sort_keys=False))
    assert missing_deps(REPO, edited) == {}


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _runs(root: Path, files: dict[str, str]) -> set[str]:
    """What `pipelines.stage` runs in a tree of `files` (paths relative to `root`)."""
    _tree(root, files)
    return {str(p.relative_to(root)) for p in stage_files(root, "pipelines.stage")}


def test_lazy_relative_and_package_imports_are_followed(tmp_path: Path) -> None:
    """A stage runs what its module imports inside functions, through relative imports and
    `from package import submodule`, and every package's `__init__.py` on the way."""
    found = _runs(
        tmp_path,
        {
            "pipelines/__init__.py": "",
            "pipelines/stage.py": "def main():\n    from mlops.sub import helper\n",
            "platform/mlops/__init__.py": "",
            "platform/mlops/sub/__init__.py": "",
            "platform/mlops/sub/helper.py": "from . import sibling\nfrom ..core import x\n",
            "platform/mlops/sub/sibling.py": "import json\n",
            "platform/mlops/core.py": "x = 1\n",
            "platform/mlops/unused.py": "",
            "registry/__init__.py": "",
        },
    )
    assert found == {
        "pipelines/__init__.py",
        "pipelines/stage.py",
        "platform/mlops/__init__.py",
        "platform/mlops/sub/__init__.py",
        "platform/mlops/sub/helper.py",
        "platform/mlops/sub/sibling.py",
        "platform/mlops/core.py",
    }


def test_a_module_started_as_a_process_is_followed(tmp_path: Path) -> None:
    """`mlops sweep run` starts its workers as `python -m mlops sweep worker`: the code
    they run is the stage's code too (a package runs its `__main__.py`)."""
    found = _runs(
        tmp_path,
        {
            "pipelines/__init__.py": "",
            "pipelines/stage.py": (
                "import sys\ndef spawn():\n    return [sys.executable, '-m', 'mlops', 'x']\n"
            ),
            "platform/mlops/__init__.py": "",
            "platform/mlops/__main__.py": "from mlops import child\n",
            "platform/mlops/child.py": "",
            "platform/mlops/unused.py": "",
        },
    )
    assert found == {
        "pipelines/__init__.py",
        "pipelines/stage.py",
        "platform/mlops/__init__.py",
        "platform/mlops/__main__.py",
        "platform/mlops/child.py",
    }
