"""Parse each of botocore's and boto3's bundled model files once per test run, not once per client.

Every ``boto3.client`` of a new session re-reads and re-parses its service's JSON model (the
SageMaker one is megabytes); the suite makes thousands of clients, so that parsing was a large
share of its time. The files are part of the installed packages and never change during a run.
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Any


def install() -> None:
    """Make botocore's JSON file loader keep what it parsed from the packages' data directories."""
    import boto3
    import botocore
    from botocore import loaders

    roots = tuple(os.path.join(os.path.dirname(m.__file__ or ""), "data") + os.sep for m in (botocore, boto3))
    original = loaders.JSONFileLoader.load_file
    if getattr(original, "cached", False):
        return

    @functools.cache
    def pickled(file_path: str) -> bytes:
        return pickle.dumps(original(loaders.JSONFileLoader(), file_path), pickle.HIGHEST_PROTOCOL)

    def load_file(self: loaders.JSONFileLoader, file_path: str) -> Any:
        if file_path.startswith(roots):
            # A fresh copy each time: botocore and moto change the dicts they are given.
            return pickle.loads(pickled(file_path))
        return original(self, file_path)

    load_file.cached = True  # type: ignore[attr-defined]
    loaders.JSONFileLoader.load_file = load_file  # type: ignore[method-assign]
