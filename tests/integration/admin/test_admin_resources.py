"""Models, configs, endpoints and compilation jobs through the admin API: listing, detail, changes."""

from __future__ import annotations

import datetime as dt

from tests.conftest import ACCOUNT_ID
from tests.integration.admin.admin_helpers import compile_log, compile_report
from tests.support.world import IMAGE


def test_list_pages_with_limit_and_next_token_and_filters(api):
    for i in range(5):
        api.ok("POST", "/models", status=201, json_body={"name": f"model-{i}", "image": IMAGE})
    api.ok("POST", "/models", status=201, json_body={"name": "other", "image": IMAGE})
    seen, token = [], None
    while True:
        query = {"limit": 2, "sort_by": "name", "sort_order": "asc", "name_contains": "MODEL"}
        if token:
            query["next_token"] = token
        page = api.ok("GET", "/models", query=query)
        assert len(page["items"]) <= 2
        seen += [m["name"] for m in page["items"]]
        token = page["next_token"]
        if not token:
            break
    assert seen == [f"model-{i}" for i in range(5)]
    assert api.get("/models", query={"next_token": "bogus"}).status_code == 400
    newest = api.ok("GET", "/models", query={"limit": 1})["items"][0]
    assert newest["name"] == "other" and newest["image"] == IMAGE


