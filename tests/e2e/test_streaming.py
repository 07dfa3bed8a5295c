"""InvokeEndpointWithResponseStream with real boto3 against a live platform: timing, errors, ownership."""

from __future__ import annotations

import http.client
import itertools
import json
import time

import pytest
from botocore.exceptions import ClientError, EventStreamError

from tests.e2e.test_walking_skeleton import deploy

# A model that yields one JSON line per part, sleeping between parts; the request says how to fail.
STREAMER = """
import json
import os
import time


def model_fn(model_dir):
    return "streamer"


def input_fn(body, content_type):
    return json.loads(body)


def predict_fn(data, model):
    if data.get("fail") == "before":
        raise ValueError("refused before the first part")

    def parts():
        for i in range(data["parts"]):
            if i:
                time.sleep(data.get("gap", 0))
            if data.get("fail") == "after" and i == 2:
                raise RuntimeError("the vocoder broke")
            if data.get("fail") == "exit" and i == 1:
                os._exit(1)  # the replica process dies mid-stream
            yield {"part": i}

    return parts()


def output_fn(prediction, accept):
    return json.dumps(prediction).encode() + b"\\n", "application/jsonlines"
"""

GAP = 0.3


@pytest.fixture(scope="module")
def streamer(sm, s3, bucket, tmp_path_factory) -> str:
    return deploy(sm, s3, bucket, tmp_path_factory.mktemp("stream"), code={"inference.py": STREAMER})


def _stream(rt, name: str, request: dict, **kwargs):
    return rt.invoke_endpoint_with_response_stream(
        EndpointName=name, ContentType="application/json", Body=json.dumps(request), **kwargs
    )


def test_parts_arrive_as_the_model_produces_them(rt, streamer) -> None:
    sent = time.perf_counter()
    response = _stream(rt, streamer, {"parts": 4, "gap": GAP}, InferenceId="stream-1")
    assert response["ContentType"] == "application/jsonlines"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    arrivals, parts = [], []
    for event in response["Body"]:
        arrivals.append(time.perf_counter() - sent)
        parts.append(event["PayloadPart"]["Bytes"])
    assert parts == [b'{"part": %d}\n' % i for i in range(4)]
    # Three gaps of GAP seconds lie between the first part and the last: boto3 saw them one by one.
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(g > GAP * 0.6 for g in gaps), arrivals
    assert arrivals[0] < arrivals[-1] - 2.5 * GAP, arrivals

    # The ordinary InvokeEndpoint gets the same parts joined into one body.
    whole = rt.invoke_endpoint(EndpointName=streamer, ContentType="application/json", Body=json.dumps({"parts": 3}))
    assert whole["Body"].read() == b"".join(parts[:3])


def test_a_client_that_stops_reading_frees_the_replica_at_once(rt, streamer) -> None:
    # A 20 s stream whose reader leaves after one part: the model stops at its next part, so the one
    # replica (one execution at a time) takes the next request within a part's gap, not 20 s later.
    endless = _stream(rt, streamer, {"parts": 100, "gap": 0.2})
    events = iter(endless["Body"])
    assert next(events)["PayloadPart"]["Bytes"] == b'{"part": 0}\n'
    endless["Body"].close()
    sent = time.perf_counter()
    after = _stream(rt, streamer, {"parts": 1})
    assert [e["PayloadPart"]["Bytes"] for e in after["Body"]] == [b'{"part": 0}\n']
    assert time.perf_counter() - sent < 5.0


def test_a_failure_after_the_first_part_is_a_model_stream_error_mid_iteration(rt, streamer) -> None:
    events = iter(_stream(rt, streamer, {"parts": 4, "gap": 0.01, "fail": "after"})["Body"])
    assert next(events)["PayloadPart"]["Bytes"] == b'{"part": 0}\n'
    assert next(events)["PayloadPart"]["Bytes"] == b'{"part": 1}\n'
    with pytest.raises(EventStreamError) as broken:
        next(events)
    assert broken.value.response["Error"]["Code"] == "ModelStreamError"
    assert "the vocoder broke" in broken.value.response["Error"]["Message"]


