"""The command line and model loading: output paths checked before the model loads, one line and a non-zero exit for
every failure (never a traceback), a Ctrl-C that exits 130 with the partial result said to be partial; local model
folders that do not exist, are files, or hold corrupt weights; a cache that cannot be written."""

import re
import shutil

import pytest

import attnlab
from attnlab.cli import main
from attnlab.errors import ModelNotAvailableError
from attnlab.models.embedded import embedded_checkpoint


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the CLI starts loading a model."""
    monkeypatch.setattr("attnlab.models.load_model", lambda *a, **k: pytest.fail("the model started loading"))


@pytest.mark.parametrize("flag,where,message", [
    ("--out", "missing/report.html", "--out: the folder .*missing does not exist; create it first"),
    ("--save", "missing/result.json", "--save: the folder .*missing does not exist"),
    ("--out", "a_file/report.html", "--out: the folder .*a_file does not exist"),
    ("--save", "folder", "--save must name a .json file"),
    ("--save", "folder.json", "--save .*folder.json is a folder"),
])
def test_output_paths_are_checked_before_the_model_loads(flag, where, message, tmp_path, capsys, no_model_load):
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "folder.json").mkdir()
    assert main(["patch", "ioi", flag, str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err


@pytest.mark.parametrize("argv,message", [
    (["--memory-budget-mb", "nan"], "positive, finite"),
    (["--memory-budget-mb", "-5"], "positive, finite"),
    (["--seed", "-1"], "'--seed' must be a non-negative integer"),
    (["--top", "0"], "--top must be at least 1"),
])
def test_bad_numbers_fail_in_one_line_before_the_model_loads(argv, message, capsys, no_model_load):
    assert main(["patch", "ioi", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_any_failure_is_one_line_and_exit_2(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("safetensors header is corrupt\nsecond line of detail")

    monkeypatch.setattr("attnlab.models.load_model", broken)
    assert main(["patch", "ioi", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == "attnlab: error: RuntimeError: safetensors header is corrupt second line of detail\n"


def test_prepare_with_a_cache_that_cannot_be_written_says_so_before_converting(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("ATTNLAB_CACHE", str(blocker / "cache"))
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained",
                        lambda *a, **k: pytest.fail("the conversion started"))
    assert main(["prepare"]) == 2
    err = capsys.readouterr().err
    assert "cannot be written" in err and "ATTNLAB_CACHE" in err and err.count("\n") == 1


@pytest.mark.integration
def test_ctrl_c_exits_130_and_says_the_result_is_partial(embedded_model, tmp_path, monkeypatch, capsys):
    real = embedded_model.run_many

    def interrupted(specs):
        for i, item in enumerate(real(specs)):
            if i == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(embedded_model, "run_many", interrupted)
    monkeypatch.setattr("attnlab.models.load_model", lambda *a, **k: embedded_model)
    saved = tmp_path / "partial.json"
    with pytest.warns(RuntimeWarning, match="interrupted after 3 of 30 passes"):
        code = main(["patch", "ioi", "--n-prompts", "2", "--quiet", "--save", str(saved)])
    out, err = capsys.readouterr()
    assert code == 130
    assert "INTERRUPTED: the result is partial: 5 of 32 forward passes ran" in out
    assert "forward passes (" not in out  # the plan is not printed as if it had run
    assert "saved result (partial)" in out and "interrupted: the result above is partial" in err
    result = attnlab.PatchingResult.load(saved)
    assert not result.complete and result.layers_done == [0, 1, 2]
    assert result.values[:3].isfinite().all() and result.values[3:].isnan().all()


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_a_path_that_is_not_a_folder_says_folder_not_found(backend, tmp_path):
    with pytest.raises(ModelNotAvailableError, match="model folder not found: .*does not exist"):
        attnlab.load_model(str(tmp_path / "no_such_checkpoint"), backend=backend)
    with pytest.raises(ModelNotAvailableError, match="model folder not found: .*does not exist"):
        attnlab.load_model("./no_such_checkpoint", backend=backend)
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"\0" * 16)
    with pytest.raises(ModelNotAvailableError, match="is a file, not a folder"):
        attnlab.load_model(str(file), backend=backend)


@pytest.fixture(scope="module")
def truncated_checkpoint(tmp_path_factory):
    """The embedded model's checkpoint with its weights cut off after 4 KiB, as by an interrupted copy."""
    source = embedded_checkpoint()
    folder = tmp_path_factory.mktemp("ckpt") / "smol"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    with open(source / "model.safetensors", "rb") as f:
        (folder / "model.safetensors").write_bytes(f.read(4096))
    return folder


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_corrupt_weights_name_the_file(backend, truncated_checkpoint):
    folder = truncated_checkpoint
    with pytest.raises(ModelNotAvailableError, match=r"could not read the weights of the local model .*smol.* "
                                                     r"\(model.safetensors\).*truncated or corrupt"):
        attnlab.load_model(str(folder), backend=backend)
