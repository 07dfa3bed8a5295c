"""DataCaptureConfig on endpoint configs, DescribeEndpoint's summary, and UpdateEndpoint retaining it."""

from __future__ import annotations

import pytest
from tests.integration.control_plane.cp_helpers import ACCOUNT, REGION, variant

CAPTURE = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 50,
    "DestinationS3Uri": "s3://capture-bucket/prefix/",
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]},
}


@pytest.fixture(autouse=True)
def _model(make_model):
    make_model("m1")


def _config(ok, name: str, capture: dict | None = None) -> None:
    params = {"EndpointConfigName": name, "ProductionVariants": [variant()]}
    if capture is not None:
        params["DataCaptureConfig"] = capture
    ok("CreateEndpointConfig", params)


def test_describe_endpoint_shows_the_capture_summary(ok, in_service):
    _config(ok, "c1", CAPTURE)
    assert ok("DescribeEndpointConfig", {"EndpointConfigName": "c1"})["DataCaptureConfig"] == CAPTURE
    ok("CreateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c1"})
    in_service("e1")
    described = ok("DescribeEndpoint", {"EndpointName": "e1"})
    assert described["DataCaptureConfig"] == {
        "EnableCapture": True,
        "CaptureStatus": "Started",
        "CurrentSamplingPercentage": 50,
        "DestinationS3Uri": "s3://capture-bucket/prefix/",
    }
    # EnableCapture false: the config is kept and shown Stopped; no config: no summary at all.
    _config(ok, "c2", {**CAPTURE, "EnableCapture": False, "InitialSamplingPercentage": 0})
    ok("CreateEndpoint", {"EndpointName": "e2", "EndpointConfigName": "c2"})
    summary = ok("DescribeEndpoint", {"EndpointName": "e2"})["DataCaptureConfig"]
    assert (summary["EnableCapture"], summary["CaptureStatus"], summary["CurrentSamplingPercentage"]) == (
        False,
        "Stopped",
        0,
    )
    _config(ok, "c3")
    ok("CreateEndpoint", {"EndpointName": "e3", "EndpointConfigName": "c3"})
    assert "DataCaptureConfig" not in ok("DescribeEndpoint", {"EndpointName": "e3"})


INVALID = [
    ({"InitialSamplingPercentage": 101}, "Member must have value less than or equal to 100"),
    ({"InitialSamplingPercentage": -1}, "Member must have value greater than or equal to 0"),
    ({"CaptureOptions": [{"CaptureMode": "Everything"}]}, "Member must satisfy enum value set"),
    ({"CaptureOptions": []}, "Member must have length greater than or equal to 1"),
    ({"CaptureContentTypeHeader": {"CsvContentTypes": ["text/*"]}}, "regular expression pattern"),
    ({"DestinationS3Uri": "ftp://bucket/x"}, "regular expression pattern"),
    ({"DestinationS3Uri": "s3:///x"}, "regular expression pattern"),
    ({"DestinationS3Uri": "s3://?x"}, "Member must be an S3 URI of the form s3://bucket/prefix"),
]
UNIMPLEMENTED = [{"KmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/abc"}, {"DestinationS3Uri": "https://b.s3/x"}]


def test_invalid_or_unimplemented_capture_configs_are_refused_and_nothing_is_created(sagemaker, ok, fails):
    for change, expected in INVALID:
        params = {"EndpointConfigName": "bad", "ProductionVariants": [variant()]}
        message = fails("CreateEndpointConfig", {**params, "DataCaptureConfig": {**CAPTURE, **change}})
        assert expected in message, change
    for change in UNIMPLEMENTED:
        status, body = sagemaker(
            "CreateEndpointConfig",
            {"EndpointConfigName": "c", "ProductionVariants": [variant()], "DataCaptureConfig": {**CAPTURE, **change}},
        )
        assert (status, body["__type"]) == (501, "NotImplemented"), body
        assert "not implemented by neurondock" in body["message"]
    assert ok("ListEndpointConfigs")["EndpointConfigs"] == []


RETAIN_CASES = [  # RetainAllVariantProperties, ExcludeRetainedVariantProperties, the capture after the update
    (False, [], None),
    (True, [], 50),
    (True, ["DesiredWeight"], 50),
    (True, ["DataCaptureConfig"], None),
]


def test_update_endpoint_retains_the_live_capture_config(ok, db, in_service):
    from neurondock_platform.services import endpoints

    _config(ok, "c1", CAPTURE)
    _config(ok, "c2")  # no capture at all
    for index, (retain, exclude, percentage) in enumerate(RETAIN_CASES):
        name = f"e{index}"
        ok("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": "c1"})
        in_service(name)
        ok(
            "UpdateEndpoint",
            {
                "EndpointName": name,
                "EndpointConfigName": "c2",
                "RetainAllVariantProperties": retain,
                "ExcludeRetainedVariantProperties": [{"VariantPropertyType": p} for p in exclude],
            },
        )

        def apply(session, name=name):
            endpoint = endpoints.get_endpoint(session, account_id=ACCOUNT, region=REGION, name=name)
            endpoints.apply_pending_update(session, endpoint)

        db(apply)
        in_service(name)
        summary = ok("DescribeEndpoint", {"EndpointName": name}).get("DataCaptureConfig")
        assert (summary or {}).get("CurrentSamplingPercentage") == percentage, (retain, exclude)


def test_update_to_a_config_with_capture_starts_it(ok, db, in_service):
    from neurondock_platform.services import endpoints

    _config(ok, "c1")
    _config(ok, "c2", {**CAPTURE, "InitialSamplingPercentage": 20})
    ok("CreateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c1"})
    in_service("e1")
    ok("UpdateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c2"})

    def apply(session):
        endpoint = endpoints.get_endpoint(session, account_id=ACCOUNT, region=REGION, name="e1")
        endpoints.apply_pending_update(session, endpoint)

    db(apply)
    in_service("e1")
    assert ok("DescribeEndpoint", {"EndpointName": "e1"})["DataCaptureConfig"]["CurrentSamplingPercentage"] == 20


def test_the_routing_table_carries_the_live_capture_settings(ok, db):
    from neurondock_platform.dataplane.routing import load_routes

    _config(ok, "c1", CAPTURE)
    _config(ok, "c2", {**CAPTURE, "EnableCapture": False})
    _config(ok, "c3")
    for name, config in (("e1", "c1"), ("e2", "c2"), ("e3", "c3")):
        ok("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": config})
    routes = db(load_routes)
    capture = routes[(ACCOUNT, "e1")].capture
    assert capture is not None
    assert (capture.bucket, capture.prefix, capture.percentage) == ("capture-bucket", "prefix", 50)
    assert (capture.capture_input, capture.capture_output) == (True, True)
    assert capture.csv_types == {"text/csv"} and capture.json_types == {"application/json"}
    # Stopped capture and no capture both route without it.
    assert routes[(ACCOUNT, "e2")].capture is None and routes[(ACCOUNT, "e3")].capture is None
