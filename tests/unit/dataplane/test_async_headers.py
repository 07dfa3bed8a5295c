"""InvokeEndpointAsync's headers checked as botocore's sagemaker-runtime model bounds them."""

from __future__ import annotations

import pytest

from neurondock_platform.dataplane.async_invocations import matches, parse
from neurondock_platform.errors import RuntimeValidationError


def test_defaults_and_inline_body():
    request = parse({"x-amzn-sagemaker-content-type": "text/csv"}, b"1,2,3")
    assert (request.body, request.input_location, request.content_type) == (b"1,2,3", None, "text/csv")
    assert (request.ttl_seconds, request.timeout_seconds) == (21600, 900)


def test_input_location_and_every_member():
    request = parse(
        {
            "x-amzn-sagemaker-inputlocation": "s3://in/x.json",
            "x-amzn-sagemaker-accept": "application/json",
            "x-amzn-sagemaker-custom-attributes": "trace=1",
            "x-amzn-sagemaker-inference-id": "id 1",
            "x-amzn-sagemaker-s3outputpathextension": "run/7",
            "x-amzn-sagemaker-filename": "result.json",
            "x-amzn-sagemaker-requestttlseconds": "60",
            "x-amzn-sagemaker-invocationtimeoutseconds": "3600",
        },
        b"",
    )
    assert request.input_location == "s3://in/x.json" and request.body is None
    assert (request.output_path_extension, request.filename, request.inference_id) == ("run/7", "result.json", "id 1")
    assert (request.ttl_seconds, request.timeout_seconds) == (60, 3600)


@pytest.mark.parametrize(
    ("headers", "body", "words"),
    [
        ({}, b"", "exactly one of InputLocation and Body"),
        ({"x-amzn-sagemaker-inputlocation": "s3://in/x"}, b"also a body", "mutually exclusive"),
        ({"x-amzn-sagemaker-inputlocation": "ftp://in/x"}, b"", "regular expression pattern"),
        ({}, b"x" * 128_001, "less than or equal to 128000"),
        ({"x-amzn-sagemaker-requestttlseconds": "21601"}, b"x", "less than or equal to 21600"),
        ({"x-amzn-sagemaker-invocationtimeoutseconds": "0"}, b"x", "greater than or equal to 1"),
        ({"x-amzn-sagemaker-invocationtimeoutseconds": "soon"}, b"x", "must be an integer"),
        ({"x-amzn-sagemaker-inference-id": "x" * 65}, b"x", "length between 1 and 64"),
        ({"x-amzn-sagemaker-filename": "a.b.c"}, b"x", "'filename'"),
        ({"x-amzn-sagemaker-s3outputpathextension": "s3://elsewhere"}, b"x", "'s3OutputPathExtension'"),
    ],
)
def test_out_of_bounds_headers_are_validation_errors(headers, body, words):
    with pytest.raises(RuntimeValidationError) as err:
        parse(headers, body)
    assert words in err.value.message and err.value.http_status == 400


def test_only_async_paths_match():
    assert matches("/endpoints/e/async-invocations")
    assert not matches("/endpoints/e/invocations") and not matches("/endpoints/e/invocations-response-stream")
