"""Executing tutorial notebooks once per session, for the ``tutorial`` tier and for browser tests that open them.

A plain module whose fixtures ``tests/conftest.py`` imports, so that each is ONE session fixture and its notebook runs
at most once per session, whichever test asks for it first. (Importing a fixture into two test modules instead
defines it twice, and the notebook ran twice.) The notebook runs in a fresh
``python3`` kernel (the kernelspec of the interpreter running pytest, i.e. the project venv, so against the installed
attnlab) with a temporary copy of ``tutorials/`` as its working directory: nothing is written into the repository.

Executing tutorial 1 takes several minutes on two CPU cores (it runs four full patching sweeps on the embedded
model). pytest-timeout counts fixture setup against the test that first requests the fixture, so such a test needs a
``@pytest.mark.timeout(...)`` of at least :data:`TUTORIAL_TEST_TIMEOUT_S`.
"""

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

__all__ = ["CELL_TIMEOUT_S", "REPO", "TUTORIALS", "TUTORIAL_TEST_TIMEOUT_S", "assert_committed_without_outputs",
           "cell_stdout", "execute_tutorial", "executed_tutorial_01", "git_status", "new_files"]

#: the repository's tutorials folder
TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"

#: the repository's root
REPO = TUTORIALS.parent

#: time limit of one notebook cell, in seconds
CELL_TIMEOUT_S = 900

#: time limit for a test that executes a whole tutorial (the first to request an ``executed_tutorial_*`` fixture)
TUTORIAL_TEST_TIMEOUT_S = 2400


def git_status() -> set[str] | None:
    """The repository's ``git status --porcelain`` lines (untracked files one by one), or None outside a git
    checkout (e.g. an unpacked sdist)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                             text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.stdout.splitlines())


def new_files(folder: Path, before: set[Path]) -> list[str]:
    """Files under ``folder`` that are not in ``before`` (relative paths), ignoring Jupyter's checkpoints and Python's
    bytecode caches, which git ignores too."""
    skip = {".ipynb_checkpoints", "__pycache__"}
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p not in before and not skip & set(p.relative_to(folder).parts))


def execute_tutorial(name: str, tmp_dir: Path) -> Path:
    """Execute ``tutorials/<name>`` in a fresh ``python3`` kernel inside a copy of ``tutorials/`` under ``tmp_dir``.

    Args:
        name: the notebook's file name, e.g. ``"01_ioi_activation_patching.ipynb"``.
        tmp_dir: an empty temporary directory; receives ``tutorials/`` (the working copy the kernel runs in) and
            ``executed/<name>`` (the executed notebook, outputs included).

    Returns:
        The path of the executed notebook.

    Raises:
        pytest.fail.Exception: a cell raised (the partially executed notebook is still written, and its path is in
            the message); the notebook left a file in its working directory; the repository's ``git status`` gained
            an untracked file or a change under ``tutorials/``.
    """
    workdir = tmp_dir / "tutorials"
    shutil.copytree(TUTORIALS, workdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    copied = {p for p in workdir.rglob("*") if p.is_file()}
    status_before = git_status()
    nb = nbformat.read(workdir / name, as_version=4)
    out_dir = tmp_dir / "executed"
    out_dir.mkdir()
    out = out_dir / name
    client = NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        nbformat.write(nb, out)
        pytest.fail(f"tutorial {name} failed in a cell (partially executed notebook: {out}):\n{exc}", pytrace=False)
    nbformat.write(nb, out)
    left = new_files(workdir, copied)
    if left:
        pytest.fail(f"tutorial {name} wrote {left} into its folder; run in the repository, these would show as "
                    "untracked files: write to a temporary folder (tempfile.mkdtemp) instead", pytrace=False)
    status_after = git_status()
    if status_before is not None and status_after is not None:
        # untracked files anywhere, or any change under tutorials/ (edits elsewhere may go on beside a long run)
        changed = sorted(line for line in status_after - status_before
                         if line.startswith("??") or "tutorials/" in line)
        if changed:
            pytest.fail(f"running tutorial {name} changed `git status`: {changed}", pytrace=False)
    return out


@pytest.fixture(scope="session")
def executed_tutorial_01(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of ``tutorials/01_ioi_activation_patching.ipynb`` executed end to end (outputs included), in a tmp dir.

    Executed once per session; treat the file as read-only.
    """
    return execute_tutorial("01_ioi_activation_patching.ipynb", tmp_path_factory.mktemp("tutorial_01"))


def cell_stdout(cell) -> str:
    """Everything an executed code cell printed to stdout."""
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def assert_committed_without_outputs(path: Path) -> None:
    """The notebook at ``path`` is valid, uses the python3 kernel, and stores no outputs or execution counts."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    stored = [i for i, cell in enumerate(nb.cells)
              if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not stored, f"code cells {stored} of {path.name} store outputs or execution counts; clear them"
