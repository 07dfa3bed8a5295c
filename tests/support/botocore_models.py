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

# The files of no one service: one botocore session already hands the same parsed copy to every client
# it makes (its endpoint resolver only ever adds the same keys to the endpoints data), so every
# session may share one. endpoints.json is the costly one: 16 ms to parse, 11 ms to unpickle, per client.
SHARED = ("endpoints", "partitions", "sdk-default-configuration", "_retry")


def install() -> None:
    """Make botocore's JSON file loader keep what it parsed from the packages' data directories."""
    import boto3
    import botocore
    from botocore import loaders

    roots = tuple(os.path.join(os.path.dirname(m.__file__ or ""), "data") + os.sep for m in (botocore, boto3))
    original = loaders.JSONFileLoader.load_file
    if getattr(original, "cached", False):
        return

    shared_names = {os.path.join(root, name) for root in roots for name in SHARED}

    @functools.cache
    def parsed(file_path: str) -> Any:
        return original(loaders.JSONFileLoader(), file_path)

    @functools.cache
    def pickled(file_path: str) -> bytes:
        return pickle.dumps(parsed(file_path), pickle.HIGHEST_PROTOCOL)

    def load_file(self: loaders.JSONFileLoader, file_path: str) -> Any:
        if file_path in shared_names:
            return parsed(file_path)
        if file_path.startswith(roots):
            # A fresh copy each time: botocore and moto change the service models they are given.
            return pickle.loads(pickled(file_path))
        return original(self, file_path)

    load_file.cached = True  # type: ignore[attr-defined]
    loaders.JSONFileLoader.load_file = load_file  # type: ignore[method-assign]