def test_bad_parameters_and_bodies_are_400_with_the_error_body(api):
    for query in ({"limit": 0}, {"limit": "x"}, {"sort_by": "size"}, {"created_after": "yesterday"}):
        resp = api.get("/models", query=query)
        assert resp.status_code == 400, query
        assert resp.get_json()["error"]["code"] == "ValidationError"
    resp = api.request("POST", "/models", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    resp = api.post("/models", {"name": "bad name!", "image": IMAGE})
    assert resp.status_code == 400 and "regular expression" in resp.get_json()["error"]["message"]
    assert api.post("/models", {"image": IMAGE}).status_code == 400


def test_unknown_routes_and_methods(api):
    resp = api.request("GET", "/nothing-here", validate=False)
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "NotFound"
    resp = api.request("PUT", "/models", validate=False)
    assert resp.status_code == 405 and resp.headers["Allow"] == "GET, POST"


def test_model_and_config_detail_and_delete(api, world):
    world("e1", running=False)
    model = api.ok("GET", "/models/e1-model")
    assert model["model_data_url"] == "s3://models/m/model.tar.gz"
    configs = api.ok("GET", "/endpoint-configs")["items"]
    assert len(configs) == 1 and configs[0]["name"].startswith("e1-")
    config = api.ok("GET", f"/endpoint-configs/{configs[0]['name']}")
    assert config["production_variants"] == [
        {
            "variant_name": "AllTraffic",
            "model_name": "e1-model",
            "instance_type": "ml.inf1.6xlarge",
            "initial_instance_count": 1,
            "initial_variant_weight": 1.0,
        }
    ]
    api.ok("DELETE", f"/endpoint-configs/{configs[0]['name']}", status=204)
    api.ok("DELETE", "/models/e1-model", status=204)
    assert api.get("/models/e1-model").status_code == 404


def test_create_scale_and_delete_an_endpoint_enqueue_reconciles(api, dispatcher):
    api.ok("POST", "/models", status=201, json_body={"name": "m1", "image": IMAGE, "model_data_url": "s3://b/k.tar.gz"})
    created = api.ok(
        "POST",
        "/endpoints",
        status=201,
        json_body={"name": "e1", "model_name": "m1", "instance_type": "ml.c5.large", "instance_count": 2},
    )
    assert created["status"] == "Creating"
    assert created["variants"][0]["desired_instance_count"] == 2
    assert created["invoke_url"] == "http://127.0.0.1:8780/endpoints/e1/invocations"
    assert len(dispatcher.sent) == 1
    again = api.post("/endpoints", {"name": "e1", "model_name": "m1", "instance_type": "ml.c5.large"})
    assert again.status_code == 409
    assert len(api.ok("GET", "/endpoint-configs")["items"]) == 1  # the refused deploy left no config behind
    missing = api.post("/endpoints", {"name": "e2", "model_name": "nope", "instance_type": "ml.c5.large"})
    assert missing.status_code == 404

    busy = api.post("/endpoints/e1/capacity", {"variants": [{"name": "AllTraffic", "instance_count": 3}]})
    assert busy.status_code == 400 and "in-progress" in busy.get_json()["error"]["message"]

    deleting = api.ok("DELETE", "/endpoints/e1", status=202)
    assert deleting == {"name": "e1", "status": "Deleting"}
    assert api.ok("GET", "/endpoints/e1")["status"] == "Deleting"
    assert len(dispatcher.sent) == 2


def test_capacity_update_of_a_running_endpoint(api, world):
    world("e1", instance_type="ml.c5.large", count=1)
    updated = api.ok(
        "POST",
        "/endpoints/e1/capacity",
        status=202,
        json_body={"variants": [{"name": "AllTraffic", "instance_count": 2}]},
    )
    assert updated["status"] == "Updating"
    assert updated["variants"][0]["desired_instance_count"] == 2
    assert api.post("/endpoints/e1/capacity", {"variants": []}).status_code == 400
    assert api.post("/endpoints/e1/capacity", {"variants": [{"name": "x", "weight": "heavy"}]}).status_code == 400


def test_update_an_endpoint_to_another_config(api, world, dispatcher):
    world("e1", instance_type="ml.c5.large")
    world("e2", running=False, instance_type="ml.c5.xlarge")
    other = next(c["name"] for c in api.ok("GET", "/endpoint-configs")["items"] if c["name"].startswith("e2-"))
    updated = api.ok("POST", "/endpoints/e1/update", status=202, json_body={"endpoint_config_name": other})
    assert updated["status"] == "Updating" and updated["pending_update"]["endpoint_config_name"] == other
    assert api.post("/endpoints/e1/update", {"endpoint_config_name": "nope"}).status_code == 400  # in progress


def test_endpoint_list_filters_by_status_and_name(api, world):
    world("alpha", running=True, instance_type="ml.c5.large")
    world("beta", running=False, instance_type="ml.c5.large")
    assert [e["name"] for e in api.ok("GET", "/endpoints", query={"status": "InService"})["items"]] == ["alpha"]
    assert [e["name"] for e in api.ok("GET", "/endpoints", query={"name_contains": "ET"})["items"]] == ["beta"]
    summary = api.ok("GET", "/endpoints", query={"sort_by": "name", "sort_order": "asc"})["items"][0]
    assert summary["instance_types"] == ["ml.c5.large"] and summary["instance_count"] == 1


def _insert_job(session_factory, settings, *, status="COMPLETED", model_artifacts="s3://out/emb-ml_inf1.tar.gz"):
    from neurondock_platform.db import session_scope, utcnow
    from neurondock_platform.models import CompilationJob
    from neurondock_platform.services.compilation_jobs import compilation_job_arn

    with session_scope(session_factory) as session:
        session.add(
            CompilationJob(
                account_id=ACCOUNT_ID,
                name="emb-job",
                arn=compilation_job_arn(settings.region, ACCOUNT_ID, "emb-job"),
                status=status,
                role_arn="arn:aws:iam::123456789012:role/R",
                input_config={"S3Uri": "s3://in/emb.pt", "DataInputConfig": '{"input0":[1,8]}', "Framework": "PYTORCH"},
                output_config={"S3OutputLocation": "s3://out/", "TargetDevice": "ml_inf1"},
                stopping_condition={"MaxRuntimeInSeconds": 900},
                target_device="ml_inf1",
                max_runtime_seconds=900,
                model_artifacts=model_artifacts,
                derived_data_input_config='{"input0": [1, 8]}',
                report=compile_report() if status == "COMPLETED" else None,
                log_tail=compile_log() if status == "COMPLETED" else None,
                inference_image=IMAGE,
                compilation_started_at=utcnow() - dt.timedelta(seconds=5),
                compilation_ended_at=utcnow(),
            )
        )


def test_compilation_job_report_log_and_projections(api, session_factory, settings):
    _insert_job(session_factory, settings)
    listed = api.ok("GET", "/compilation-jobs")["items"]
    assert [j["name"] for j in listed] == ["emb-job"] and listed[0]["percent_supported"] == 92.86
    job = api.ok("GET", "/compilation-jobs/emb-job")
    report = job["report"]
    assert report["emulated"] is True
    assert report["unsupported_operators"] == ["aten::embedding"]
    assert report["cpu_fallbacks"][0]["operator"] == "aten::embedding"
    assert "not supported on Inf1" in report["cpu_fallbacks"][0]["reason"]
    assert report["numerics"]["max_abs_error"] > 0
    assert report["resources"]["device_memory_per_replica_bytes"] > 0
    full = api.ok("GET", "/compilation-jobs/emb-job/report")
    assert full["available"] and full["report"]["analyze"]["operator_count"]["aten::embedding"] == 1
    log = api.ok("GET", "/compilation-jobs/emb-job/log")
    assert "INFO:Neuron:" in log["log"] and log["source"] == "log tail stored with the job"
    proj = api.ok("GET", "/compilation-jobs/emb-job/projections")["projections"]
    assert proj["label"] == "projected, not measured on Inferentia"
    families = {r["family"] for r in proj["rows"]}
    assert families == {"inf1", "g4dn", "c5"}
    assert all(r["label"] for r in proj["rows"])
    assert proj["measured_cpu"]["label"] == "measured on this host"
    assert api.get("/compilation-jobs/nope").status_code == 404


def test_a_running_job_has_no_report_yet(api, session_factory, settings):
    _insert_job(session_factory, settings, status="INPROGRESS")
    assert api.ok("GET", "/compilation-jobs/emb-job")["report"] is None
    assert api.ok("GET", "/compilation-jobs/emb-job/projections")["available"] is False
    assert api.ok("GET", "/compilation-jobs", query={"status": "INPROGRESS"})["items"][0]["status"] == "INPROGRESS"


def test_endpoint_costs_with_alternatives_and_a_compiled_artifact(api, world, session_factory, settings):
    _insert_job(session_factory, settings)
    world("e1", instance_type="ml.inf1.xlarge", count=2, model_data_url="s3://out/emb-ml_inf1.tar.gz")
    cost = api.ok("GET", "/endpoints/e1/costs")
    assert cost["usd_per_hour"] == round(2 * 0.228, 4)
    assert cost["variants"][0]["price"]["as_of"] == "2026-08-21"
    assert cost["variants"][0]["sagemaker_price"]["usd_per_hour"] == 0.297
    assert cost["per_million_at_observed_traffic"]["usd"] is None
    alts = {a["family"]: a for a in cost["alternatives"]}
    assert alts["inf1"]["is_current"] and alts["inf1"]["instance_type"] == "ml.inf1.xlarge"
    assert alts["g4dn"]["instance_type"] == "ml.g4dn.xlarge" and alts["g4dn"]["usd_per_hour"] == round(2 * 0.526, 4)
    assert alts["c5"]["instance_type"] == "ml.c5.xlarge"
    assert alts["inf1"]["projected"]["label"] == "projected, not measured on Inferentia"
    assert alts["inf1"]["projected"]["source"] == "compilation job emb-job"
    assert alts["g4dn"]["projected"]["cost_per_million_usd"] > 0

    # The replicas serve the compiled artifact: their device memory is the report's estimate.
    replica = api.ok("GET", "/endpoints/e1/replicas")["items"][0]
    assert replica["device_memory_bytes"] == compile_report()["resources"]["device_memory_per_replica_bytes"]
    assert replica["device_memory_source"] == "compile report (estimate)"

    everything = api.ok("GET", "/costs")
    assert everything["page_usd_per_hour"] == cost["usd_per_hour"]
    assert {t["family"] for t in everything["instance_types"]} == {"inf1", "g4dn", "c5"}


def test_instance_catalog_carries_price_basis_and_date(api):
    items = api.ok("GET", "/instance-types", query={"family": "inf1"})["items"]
    assert [i["name"] for i in items] == [f"ml.inf1.{s}" for s in ("xlarge", "2xlarge", "6xlarge", "24xlarge")]
    assert items[2]["neuron_cores"] == 16 and items[2]["device_memory_gib"] == 32
    assert "on-demand" in items[0]["prices"]["ec2_on_demand"]["basis"]


def test_artifacts_upload_list_download_and_isolation(api, tenant):
    buckets = api.ok("GET", "/artifacts")
    assert buckets["default_bucket"] == f"nd-artifacts-{ACCOUNT_ID}"
    bucket = buckets["default_bucket"]
    up = api.request(
        "PUT",
        f"/artifacts/{bucket}/object",
        query={"key": "models/m.tar.gz"},
        data=b"x" * 1000,
        headers={"Content-Type": "application/gzip"},
    )
    assert up.status_code == 201, up.get_data(as_text=True)
    assert up.get_json()["s3_uri"] == f"s3://{bucket}/models/m.tar.gz"
    listed = api.ok("GET", f"/artifacts/{bucket}", query={"prefix": "models/"})["items"]
    assert [o["key"] for o in listed] == ["models/m.tar.gz"] and listed[0]["size"] == 1000
    down = api.ok("GET", f"/artifacts/{bucket}/object", query={"key": "models/m.tar.gz"})
    assert down.data == b"x" * 1000 and down.content_type == "application/gzip"
    assert api.get(f"/artifacts/{bucket}/object", query={"key": "nope"}).status_code == 404
    assert tenant.api.get(f"/artifacts/{bucket}").status_code == 404
    assert tenant.api.get(f"/artifacts/{bucket}/object", query={"key": "models/m.tar.gz"}).status_code == 404
    assert tenant.api.ok("GET", "/artifacts")["items"] == []
    taken = tenant.api.request("PUT", f"/artifacts/{bucket}/object", query={"key": "x"}, data=b"y")
    assert taken.status_code == 409


def test_a_signed_payload_hash_must_match_the_uploaded_body(api):
    import hashlib

    bucket = api.ok("GET", "/artifacts")["default_bucket"]
    body = b"model bytes" * 100
    declared = {"Content-Type": "application/gzip", "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    up = api.request("PUT", f"/artifacts/{bucket}/object", query={"key": "h.tar.gz"}, data=body, headers=declared)
    assert up.status_code == 201, up.get_data(as_text=True)
    assert api.ok("GET", f"/artifacts/{bucket}/object", query={"key": "h.tar.gz"}).data == body
    wrong = {**declared, "X-Amz-Content-SHA256": hashlib.sha256(b"another body").hexdigest()}
    refused = api.request("PUT", f"/artifacts/{bucket}/object", query={"key": "w.tar.gz"}, data=body, headers=wrong)
    assert refused.status_code == 401 and "x-amz-content-sha256" in refused.get_json()["error"]["message"]
    assert api.get(f"/artifacts/{bucket}/object", query={"key": "w.tar.gz"}).status_code == 404


def test_token_uploads_stream_the_body(api):
    token = api.ok("POST", "/tokens", status=201)["token"]
    bearer = api.with_token(token)
    resp = bearer.request("PUT", "/artifacts/my-bucket-1/object", query={"key": "a/b"}, data=b"0123456789")
    assert resp.status_code == 201 and resp.get_json()["size"] == 10
    assert bearer.ok("GET", "/artifacts/my-bucket-1/object", query={"key": "a/b"}).data == b"0123456789"


def test_nul_characters_are_refused_not_crashed_on(api):
    assert api.get("/endpoints/a%00b").status_code == 400
    assert api.get("/models", query={"name_contains": "a\x00b"}).status_code == 400
