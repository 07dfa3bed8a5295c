"""A compile child runs in the sandbox, and what it leaves behind cannot point the worker elsewhere (issue 11).

The child here is a stand-in for a compile input that took over the compiler (``child_argv`` swapped
for a script): it tries to read the platform's secrets and write the shared compile cache, then
hands back a result that names a file outside its work directory and a symbolic link to a secret —
the worker uploads whatever a result names to the job's output, so either would leak the file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from neurondock_platform.config import Settings
from neurondock_workers.compiler import CompileProcess, CompileRequest
from neurondock_workers.compiler.errors import CompilationError
from neurondock_workers.sandbox import for_settings

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

ATTACK = r"""
import json, os, sys
request_path, result_path, secret, cache, report = sys.argv[1:6]
out = {"uid": os.getuid()}
for path in (secret, "/etc/shadow"):
    try:
        out[path] = "READ " + open(path).read()
    except Exception as exc:
        out[path] = type(exc).__name__
try:
    os.makedirs(os.path.join(cache, "planted"))
    out["cache"] = "WROTE"
except Exception as exc:
    out["cache"] = type(exc).__name__
workdir = json.load(open(request_path))["request"]["workdir"]
os.symlink(secret, os.path.join(workdir, "artifact.tar.gz"))
open(os.path.join(workdir, "compile.log"), "w").write("log")
with open(report, "w") as f:
    json.dump(out, f)
result = {
    "target": "ml_inf1", "artifact_sha256": "0" * 64, "artifact_size": 1, "report": {}, "compile_seconds": 0.1,
    "cache_hit": False, "cache_key": "k" * 64,
    "artifact_path": os.path.join(workdir, "artifact.tar.gz"), "log_path": os.path.join(workdir, "compile.log"),
}
json.dump({"ok": True, "result": result}, open(result_path, "w"))
"""


class Hijacked(CompileProcess):
    """A compile whose child is the attacker's script."""

    def __init__(self, *args, secret: Path, cache: Path, report: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.secret, self.cache, self.report = secret, cache, report

    def child_argv(self, request_path: Path, result_path: Path) -> list[str]:
        return [
            sys.executable,
            "-c",
            ATTACK,
            str(request_path),
            str(result_path),
            str(self.secret),
            str(self.cache),
            str(self.report),
        ]


def test_a_compile_child_sees_only_its_input_and_work_directory(tmp_path):
    settings = Settings(data_dir=tmp_path / "data").resolved()
    sandbox = for_settings(settings)
    assert sandbox.enabled, sandbox.describe()
    secret = settings.data_dir / "credentials.json"
    secret.parent.mkdir(parents=True)
    secret.write_text('{"secret_access_key": "root-secret"}')
    cache = settings.data_dir / "cache" / "compile"
    cache.mkdir(parents=True)
    model = settings.data_dir / "compile" / "job-1-attempt-1" / "input" / "model.tar.gz"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"model")
    workdir = model.parent.parent / "compile"
    report = workdir / "report.json"
    request = CompileRequest(str(model), "[[1, 4]]", str(workdir), cache_dir=str(cache))
    process = Hijacked(request, sandbox=sandbox, secret=secret, cache=cache, report=report, max_runtime_s=60)

    with pytest.raises(CompilationError, match="outside its work directory"):
        process.start().wait()

    seen = json.loads(report.read_text())
    assert seen[str(secret)] == "FileNotFoundError", "the data directory is not there"
    assert not seen["/etc/shadow"].startswith("READ")
    assert seen["cache"] != "WROTE" and not (cache / "planted").exists(), "the shared compile cache is not there"
    if os.geteuid() == 0:
        assert seen["uid"] >= 2_000_000_000
    # What it left behind is only files and directories: the link to the secret is gone.
    assert not (workdir / "artifact.tar.gz").exists() and not (workdir / "artifact.tar.gz").is_symlink()
    assert not any(p.is_symlink() for p in workdir.rglob("*"))
