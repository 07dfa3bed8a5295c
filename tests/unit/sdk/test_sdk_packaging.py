"""Packaging: SageMaker-layout model.tar.gz from a torch module or from a folder."""

from __future__ import annotations

import logging
import tarfile
import warnings
from pathlib import Path

import pytest
import torch

from neurondock import ConfigurationError, Session, package_folder, package_module
from neurondock.packaging import add_code, input_shape_of

from .conftest import ACCOUNT, REGION, make_model_tar, tar_members


class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.dropout(self.linear(x)))


def _load(path: Path, tmp_path: Path, member: str = "model.pt") -> torch.jit.ScriptModule:
    with tarfile.open(path) as tar:
        tar.extract(member, tmp_path / "x", filter="data")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.\w+` is deprecated", DeprecationWarning)
        return torch.jit.load(str(tmp_path / "x" / member))


def test_package_traced_module(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _TinyNet()
    example = torch.randn(2, 4)
    package = package_module(net, example, tmp_path / "out" / "model.tar.gz", requirements=["numpy"])
    assert package.members == ("code/requirements.txt", "model.pt")
    assert package.input_shape == {"input0": [2, 4]}
    assert package.model_data == str(tmp_path / "out" / "model.tar.gz")
    assert not net.training  # Neo and the handler expect an eval-mode graph
    loaded = _load(package.path, tmp_path)
    with torch.no_grad():
        assert torch.allclose(loaded(example), net(example))


def test_package_scripted_module_with_handler(tmp_path: Path) -> None:
    handler = tmp_path / "inference.py"
    handler.write_text("def model_fn(model_dir):\n    pass\n")
    net = _TinyNet()
    package = package_module(
        net, method="script", entry_point=handler, model_filename="net.pt", output_path=tmp_path / "s.tar.gz"
    )
    assert set(package.members) == {"net.pt", "code/inference.py"}
    assert package.input_shape is None
    assert isinstance(_load(package.path, tmp_path, "net.pt"), torch.jit.ScriptModule)


def test_package_existing_script_module_and_tuple_inputs(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        scripted = torch.jit.script(_TinyNet().eval())
    package = package_module(scripted, (torch.zeros(1, 4),), tmp_path / "m.tar.gz")
    assert package.members == ("model.pt",)
    assert input_shape_of((torch.zeros(1, 3, 8, 8), torch.zeros(1, 5))) == {
        "input0": [1, 3, 8, 8],
        "input1": [1, 5],
    }


def test_package_module_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="example_inputs"):
        package_module(_TinyNet())
    with pytest.raises(ConfigurationError, match=r"nn\.Module"):
        package_module(object(), torch.zeros(1))
    with pytest.raises(ConfigurationError, match="method"):
        package_module(_TinyNet(), torch.zeros(1, 4), method="export")
    with pytest.raises(ConfigurationError, match="entry_point not found"):
        package_module(_TinyNet(), torch.zeros(1, 4), entry_point=tmp_path / "missing.py")


def test_package_folder_and_upload(session: Session, tmp_path: Path) -> None:
    folder = tmp_path / "artifact"
    (folder / "code" / "lib").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights")
    (folder / "code" / "inference.py").write_text("")
    (folder / "code" / "lib" / "util.py").write_text("")
    (folder / "code" / "__pycache__").mkdir()
    (folder / "code" / "__pycache__" / "x.pyc").write_bytes(b"")
    package = package_folder(folder, tmp_path / "model.tar.gz", upload=True, session=session, key_prefix="resnet")
    assert package.members == ("code/inference.py", "code/lib/util.py", "model.pt")
    assert package.s3_uri == f"s3://sagemaker-{REGION}-{ACCOUNT}/resnet/model.tar.gz"
    assert package.model_data == package.s3_uri
    body = session.s3_client.get_object(Bucket=f"sagemaker-{REGION}-{ACCOUNT}", Key="resnet/model.tar.gz")["Body"]
    assert set(tar_members(body.read())) == set(package.members)


def test_package_folder_adds_source_dir(tmp_path: Path) -> None:
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "model.pth").write_bytes(b"w")
    src = tmp_path / "src"
    src.mkdir()
    (src / "serve.py").write_text("")
    (src / "helpers.py").write_text("")
    package = package_folder(folder, tmp_path / "p.tar.gz", entry_point="serve.py", source_dir=src)
    assert package.members == ("code/helpers.py", "code/serve.py", "model.pth")
    with pytest.raises(ConfigurationError, match="not found in source_dir"):
        package_folder(folder, tmp_path / "q.tar.gz", entry_point="other.py", source_dir=src)


def test_package_folder_checks_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigurationError, match="Not a directory"):
        package_folder(tmp_path / "missing")
    empty = tmp_path / "empty"
    (empty / "code").mkdir(parents=True)
    with pytest.raises(ConfigurationError, match="no model file"):
        package_folder(empty)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "model.pt").write_bytes(b"w")
    (flat / "inference.py").write_text("")
    with caplog.at_level(logging.WARNING):
        package_folder(flat, tmp_path / "flat.tar.gz")
    assert "handlers go in code/" in caplog.text


def test_add_code_repacks(tmp_path: Path) -> None:
    source = make_model_tar(tmp_path / "in.tar.gz", {"model.pt": b"w"})
    handler = tmp_path / "inference.py"
    handler.write_text("x = 1\n")
    package = add_code(source, tmp_path / "out.tar.gz", entry_point=handler)
    assert package.members == ("code/inference.py", "model.pt")
    assert tar_members(package.path.read_bytes())["code/inference.py"] == b"x = 1\n"
