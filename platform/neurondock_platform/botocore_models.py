"""botocore's service models as this platform loads them: without their documentation strings.

A service model's prose is most of its size: SageMaker's service-2.json parses into ~11.6 MB of
Python objects, ~4.7 MB without it (docs/measured.md), and every process that validates requests or
builds an S3 client keeps its models for good. Nothing here reads the prose: botocore only renders
it into a client method's docstring when someone asks for one. The keys stay, with an empty string:
botocore indexes some of them (a client context parameter's ``documentation``). Endpoint rule sets
are left as they are.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

_OPENERS = ((".json", open), (".json.gz", gzip.open))


def _blank_documentation(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Only a string is prose: a member that happens to be called "documentation" is a dict.
    return {k: "" if k == "documentation" and isinstance(v, str) else v for k, v in pairs}


class UndocumentedFiles:
    """A botocore file loader (``exists``, ``load_file``) that blanks a service model's documentation."""

    def exists(self, file_path: str) -> bool:
        """Tell whether the model file exists, as ``.json`` or ``.json.gz``."""
        return any(os.path.isfile(file_path + ext) for ext, _ in _OPENERS)

    def load_file(self, file_path: str) -> Any:
        """Parse the file at ``file_path`` (without its extension), or return None when there is none."""
        hook = _blank_documentation if os.path.basename(file_path).startswith("service-") else None
        for ext, opener in _OPENERS:
            if os.path.isfile(file_path + ext):
                with opener(file_path + ext, "rb") as fp:
                    return json.loads(fp.read().decode("utf-8"), object_pairs_hook=hook)
        return None


def loader() -> Any:
    """A botocore loader of the installed models that parses them without documentation."""
    from botocore.loaders import Loader

    return Loader(file_loader=UndocumentedFiles())