def test_a_failure_before_the_first_part_is_an_ordinary_http_error(rt, streamer) -> None:
    with pytest.raises(ClientError) as refused:
        _stream(rt, streamer, {"parts": 2, "fail": "before"})
    error = refused.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424 and error["Error"]["Code"] == "ModelError"
    assert error["OriginalMessage"] == "ValueError: refused before the first part"
    with pytest.raises(ClientError) as unknown:
        _stream(rt, streamer, {"parts": 1}, TargetVariant="NoSuchVariant")
    assert unknown.value.response["Error"]["Code"] == "ValidationError"
    chosen = _stream(rt, streamer, {"parts": 1}, TargetVariant="AllTraffic")
    assert [e["PayloadPart"]["Bytes"] for e in chosen["Body"]] == [b'{"part": 0}\n']


def _admin_post(platform, path: str, body: dict) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", platform.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {platform.api_token()}", "Content-Type": "application/json"}
        conn.request("POST", path, body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        answer = json.loads(response.read())
        assert response.status == 201, answer
        return dict(answer)
    finally:
        conn.close()


def test_another_account_cannot_stream_from_this_accounts_endpoint(platform, streamer) -> None:
    keys = _admin_post(platform, "/api/v1/accounts", {"name": "stream-other-team"})["access_key"]
    other = platform.client("sagemaker-runtime", access_key=keys["access_key_id"], secret_key=keys["secret_access_key"])
    with pytest.raises(ClientError) as hidden:
        _stream(other, streamer, {"parts": 1})
    assert hidden.value.response["Error"]["Code"] == "ValidationError"
    assert f"Endpoint {streamer} of account {keys['account_id']} not found." in str(hidden.value)


def test_the_sdk_predictor_streams_parts_and_raises_model_stream_error(platform, streamer) -> None:
    import boto3

    import neurondock
    from tests.support.platform import ACCESS_KEY, REGION, SECRET_KEY

    boto_session = boto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
    session = neurondock.Session(boto_session=boto_session, endpoint_url=platform.url, progress=False)
    predictor = neurondock.Predictor(streamer, session, serializer=neurondock.JSONSerializer())
    assert list(predictor.predict_stream({"parts": 2})) == [b'{"part": 0}\n', b'{"part": 1}\n']
    assert predictor.last_response["ContentType"] == "application/jsonlines"
    parts = predictor.predict_stream({"parts": 4, "fail": "after"})
    assert next(parts) == b'{"part": 0}\n'
    with pytest.raises(neurondock.ModelStreamError) as broken:
        list(parts)
    assert broken.value.code == "ModelStreamError"
    with pytest.raises(neurondock.ModelError):
        predictor.predict_stream({"parts": 1, "fail": "before"})


@pytest.mark.slow
def test_torchscript_frames_stream_one_by_one_and_a_dying_replica_breaks_the_stream(
    platform, sm, rt, s3, bucket, tmp_path
) -> None:
    import re
    import warnings

    import torch

    class Frames(torch.nn.Module):
        """An acoustic model's shape in miniature: a tuple of frames."""

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return x, x * 2, x * 3

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.", DeprecationWarning)
        scripted = torch.jit.trace(Frames(), torch.zeros(1, 2))
    frames = deploy(sm, s3, bucket, tmp_path, scripted)
    response = rt.invoke_endpoint_with_response_stream(
        EndpointName=frames, ContentType="application/json", Body="[[1.0, 2.0]]", Accept="application/json"
    )
    assert [json.loads(e["PayloadPart"]["Bytes"]) for e in response["Body"]] == [
        [[1.0, 2.0]],
        [[2.0, 4.0]],
        [[3.0, 6.0]],
    ]
    # InvokeEndpoint still gets the tuple as one prediction.
    whole = rt.invoke_endpoint(EndpointName=frames, ContentType="application/json", Body="[[1.0, 2.0]]")
    assert json.loads(whole["Body"].read()) == [[[1.0, 2.0]], [[2.0, 4.0]], [[3.0, 6.0]]]

    _, _, text = platform.metrics()
    first = re.search(rf'ModelLatencyToFirstByte_count{{[^}}]*EndpointName="{frames}"[^}}]*}} (\d+)', text)
    assert first is not None and int(first[1]) == 1, text

    mortal = deploy(sm, s3, bucket, tmp_path, code={"inference.py": STREAMER})
    events = iter(_stream(rt, mortal, {"parts": 3, "fail": "exit"})["Body"])
    assert next(events)["PayloadPart"]["Bytes"] == b'{"part": 0}\n'
    with pytest.raises(EventStreamError) as broken:
        next(events)
    assert broken.value.response["Error"]["Code"] == "ModelStreamError"
    assert "closed before it finished" in broken.value.response["Error"]["Message"]
