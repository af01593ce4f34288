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
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

__all__ = ["CELL_TIMEOUT_S", "TUTORIALS", "TUTORIAL_TEST_TIMEOUT_S", "assert_committed_without_outputs", "cell_stdout",
           "execute_tutorial", "executed_tutorial_01"]

#: the repository's tutorials folder
TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"

#: time limit of one notebook cell, in seconds
CELL_TIMEOUT_S = 900

#: time limit for a test that executes a whole tutorial (the first to request an ``executed_tutorial_*`` fixture)
TUTORIAL_TEST_TIMEOUT_S = 2400


def execute_tutorial(name: str, tmp_dir: Path) -> Path:
    """Execute ``tutorials/<name>`` in a fresh ``python3`` kernel inside a copy of ``tutorials/`` under ``tmp_dir``.

    Args:
        name: the notebook's file name, e.g. ``"01_ioi_activation_patching.ipynb"``.
        tmp_dir: an empty temporary directory; receives ``tutorials/`` (the working copy the kernel runs in) and
            ``executed/<name>`` (the executed notebook, outputs included).

    Returns:
        The path of the executed notebook.

    Raises:
        pytest.fail.Exception: a cell raised; the partially executed notebook is still written, and its path is in
            the message.
    """
    workdir = tmp_dir / "tutorials"
    shutil.copytree(TUTORIALS, workdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
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
