"""Bad inputs end as typed errors with Neo's wording: tarballs, model files, DataInputConfig, shapes."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import pytest
import torch

from neurondock_workers.compiler import (
    InputConfigurationError,
    ModelLoadError,
    ShapeMismatchError,
    compile_model,
)
from neurondock_workers.compiler._inputs import stage_input

EXACTLY_ONE = "ClientError: InputConfiguration: Exactly one .pt or .pth file is allowed for PyTorch model."


def _tar(path, add):
    with tarfile.open(path, "w:gz") as tar:
        add(tar)
    return path


def _file(tar, name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_two_model_files_use_neos_wording(zoo, tmp_path):
    cnn, config = zoo.cnn()
    with tarfile.open(cnn) as src:
        model = src.extractfile("model.pth").read()
    path = _tar(tmp_path / "two.tar.gz", lambda t: (_file(t, "model.pth", model), _file(t, "other.pt", model)))
    with pytest.raises(InputConfigurationError) as info:
        compile_model(path, config, workdir=tmp_path / "w")
    assert info.value.failure_reason == EXACTLY_ONE


def test_no_model_file_at_the_top(tmp_path):
    path = _tar(tmp_path / "nested.tar.gz", lambda t: _file(t, "sub/model.pth"))
    with pytest.raises(InputConfigurationError) as info:
        stage_input(path, tmp_path / "w")
    assert info.value.failure_reason == EXACTLY_ONE


@pytest.mark.parametrize("name", ["../evil.pth", "code/../../evil.py", "/etc/evil.pth"])
def test_paths_escaping_the_archive_are_refused(tmp_path, name):
    path = _tar(tmp_path / "evil.tar.gz", lambda t: (_file(t, "model.pth"), _file(t, name)))
    with pytest.raises(InputConfigurationError) as info:
        stage_input(path, tmp_path / "w")
    assert "is not allowed" in info.value.message
    assert not (tmp_path / "evil.pth").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_links_are_refused(tmp_path, kind):
    def add(tar):
        _file(tar, "model.pth")
        link = tarfile.TarInfo("code/link.py")
        link.type = kind
        link.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else "model.pth"
        tar.addfile(link)

    path = _tar(tmp_path / "link.tar.gz", add)
    with pytest.raises(InputConfigurationError) as info:
        stage_input(path, tmp_path / "w")
    assert "(link)" in info.value.message


def test_directory_with_a_symlink_is_refused(tmp_path):
    root = tmp_path / "model"
    root.mkdir()
    (root / "model.pth").write_bytes(b"x")
    os.symlink("/etc/passwd", root / "passwd")
    with pytest.raises(InputConfigurationError, match="link"):
        stage_input(root, tmp_path / "w")


def test_torch_save_pickle_is_not_torchscript(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(4, 2), path)
    with pytest.raises(ModelLoadError) as info:
        compile_model(path, [[1, 4]], workdir=tmp_path / "w")
    assert "torch.save() pickle" in info.value.message
    assert "torch.jit.trace" in info.value.message
    assert info.value.failure_reason.startswith("ClientError: InputConfiguration: Unable to load the PyTorch model")


def test_plain_pickle_is_not_torchscript(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelLoadError, match="legacy Python pickle"):
        compile_model(path, [[1, 4]], workdir=tmp_path / "w")


def test_shape_that_does_not_fit_the_model(zoo, tmp_path):
    path, _ = zoo.cnn()
    with pytest.raises(ShapeMismatchError) as info:
        compile_model(path, {"input0": [1, 4, 64, 64]}, workdir=tmp_path / "w")
    assert 'DataInputConfig {"input0":[1,4,64,64]} does not match the model' in info.value.message
    assert "channels" in info.value.message
    assert (tmp_path / "w" / "compile.log").read_text().splitlines()[-1].startswith("ERROR:Neuron:")


def test_wrong_number_of_inputs(zoo, tmp_path):
    path, _ = zoo.cnn()
    with pytest.raises(ShapeMismatchError, match=r"forward takes 1 input\(s\) \(x\) but DataInputConfig declares 2"):
        compile_model(path, [[1, 3, 64, 64], [1, 3, 64, 64]], workdir=tmp_path / "w")


def test_missing_input_is_an_input_configuration_error(tmp_path):
    with pytest.raises(InputConfigurationError, match="does not exist"):
        compile_model(tmp_path / "nope.tar.gz", [[1]], workdir=tmp_path / "w")


def test_unpacked_directory_and_dot_slash_names_are_accepted(zoo, tmp_path):
    path, config = zoo.linear_relu()
    with tarfile.open(path) as src:
        model = src.extractfile("model.pth").read()
    # `tar czf model.tar.gz .` stores members as ./model.pth
    dotted = _tar(tmp_path / "dotted.tar.gz", lambda t: (_file(t, "./model.pth", model), _file(t, "./code/x.py")))
    staged = stage_input(dotted, tmp_path / "w1")
    assert staged.model_file.name == "model.pth" and staged.code_dir is not None
    root = tmp_path / "dir"
    (root / "code").mkdir(parents=True)
    (root / "model.pth").write_bytes(model)
    (root / "code" / "inference.py").write_text("# handler\n")
    result = compile_model(root, config, "ml_c5", None, tmp_path / "w2", measure_budget_s=0.05)
    assert result.report["code_files"] == ["code/inference.py"]
    assert result.artifact_path.name == "dir-ml_c5.tar.gz"
