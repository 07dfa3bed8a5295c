"""The console in headless Chromium: sign in, create a model and an endpoint, watch it reach InService,
invoke it, chart its metrics, delete it; page and search many endpoints; walk every page with no
console errors. Screenshots go to tests/browser/screenshots/."""

from __future__ import annotations

import io
import json
import tarfile
import uuid

import pytest
from tests.support.platform import ACCESS_KEY, ACCOUNT_ID
from tests.support.waiting import wait_for

# Without Playwright the module is skipped, saying so (without chromium, conftest skips each test).
expect = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
).expect

ENDPOINT = "browser-mlp"
MODEL = "browser-mlp-model"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
BUCKET = "nd-browser-models"


@pytest.fixture(scope="module")
def torchscript_file(tmp_path_factory):
    import torch
    from tests.support.torch_models import tiny_mlp

    path = tmp_path_factory.mktemp("model") / "mlp.pt"
    torch.jit.save(tiny_mlp(seed=11), str(path))
    return path


@pytest.fixture(scope="module")
def compile_job(platform, torchscript_file) -> str:
    """Start a real ml_inf1 compile early; the page walk at the end of the module waits for it."""
    s3 = platform.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(str(torchscript_file), arcname="model.pt")
    s3.put_object(Bucket=BUCKET, Key="mlp/model.tar.gz", Body=buf.getvalue())
    name = f"browser-compile-{uuid.uuid4().hex[:6]}"
    platform.client("sagemaker").create_compilation_job(
        CompilationJobName=name,
        RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/SageMakerRole",
        InputConfig={
            "S3Uri": f"s3://{BUCKET}/mlp/model.tar.gz",
            "DataInputConfig": '{"input0": [1, 16]}',
            "Framework": "PYTORCH",
        },
        OutputConfig={"S3OutputLocation": f"s3://{BUCKET}/compiled/", "TargetDevice": "ml_inf1"},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    return name


def test_sign_in_refuses_a_wrong_secret_then_accepts_the_key_pair(console, compile_job):
    console.goto("/console/endpoints")
    assert "/console/sign-in" in console.page.url
    console.shot("01-sign-in")
    console.sign_in(secret_key="not-the-secret", navigate=False)
    assert "wrong" in console.page.inner_text("[role=alert]")
    console.errors.clear()  # the refused sign-in answers 401, which Chromium logs as a failed load
    console.sign_in(navigate=False)  # the form still knows where the user was going
    assert console.page.url.endswith("/console/endpoints")
    assert "root" in console.page.inner_text("header .who")
    cookies = {c["name"]: c for c in console.page.context.cookies()}
    assert cookies["nd_session"]["httpOnly"] and cookies["nd_session"]["sameSite"] == "Lax"
    console.assert_clean()


def test_create_an_endpoint_watch_it_reach_in_service_invoke_it_and_delete_it(console, platform, torchscript_file):
    page = console.page
    console.sign_in()

    # A model from an uploaded TorchScript file.
    console.goto("/console/new/model")
    page.fill("#model-name", MODEL)
    page.set_input_files("#model-file", str(torchscript_file))
    with page.expect_navigation():
        page.click("#model-submit")
    assert page.url.endswith(f"/console/models/{MODEL}")
    assert f"s3://nd-artifacts-{ACCOUNT_ID}/models/{MODEL}/model.tar.gz" in page.inner_text("main")
    console.shot("02-model")

    # Deploy it on an emulated inf1 instance from the create form.
    with page.expect_navigation():
        page.click("#deploy-model")
    assert page.input_value("#model-name") == MODEL
    page.fill("#endpoint-name", ENDPOINT)
    page.select_option("#instance-type", "ml.inf1.xlarge")
    console.shot("03-create-endpoint")
    with page.expect_navigation():
        page.click("#create-submit")
    assert page.url.endswith(f"/console/endpoints/{ENDPOINT}")
    assert page.inner_text("#ep-status") in ("Creating", "InService")
    console.shot("04-endpoint-creating")

    # The progress view follows it to InService without a reload.
    # (expect() and not wait_for_function: the console's CSP forbids the eval the latter needs.)
    expect(page.locator("#ep-status")).to_have_text("InService", timeout=120_000)
    assert "InService" in page.inner_text("#progress-log")
    # One replica per NeuronCore group; an inf1.xlarge has 4 cores.
    expect(page.locator("#replicas tbody tr:not(.none)").first).to_contain_text("Ready")
    rows = page.inner_text("#replicas tbody")
    assert "reported" in rows and "Ready" in rows
    console.shot("05-endpoint-in-service")

    # Test invoke: the form's default body is 16 floats, the MLP's input.
    page.reload()
    page.wait_for_load_state("networkidle")
    page.click("#invoke-submit")
    expect(page.locator("#invoke-meta")).to_contain_text("HTTP")
    meta = page.inner_text("#invoke-meta")
    assert meta.startswith("HTTP 200") and "variant AllTraffic" in meta
    assert len(json.loads(page.inner_text("#invoke-output"))[0]) == 4
    console.shot("06-invoke")

    # Live charts: the data plane flushes metrics every second here and the page refreshes its charts every 1.5 s.
    expect(page.locator("figure.chart[data-metric=Invocations] canvas")).to_have_count(1, timeout=60_000)
    expect(page.locator("figure.chart[data-metric=ModelLatency] canvas")).to_have_count(1, timeout=20_000)
    page.check("#follow-logs")
    expect(page.locator("#logs pre.log").first).to_contain_text("neurondock replica")
    console.shot("07-endpoint-metrics-and-logs")

    # The fleet view shows the instance's four emulated NeuronCores.
    console.goto("/console/fleet")
    cores = page.query_selector_all("td.core:not(.free)")
    assert len(cores) == 4 and ENDPOINT in cores[0].inner_text()
    assert "emulated" in page.inner_text("h1")
    console.shot("08-fleet")
    console.assert_clean()

    # Delete: confirm the dialog, watch Deleting until the endpoint is gone.
    console.goto(f"/console/endpoints/{ENDPOINT}")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#delete-endpoint")
    assert page.inner_text("#ep-status") in ("Deleting", "Deleted")
    console.shot("09-endpoint-deleting")
    page.wait_for_selector("#gone", state="visible", timeout=90_000)
    assert page.inner_text("#ep-status") == "Deleted"
    console.shot("10-endpoint-deleted")
    console.assert_clean()
    sm = platform.client("sagemaker")
    with pytest.raises(sm.exceptions.ClientError):
        sm.describe_endpoint(EndpointName=ENDPOINT)


def test_many_endpoints_page_and_search(console, platform):
    sm = platform.client("sagemaker")
    # An image neurondock cannot run makes each endpoint fail at once, without starting replicas.
    sm.create_model(ModelName="unrunnable", PrimaryContainer={"Image": "example.com/not-pytorch:1"})
    sm.create_endpoint_config(
        EndpointConfigName="unrunnable",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "unrunnable",
                "InstanceType": "ml.c5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    for i in range(23):
        sm.create_endpoint(EndpointName=f"bulk-{i:02d}", EndpointConfigName="unrunnable")
    console.sign_in()
    console.goto("/console/endpoints")
    assert len(console.page.query_selector_all("#endpoint-table tbody tr")) == 20
    console.shot("11-endpoints-page-1")
    with console.page.expect_navigation():
        console.page.click("#next-page")
    console.page.wait_for_load_state("networkidle")
    assert len(console.page.query_selector_all("#endpoint-table tbody tr")) == 3
    console.page.fill("input[name=q]", "bulk-1")
    with console.page.expect_navigation():
        console.page.press("input[name=q]", "Enter")
    names = console.page.inner_text("#endpoint-table tbody")
    assert "bulk-10" in names and "bulk-19" in names and "bulk-20" not in names
    console.shot("12-endpoints-search")
    wait_for(
        lambda: sm.describe_endpoint(EndpointName="bulk-00")["EndpointStatus"] == "Failed",
        60,
        what="bulk-00 to fail",
        interval=0.5,
    )
    console.goto("/console/endpoints/bulk-00")
    assert "not supported by neurondock" in console.page.inner_text("#failure-reason")
    console.assert_clean()


def test_walk_every_page_without_console_errors(console, platform, compile_job):
    sm = platform.client("sagemaker")
    wait_for(
        lambda: (
            sm.describe_compilation_job(CompilationJobName=compile_job)["CompilationJobStatus"]
            in ("COMPLETED", "FAILED")
        ),
        240,
        what="the compile job to finish",
        interval=1,
    )
    console.sign_in()
    pages = [
        ("13-endpoints", "/console/endpoints", "Endpoints"),
        ("14-endpoint-failed", "/console/endpoints/bulk-00", "Failed"),
        ("15-new-endpoint", "/console/new/endpoint", "Create endpoint"),
        ("16-models", "/console/models", MODEL),
        ("17-model", f"/console/models/{MODEL}", "Compiled by"),
        ("18-new-model", "/console/new/model", "Create model"),
        ("19-jobs", "/console/jobs", compile_job),
        ("20-job-report", f"/console/jobs/{compile_job}", "Compile report"),
        ("21-fleet", "/console/fleet", "Fleet"),
        ("22-costs", "/console/costs", "Price list"),
        ("23-accounts", "/console/accounts", ACCESS_KEY),
    ]
    for name, path, text in pages:
        response = console.goto(path)
        assert response is not None and response.status == 200, path
        assert text in console.page.inner_text("main"), path
        console.page.wait_for_load_state("networkidle")  # the page's scripts have fetched what they show
        console.shot(name)
        console.assert_clean()
    console.goto("/console/accounts")
    console.page.fill("#account-name", "browser-team")
    with console.page.expect_navigation():
        console.page.click("#create-account")
    secret = console.page.inner_text("#new-secret")
    assert "browser-team" in secret and "not shown again" in secret
    console.shot("24-account-created")
    console.assert_clean()
    console.goto(f"/console/jobs/{compile_job}")
    report = console.page.inner_text("main")
    assert "of operators supported on Neuron" in report and "measured" in report.lower()
    assert len(console.page.query_selector_all("#projections .tag.projected")) >= 10
    console.assert_clean()


def test_the_fleet_page_fits_a_laptop_screen(console, platform, torchscript_file):
    """At 1366 px the 16-chip NeuronCore grid, the vCPU/memory facts and the loaded models sit side by side."""
    s3, sm = platform.client("s3"), platform.client("sagemaker")
    s3.create_bucket(Bucket="nd-browser-fleet")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(str(torchscript_file), arcname="model.pt")
    s3.put_object(Bucket="nd-browser-fleet", Key="fleet/model.tar.gz", Body=buf.getvalue())
    # A realistic endpoint name (SageMaker allows 63 characters) on an inf1 instance: its cores show it.
    name = f"browser-fleet-neuroncore-layout-{uuid.uuid4().hex[:6]}"
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://nd-browser-fleet/fleet/model.tar.gz"},
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/SageMakerRole",
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": "ml.inf1.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})

    console.sign_in()
    console.goto("/console/fleet")
    page = console.page
    assert page.viewport_size == {"width": 1366, "height": 768}
    host = page.locator("section.host").first
    cores = host.locator("table.cores")
    assert cores.locator("tr").count() == 16  # one row per emulated Inferentia chip
    expect(host.locator("table.tree")).to_contain_text(name)  # the loaded-models panel lists the endpoint
    console.shot("24-fleet-at-1366px")

    grid_box = host.locator(".host-grid").bounding_box()
    left_box, right_box = (host.locator(".host-grid > div").nth(i).bounding_box() for i in (0, 1))
    cores_box = cores.bounding_box()
    side = [host.locator(sel).bounding_box() for sel in ("dl.facts", "table.tree")]
    assert None not in (grid_box, left_box, right_box, cores_box, *side)

    def overlaps(a, b) -> bool:
        return not (
            a["x"] + a["width"] <= b["x"]
            or b["x"] + b["width"] <= a["x"]
            or a["y"] + a["height"] <= b["y"]
            or b["y"] + b["height"] <= a["y"]
        )

    # Side by side (not stacked) at this width, the grid inside its own column, nothing under anything.
    assert right_box["x"] >= left_box["x"] + left_box["width"] - 0.5, (left_box, right_box)
    assert cores_box["x"] + cores_box["width"] <= left_box["x"] + left_box["width"] + 0.5, (cores_box, left_box)
    for box in side:
        assert not overlaps(cores_box, box), (cores_box, box)
        assert box["x"] + box["width"] <= grid_box["x"] + grid_box["width"] + 0.5, (box, grid_box)
    # And nothing is cut off: the host panel does not scroll sideways.
    assert host.evaluate("el => el.scrollWidth <= el.clientWidth"), "the host panel overflows sideways"
    console.assert_clean()
    sm.delete_endpoint(EndpointName=name)


