"""Admin routes for models, endpoint configs and compilation jobs (report, log, projections)."""

from __future__ import annotations

from typing import Any, TypedDict

from flask import Blueprint, Response

from neurondock_platform.api import context
from neurondock_platform.api.admin import _params as params
from neurondock_platform.api.admin import shapes
from neurondock_platform.api.admin._auth import caller
from neurondock_platform.api.admin._errors import BadRequest, json_body
from neurondock_platform.models import CompilationJob, CompilationJobStatus
from neurondock_platform.services import compilation_jobs, compile_reports, deploy, endpoint_configs, models
from neurondock_platform.services.fleet import iso

JOB_STATUSES = [s.value for s in CompilationJobStatus]


class Owner(TypedDict):
    account_id: str
    region: str


def owner() -> Owner:
    return {"account_id": caller().account_id, "region": context.settings().region}


def job_summary(job: CompilationJob) -> dict[str, Any]:
    report = job.report if isinstance(job.report, dict) else {}
    return {
        "name": job.name,
        "arn": job.arn,
        "status": str(job.status),
        "target_device": job.target_device,
        "created_at": iso(job.created_at),
        "last_modified_at": iso(job.last_modified_at),
        "compilation_started_at": iso(job.compilation_started_at),
        "compilation_ended_at": iso(job.compilation_ended_at),
        "percent_supported": (report.get("analyze") or {}).get("percent_supported"),
    }


def job_detail(job: CompilationJob) -> dict[str, Any]:
    return {
        **job_summary(job),
        "failure_reason": job.failure_reason or None,
        "input_s3_uri": (job.input_config or {}).get("S3Uri"),
        "data_input_config": job.derived_data_input_config or (job.input_config or {}).get("DataInputConfig"),
        "model_artifacts": job.model_artifacts,
        "inference_image": job.inference_image,
        "artifact_sha256": job.artifact_sha256,
        "max_runtime_seconds": job.max_runtime_seconds,
        "report": shapes.compile_report_view(job),
    }


def load_job(name: str) -> CompilationJob:
    return compilation_jobs.get_compilation_job(context.db(), **owner(), name=name)


def register(bp: Blueprint) -> None:
    @bp.get("/models")
    def list_models() -> Response:
        page = models.list_models(
            context.db(),
            account_id=caller().account_id,
            page=params.page(),
            **params.list_filters(),
        )
        return json_body({"items": [shapes.model_summary(m) for m in page.items], "next_token": page.next_token})

    @bp.post("/models")
    def create_model() -> Response:
        data = params.body()
        environment = params.field(data, "environment", dict, default=None)
        if environment is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in environment.items()
        ):
            raise BadRequest("Member 'environment' must map strings to strings.")
        session = context.db()
        model = deploy.create_model(
            session,
            **owner(),
            name=params.field(data, "name", str, required=True),
            image=params.field(data, "image", str, required=True),
            model_data_url=params.field(data, "model_data_url", str),
            environment=environment,
            execution_role_arn=params.field(data, "execution_role_arn", str),
        )
        session.commit()
        return json_body(shapes.model_detail(model), status=201)

    @bp.get("/models/<name>")
    def describe_model(name: str) -> Response:
        return json_body(shapes.model_detail(models.get_model(context.db(), **owner(), name=name)))

    @bp.delete("/models/<name>")
    def delete_model(name: str) -> Response:
        session = context.db()
        models.delete_model(session, **owner(), name=name)
        session.commit()
        return Response(status=204)

    @bp.get("/endpoint-configs")
    def list_configs() -> Response:
        page = endpoint_configs.list_endpoint_configs(
            context.db(),
            account_id=caller().account_id,
            page=params.page(),
            **params.list_filters(),
        )
        return json_body({"items": [shapes.config_summary(c) for c in page.items], "next_token": page.next_token})

    @bp.get("/endpoint-configs/<name>")
    def describe_config(name: str) -> Response:
        config = endpoint_configs.get_endpoint_config(context.db(), **owner(), name=name)
        return json_body(shapes.config_detail(config))

    @bp.delete("/endpoint-configs/<name>")
    def delete_config(name: str) -> Response:
        session = context.db()
        endpoint_configs.delete_endpoint_config(session, **owner(), name=name)
        session.commit()
        return Response(status=204)

    @bp.get("/compilation-jobs")
    def list_jobs() -> Response:
        page = compilation_jobs.list_compilation_jobs(
            context.db(),
            account_id=caller().account_id,
            page=params.page(sort_fields=("name", "creation_time", "status")),
            status=params.choice("status", JOB_STATUSES),
            **params.list_filters(),
        )
        return json_body({"items": [job_summary(j) for j in page.items], "next_token": page.next_token})

    @bp.get("/compilation-jobs/<name>")
    def describe_job(name: str) -> Response:
        return json_body(job_detail(load_job(name)))

    @bp.get("/compilation-jobs/<name>/report")
    def job_report(name: str) -> Response:
        job = load_job(name)
        return json_body(
            {
                "name": job.name,
                "status": str(job.status),
                "available": isinstance(job.report, dict),
                "summary": shapes.compile_report_view(job),
                "report": job.report if isinstance(job.report, dict) else None,
            }
        )

    @bp.get("/compilation-jobs/<name>/log")
    def job_log(name: str) -> Response:
        job = load_job(name)
        text, source = compile_reports.compile_log(context.settings(), job)
        return json_body({"name": job.name, "status": str(job.status), "source": source, "log": text})

    @bp.get("/compilation-jobs/<name>/projections")
    def job_projections(name: str) -> Response:
        job = load_job(name)
        view = shapes.projections_view(job)
        return json_body(
            {"name": job.name, "status": str(job.status), "available": view is not None, "projections": view}
        )
