"""The import rules of docs/architecture.md, checked in fresh interpreters and by import-linter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_sdk_loads_no_platform_dependencies():
    loaded = _loaded_after("import neurondock")
    assert not loaded & {
        "flask",
        "sqlalchemy",
        "celery",
        "torch",
        "neurondock_platform",
        "neurondock_workers",
    }


def test_platform_never_loads_torch_or_workers():
    loaded = _loaded_after("import neurondock_platform.server, neurondock_platform.cli, neurondock_platform.app")
    assert "torch" not in loaded
    assert "neurondock_workers" not in loaded


def test_api_and_worker_start_without_boto3_or_torch():
    # boto3 costs each process ~10 MB it keeps; they build S3 clients only when a request or job needs one.
    loaded = _loaded_after("import neurondock_platform.server, neurondock_workers.tasks, neurondock_workers.cli")
    assert not loaded & {"boto3", "s3transfer", "torch", "numpy"}


def test_source_roots_hold_no_python_files():
    for root in ("platform", "sdk", "workers"):
        assert not list((ROOT / root).glob("*.py")), f"{root}/ must not hold .py files (it would shadow stdlib)"
    assert not list(ROOT.glob("tests/**/platform")), "no test directory may be named 'platform'"


def test_stdlib_platform_is_not_shadowed():
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.strip()


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