def test_an_ordinary_account_uploads_deploys_and_invokes_its_own_model(console, platform, torchscript_file):
    # Not an admin: the upload goes to its own artifacts bucket and the host agent fetches the model with
    # its own credentials (README, "Security model"); root's keys never stand in for it.
    from tests.support.identity import new_account

    from neurondock_platform.db import make_engine, make_sessionmaker

    engine = make_engine(f"sqlite:///{platform.data_dir / 'neurondock.db'}")
    try:
        tenant = new_account(make_sessionmaker(engine), "browser-tenant")
    finally:
        engine.dispose()
    page = console.page
    console.sign_in(tenant.access_key_id, tenant.secret_access_key)
    assert "browser-tenant" in page.inner_text("header .who")

    model, endpoint = "tenant-mlp-model", "tenant-mlp"
    console.goto("/console/new/model")
    page.fill("#model-name", model)
    page.set_input_files("#model-file", str(torchscript_file))
    with page.expect_navigation():
        page.click("#model-submit")
    assert f"s3://nd-artifacts-{tenant.account_id}/models/{model}/model.tar.gz" in page.inner_text("main")

    with page.expect_navigation():
        page.click("#deploy-model")
    page.fill("#endpoint-name", endpoint)
    page.select_option("#instance-type", "ml.c5.large")
    with page.expect_navigation():
        page.click("#create-submit")
    expect(page.locator("#ep-status")).to_have_text("InService", timeout=120_000)

    page.reload()
    page.wait_for_load_state("networkidle")
    page.click("#invoke-submit")
    expect(page.locator("#invoke-meta")).to_contain_text("HTTP")
    assert page.inner_text("#invoke-meta").startswith("HTTP 200")
    assert len(json.loads(page.inner_text("#invoke-output"))[0]) == 4
    console.shot("11-ordinary-account-invoke")
    console.assert_clean()

    # The admin's keys see it under the tenant's account only; the tenant's is the owner.
    sm = platform.client("sagemaker")
    with pytest.raises(sm.exceptions.ClientError):
        sm.describe_endpoint(EndpointName=endpoint)
    console.goto(f"/console/endpoints/{endpoint}")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#delete-endpoint")
    page.wait_for_selector("#gone", state="visible", timeout=90_000)
