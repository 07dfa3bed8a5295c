"""CloudWatch as older clients speak it: botocore's own model, listing only the Query protocol."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import botocore


def write_query_model(root: Path) -> Path:
    """Write CloudWatch's model under ``root`` with ``query`` as its only protocol; returns ``root``.

    botocore picks AWS JSON 1.0 whenever the model lists it. Pointed at this copy (``AWS_DATA_PATH``,
    or the loader's search path), the same botocore serialises forms and parses XML, as botocore
    before 1.42.7 and the AWS CLI v1 built on it did.
    """
    source = Path(botocore.__file__).parent / "data" / "cloudwatch" / "2010-08-01" / "service-2.json.gz"
    model = json.loads(gzip.decompress(source.read_bytes()))
    model["metadata"]["protocol"] = "query"
    model["metadata"]["protocols"] = ["query"]
    target = root / "cloudwatch" / "2010-08-01"
    target.mkdir(parents=True, exist_ok=True)
    (target / "service-2.json").write_text(json.dumps(model))
    return root
