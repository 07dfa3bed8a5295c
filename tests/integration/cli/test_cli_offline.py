"""The CLI's pieces that need no server: connection resolution, packing, shapes, tables, imports."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile

import click
import pytest

from neurondock_platform.cli_commands import _client, _output, deploy


def test_the_cli_imports_neither_torch_nor_boto3_until_a_command_needs_them():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from neurondock_platform.cli import main\n"
        "assert CliRunner().invoke(main, ['endpoints', '--help']).exit_code == 0\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'boto3', 'botocore', 'sqlalchemy'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == []


def test_connection_precedence(tmp_path, monkeypatch):
    for name in (
        "AWS_ENDPOINT_URL_SAGEMAKER",
        "AWS_ENDPOINT_URL",
        "NEURONDOCK_PUBLIC_URL",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    conn = _client.resolve(None, None, None)
    assert (conn.url, conn.access_key_id, conn.region) == ("http://127.0.0.1:8780", "AKENV", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", "http://sm:1/")
    assert _client.resolve(None, None, "eu-west-1").url == "http://sm:1"
    assert _client.resolve("http://cli:2", None, None).url == "http://cli:2"
    (tmp_path / "credentials.json").write_text(json.dumps({"access_key_id": "AKFILE", "secret_access_key": "s"}))
    from_dir = _client.resolve(None, str(tmp_path), None)
    assert from_dir.access_key_id == "AKFILE" and from_dir.credentials_from.endswith("credentials.json")
    with pytest.raises(_client.AuthFailed):
        _client.resolve(None, str(tmp_path / "missing"), None)


def _torchscript_like() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("model/code/__torch__.py", "")
        archive.writestr("model/data.pkl", b"")
        archive.writestr("model/constants.pkl", b"")
    return buf.getvalue()


def test_pack_wraps_a_torchscript_file_and_its_code(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(_torchscript_like())
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text("def model_fn(d): ...\n")
    data = deploy.pack(model, code)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["code/inference.py", "model.pt"]
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(data)
    assert deploy.pack(archive, None) == data
    state_dict = tmp_path / "weights.pt"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("weights/data.pkl", b"")
    state_dict.write_bytes(buf.getvalue())
    with pytest.raises(_client.CliError, match="not TorchScript"):
        deploy.pack(state_dict, None)
    with pytest.raises(click.UsageError):
        deploy.pack(tmp_path / "code" / "inference.py", None)


def test_input_shapes():
    assert deploy.parse_shapes(("input0:1,3,224,224", "2,8")) == {"input0": [1, 3, 224, 224], "input1": [2, 8]}
    with pytest.raises(click.BadParameter):
        deploy.parse_shapes(("x:1,zero",))
    with pytest.raises(click.BadParameter):
        deploy.parse_shapes(("x:0",))


def test_tables_align_and_fit_the_width():
    text = _output.table(["name", "status"], [["a", None], ["a-much-longer-name-than-fits", True]], max_width=30)
    lines = text.splitlines()
    assert lines[0].startswith("NAME") and "STATUS" in lines[0]
    assert all(len(line) <= 30 for line in lines)
    assert "…" in lines[2] and lines[1].endswith("-")


def test_error_classes_carry_their_exit_codes():
    assert [
        c.exit_code
        for c in (_client.CliError, _client.NotFound, _client.AuthFailed, _client.Unreachable, _client.TimedOut)
    ] == [
        1,
        3,
        4,
        5,
        6,
    ]
