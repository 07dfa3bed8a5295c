"""Data Capture: record format, encoding choice, file naming, sampling, the queue and its failures."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import math
import re
import uuid

import pytest
from tests.conftest import ACCOUNT_ID, sign
from tests.unit.dataplane.fakes import StaticTable, asgi_call, verifier
from tests.unit.dataplane.test_router_and_runtime import FakeCaller, route

from neurondock_platform.dataplane import capture
from neurondock_platform.dataplane.capture import CaptureEvent, CaptureWriter, Sampler
from neurondock_platform.dataplane.metrics import MetricsCollector
from neurondock_platform.dataplane.routing import EndpointRoute
from neurondock_platform.dataplane.runtime import RuntimeApp
from neurondock_platform.services.data_capture import CaptureSettings

CONFIG = {
    "InitialSamplingPercentage": 100,
    "DestinationS3Uri": "s3://bucket/data_capture/",
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["Application/JSON"]},
}
SETTINGS = CaptureSettings.from_config(CONFIG)
# 2022-10-10 14:51:15.820 UTC, the moment of AWS's published example file name.
AT = dt.datetime(2022, 10, 10, 14, 51, 15, 820_000, tzinfo=dt.UTC).timestamp()


def event(**kw) -> CaptureEvent:
    values = {
        "account_id": ACCOUNT_ID,
        "endpoint": "ep",
        "variant": "AllTraffic",
        "settings": SETTINGS,
        "at": AT,
        "input_body": b"69,0,153.7\n",
        "input_type": "text/csv",
        "output_body": b"0.0254181120544672",
        "output_type": "text/csv; charset=utf-8",
        "inference_id": None,
    }
    values.update(kw)
    return CaptureEvent(**values)


def test_record_has_sagemakers_exact_shape():
    rec = capture.record(event(inference_id="req-7"), event_id="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
    assert rec == {
        "captureData": {
            "endpointInput": {
                "observedContentType": "text/csv", "mode": "INPUT", "data": "69,0,153.7\n", "encoding": "CSV"
            },
            "endpointOutput": {
                "observedContentType": "text/csv; charset=utf-8",
                "mode": "OUTPUT",
                "data": "0.0254181120544672",
                "encoding": "CSV",
            },
        },
        "eventMetadata": {
            "eventId": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            "inferenceId": "req-7",
            "inferenceTime": "2022-10-10T14:51:15Z",
        },
        "eventVersion": "0",
    }  # fmt: skip
    # Without an inference id there is no inferenceId; eventId is a fresh UUID.
    plain = capture.record(event())["eventMetadata"]
    assert "inferenceId" not in plain and re.fullmatch(r"[0-9a-f-]{36}", plain["eventId"])
    ids = capture.uuid4s(64)
    assert len(set(ids)) == 64
    parsed = [uuid.UUID(i) for i in ids]
    assert [str(u) for u in parsed] == ids
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in parsed)


@pytest.mark.parametrize(
    ("content_type", "body", "encoding"),
    [
        ("text/csv", b"1,2\n", "CSV"),
        ("application/json", b'{"a": 1}', "JSON"),
        ("application/json; charset=utf-8", b'{"a": 1}', "JSON"),  # parameters are not part of the match
        ("APPLICATION/JSON", b"[1]", "JSON"),  # nor is case
        ("application/x-npy", b"\x93NUMPY", "BASE64"),  # not listed
        ("text/csv", b"\xff\xfe", "BASE64"),  # listed, but not text: kept exactly
        (None, b"raw", "BASE64"),
    ],
)
def test_encoding_follows_the_content_type_lists(content_type, body, encoding):
    side = capture.captured_body("INPUT", body, content_type, SETTINGS)
    assert side["encoding"] == encoding
    assert side["observedContentType"] == (content_type or "application/octet-stream")
    decoded = base64.b64decode(side["data"]) if encoding == "BASE64" else side["data"].encode()
    assert decoded == body


def test_without_content_type_lists_everything_is_base64():
    bare = CaptureSettings.from_config({k: v for k, v in CONFIG.items() if k != "CaptureContentTypeHeader"})
    assert capture.captured_body("OUTPUT", b"1,2", "text/csv", bare)["encoding"] == "BASE64"


@pytest.mark.parametrize(
    ("modes", "sides"),
    [
        (["Input"], {"endpointInput"}),
        (["Output"], {"endpointOutput"}),
        (["InputAndOutput"], {"endpointInput", "endpointOutput"}),
        (["Input", "Output"], {"endpointInput", "endpointOutput"}),
    ],
)
def test_capture_modes_choose_the_sides(modes, sides):
    settings = CaptureSettings.from_config({**CONFIG, "CaptureOptions": [{"CaptureMode": m} for m in modes]})
    assert set(capture.record(event(settings=settings))["captureData"]) == sides


def test_object_key_is_sagemakers_layout():
    unique = "d0e7fdc2-c1ba-4e01-a9ad-7ed9b7a96b75"
    key = capture.object_key("data_capture", "image-classification", "AllTraffic", AT, unique)
    assert key == (
        "data_capture/image-classification/AllTraffic/2022/10/10/14/51-15-820-d0e7fdc2-c1ba-4e01-a9ad-7ed9b7a96b75.jsonl"
    )  # fmt: skip
    # No prefix (s3://bucket or s3://bucket/) and a trailing slash never make a double slash.
    assert capture.object_key("", "ep", "v", AT).startswith("ep/v/2022/10/10/14/51-15-820-")
    assert CaptureSettings.from_config({**CONFIG, "DestinationS3Uri": "s3://b/a/b//"}).prefix == "a/b"


@pytest.mark.parametrize("percentage", [0, 10, 50, 100])
def test_sampling_stays_within_binomial_bounds(percentage):
    n = 20_000
    sample = Sampler(seed=1234)
    hits = sum(sample(percentage) for _ in range(n))
    p = percentage / 100
    # Five standard deviations: a sampler this far off is wrong, not unlucky (about 1 in 1.7 million).
    assert abs(hits - n * p) <= 5 * math.sqrt(n * p * (1 - p))


class FakeStore:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.files: dict[tuple[str, str], bytes] = {}
        self.owners: list[tuple[str, str | None]] = []

    def put(self, account_id, role_arn, bucket, key, body):
        self.owners.append((account_id, role_arn))
        if self.fail is not None:
            raise self.fail
        self.files[(bucket, key)] = body


def roles(account_id, endpoint):
    return {"AllTraffic": f"arn:aws:iam::{account_id}:role/model-role"}


def test_flush_writes_one_file_per_variant_and_hour_as_the_owner():
    store, metrics = FakeStore(), MetricsCollector()
    writer = CaptureWriter(store, roles, metrics)
    for offset in (0, 1, 3600):
        assert writer.offer(event(at=AT + offset))
    assert asyncio.run(writer.flush()) == 3
    keys = sorted(k for _, k in store.files)
    # The file takes its first record's time: 14:51:15.820, then 15:51:15.820 for the next hour's.
    assert [k.rsplit("-", 5)[0] for k in keys] == [
        "data_capture/ep/AllTraffic/2022/10/10/14/51-15-820",
        "data_capture/ep/AllTraffic/2022/10/10/15/51-15-820",
    ]
    lines = store.files[("bucket", keys[0])].decode().splitlines()
    assert [json.loads(line)["eventVersion"] for line in lines] == ["0", "0"]
    assert set(store.owners) == {(ACCOUNT_ID, f"arn:aws:iam::{ACCOUNT_ID}:role/model-role")}
    assert metrics.variants[(ACCOUNT_ID, "ep", "AllTraffic")].capture_written.total == 3


def test_a_failed_write_is_counted_and_never_raised():
    metrics = MetricsCollector()
    writer = CaptureWriter(FakeStore(fail=OSError("store down")), roles, metrics)
    writer.offer(event())
    writer.offer(event())
    assert asyncio.run(writer.flush()) == 0
    stats = metrics.variants[(ACCOUNT_ID, "ep", "AllTraffic")]
    assert stats.capture_failed[capture.WRITE_FAILED].total == 2
    rows = {r["metric_name"]: r for r in metrics.take_period()}
    assert rows["DataCaptureFailed"]["sum"] == 2.0 and "DataCaptureWritten" not in rows
    labels = f'account_id="{ACCOUNT_ID}",EndpointName="ep",VariantName="AllTraffic",reason="write_failed"'
    assert f"DataCaptureFailed{{{labels}}} 2" in metrics.render().decode()


def test_a_full_queue_drops_and_counts_by_records_and_by_bytes():
    metrics = MetricsCollector()
    writer = CaptureWriter(FakeStore(), roles, metrics, max_records=2, max_bytes=1000)
    assert writer.offer(event()) and writer.offer(event())
    assert not writer.offer(event())
    writer.take()
    assert not writer.offer(event(input_body=bytes(2000)))
    assert metrics.variants[(ACCOUNT_ID, "ep", "AllTraffic")].capture_failed[capture.QUEUE_FULL].total == 2


async def _written(store: FakeStore) -> None:
    """Until the writer has put a file in the store (or 2 s pass, for the assertion after to fail)."""
    for _ in range(200):
        if store.files:
            return
        await asyncio.sleep(0.01)


def test_the_flusher_writes_when_a_batch_is_full_before_its_interval():
    store = FakeStore()

    async def scenario():
        writer = CaptureWriter(store, roles, interval=3600, batch_records=3)
        writer.start()
        for _ in range(3):
            writer.offer(event())
        await _written(store)
        await writer.stop()

    asyncio.run(scenario())
    assert sum(len(body.splitlines()) for body in store.files.values()) == 3


def test_the_flusher_sleeps_on_an_empty_queue_and_writes_an_interval_after_the_first_record():
    store = FakeStore()
    flushes: list[int] = []

    async def scenario():
        writer = CaptureWriter(store, roles, interval=0.2)
        flush = writer.flush

        async def counting() -> int:
            flushes.append(writer.queued)
            return await flush()

        writer.flush = counting  # type: ignore[method-assign]
        writer.start()
        await asyncio.sleep(0.7)  # three intervals with nothing queued: a span, not a wait for readiness
        assert flushes == [], "no wake-up to write an empty queue"
        writer.offer(event())
        await _written(store)
        await writer.stop()

    asyncio.run(scenario())
    assert flushes[0] == 1 and sum(len(body.splitlines()) for body in store.files.values()) == 1


@pytest.fixture
def capture_app(settings, session_factory):
    store = FakeStore()
    writer = CaptureWriter(store, roles, interval=3600)
    base = route(("AllTraffic", 1.0, ["x:1"]))

    def make(percentage=100, caller=None):
        settings_ = CaptureSettings.from_config({**CONFIG, "InitialSamplingPercentage": percentage})
        with_capture = EndpointRoute(base.account_id, base.name, base.status, base.variants, settings_)
        app = RuntimeApp(
            settings,
            session_factory,
            verifier(settings, session_factory),
            caller=caller or FakeCaller(),
            table=StaticTable({(ACCOUNT_ID, "ep"): with_capture}),
            capture=writer,
        )
        return app

    return make, writer, store


def _invoke(app, body=b'{"x": 1}', headers=None):
    url = "http://localhost/endpoints/ep/invocations"
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    signed = sign("POST", url, body=body, headers=hdrs)
    signed["Host"] = "localhost"
    return asyncio.run(asgi_call(app, "POST", "/endpoints/ep/invocations", body, signed))


def test_the_runtime_captures_successful_invocations_only(capture_app):
    make, writer, _ = capture_app
    app = make()
    status, _, _ = _invoke(app, headers={"X-Amzn-SageMaker-Inference-Id": "id-1"})
    assert status == 200
    assert writer.queued == 1
    queued = writer.take()[0]
    assert (queued.input_body, queued.output_body, queued.inference_id) == (b'{"x": 1}', b'{"x": 1}', "id-1")
    assert (queued.input_type, queued.output_type) == ("application/json", "application/json")
    failing = make(caller=FakeCaller({"x:1": "error"}))
    assert _invoke(failing)[0] == 424
    assert writer.queued == 0
    assert _invoke(make(percentage=0))[0] == 200 and writer.queued == 0


def test_a_full_capture_queue_never_fails_the_invocation(capture_app):
    make, writer, _ = capture_app
    writer.max_records = 1
    app = make()
    assert [_invoke(app)[0] for _ in range(3)] == [200, 200, 200]
    assert writer.queued == 1


def test_async_invocations_are_captured_by_the_background_invoker(session_factory):
    from neurondock_platform.dataplane.background import BackgroundInvoker
    from neurondock_platform.dataplane.router import Router

    store = FakeStore()
    writer = CaptureWriter(store, roles, interval=3600)
    base = route(("AllTraffic", 1.0, ["x:1"]))
    table = StaticTable(
        {(ACCOUNT_ID, "ep"): EndpointRoute(base.account_id, base.name, base.status, base.variants, SETTINGS)}
    )
    invoker = BackgroundInvoker(session_factory, FakeCaller(), capture=writer)
    invoker.table, invoker.router = table, Router(table, invoker.caller)
    meta = {"op": "invoke", "content_type": "text/csv", "inference_id": "async-1"}
    answer = invoker.invoke(ACCOUNT_ID, "ep", meta, b"1,2\n", 5)
    assert answer.meta["status"] == 200
    invoker.close()  # writes what is queued
    [body] = store.files.values()
    rec = json.loads(body)
    assert rec["eventMetadata"]["inferenceId"] == "async-1"
    assert rec["captureData"]["endpointInput"] == {
        "observedContentType": "text/csv",
        "mode": "INPUT",
        "data": "1,2\n",
        "encoding": "CSV",
    }
    assert rec["captureData"]["endpointOutput"]["observedContentType"] == "application/json"
