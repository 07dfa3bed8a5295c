"""Data Capture where operators look: the admin API's endpoint view and the console's endpoint page."""

from __future__ import annotations

from tests.conftest import ACCOUNT_ID
from tests.integration.admin.test_console_pages import sign_in

CAPTURE = {
    "InitialSamplingPercentage": 25,
    "DestinationS3Uri": "s3://audit/capture",
    "CaptureOptions": [{"CaptureMode": "Input"}],
    "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
}


def _with_capture_and_counts(session_factory, written: int, failed: int) -> None:
    from sqlalchemy import select

    from neurondock_platform.dataplane import capture
    from neurondock_platform.dataplane.metrics import MetricsCollector
    from neurondock_platform.db import session_scope
    from neurondock_platform.models import Endpoint
    from neurondock_platform.services import metrics

    with session_scope(session_factory) as session:
        endpoint = session.scalar(select(Endpoint).where(Endpoint.name == "e1"))
        endpoint.extra = {**endpoint.extra, "DataCaptureConfig": CAPTURE}
    # What an API process's flush writes: the writer's counts, as metric store rows.
    collector = MetricsCollector()
    key = (ACCOUNT_ID, "e1", "AllTraffic")
    collector.capture_written(key, written)
    collector.capture_failed(key, failed - 1, capture.WRITE_FAILED)
    collector.capture_failed(key, 1, capture.QUEUE_FULL)
    with session_scope(session_factory) as session:
        metrics.write_points(session, collector.take_period())


def test_admin_api_and_console_show_capture_and_its_losses(api, client, world, session_factory):
    world("e1", instance_type="ml.c5.large")
    assert api.get("/endpoints/e1").get_json()["data_capture"] is None
    assert "No DataCaptureConfig" in _page(client)
    _with_capture_and_counts(session_factory, written=40, failed=3)
    assert api.get("/endpoints/e1").get_json()["data_capture"] == {
        "enable_capture": True,
        "capture_status": "Started",
        "sampling_percentage": 25,
        "destination_s3_uri": "s3://audit/capture",
        "capture_modes": ["Input"],
        "csv_content_types": [],
        "json_content_types": ["application/json"],
        "window_hours": 24,
        "records_written": 40,
        "records_failed": 3,
    }
    page = _page(client)
    assert '<span id="capture-written">40</span>' in page and ">3 lost</span>" in page
    assert "s3://audit/capture" in page


def _page(client) -> str:
    if client.get("/console/endpoints/e1").status_code != 200:
        sign_in(client)
    resp = client.get("/console/endpoints/e1")
    assert resp.status_code == 200
    return str(resp.get_data(as_text=True))
