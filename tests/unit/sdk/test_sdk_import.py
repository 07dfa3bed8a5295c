"""The SDK's import surface: boto3 alone, nothing of the platform, a typed public API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import neurondock

HEAVY = ("flask", "sqlalchemy", "celery", "torch", "numpy", "neurondock_platform", "neurondock_workers")


def test_import_loads_no_platform_or_ml_packages() -> None:
    code = (
        "import json, sys; import neurondock; "
        f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_all_names_resolve_and_are_sorted() -> None:
    assert neurondock.__all__ == sorted(neurondock.__all__, key=str)
    for name in neurondock.__all__:
        assert hasattr(neurondock, name), name


def test_ships_py_typed_marker() -> None:
    assert (Path(neurondock.__file__).parent / "py.typed").is_file()
