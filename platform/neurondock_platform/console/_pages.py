"""Console pages: sign-in, fleet, models (with upload), compilation jobs and costs."""

from __future__ import annotations

import io
import re
import tarfile
from typing import Any

from flask import Blueprint, make_response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from neurondock_platform.api import context
from neurondock_platform.api.admin import _tokens, shapes
from neurondock_platform.console import _session
from neurondock_platform.console._common import form_str, owner, page_request, render, search
from neurondock_platform.errors import ValidationException
from neurondock_platform.models import CompilationJobStatus
from neurondock_platform.services import (
    artifacts,
    compilation_jobs,
    compile_reports,
    costs,
    deploy,
    endpoints,
    fleet,
    models,
    objects,
    sessions,
)
from neurondock_platform.services.fleet import iso
from neurondock_platform.services.rate_limits import ThrottlingException

DEFAULT_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".tar.gz", ".tgz")
_SAFE_NEXT = re.compile(r"^/console(/[A-Za-z0-9._~/%?&=+-]*)?$")


def _safe_next(target: str | None) -> str:
    # Only ever send a signed-in user back into the console (no open redirect).
    if target and _SAFE_NEXT.match(target) and "//" not in target:
        return target
    return url_for("console.endpoints")


def pack_model_file(filename: str, data: bytes) -> bytes:
    """Return a model.tar.gz: an uploaded archive as is, a bare TorchScript file packed as ``model.pt``."""
    lower = filename.lower()
    if lower.endswith((".tar.gz", ".tgz")):
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ValidationException(f"{filename} is not a gzip-compressed tar archive.") from exc
        return data
    if lower.endswith((".pt", ".pth")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("model.pt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()
    raise ValidationException(
        f"Upload a TorchScript file (.pt or .pth) or a SageMaker model.tar.gz; {filename or 'the file'} is neither."
    )


def loaded_models(view: fleet.HostView) -> list[dict[str, Any]]:
    """Group a host's visible replicas by model, as neuron-top's Loaded Models tree does."""
    groups: dict[str, dict[str, Any]] = {}
    for replica in view.replicas:
        if not replica.visible or not replica.holds_hardware:
            continue
        key = replica.model_name or "?"
        group = groups.setdefault(key, {"model": key, "replicas": [], "host_memory": 0, "device_memory": 0})
        group["replicas"].append(replica)
        for field, value in (("host_memory", replica.rss_bytes), ("device_memory", replica.device_memory_bytes)):
            if value is None or group[field] is None:
                group[field] = None
            else:
                group[field] += value
    return sorted(groups.values(), key=lambda g: g["model"])


def register(bp: Blueprint) -> None:
    @bp.route("/sign-in", methods=["GET", "POST"])
    def sign_in() -> BaseResponse | str:
        next_url = _safe_next(request.values.get("next"))
        error, status, retry_after = None, 200, None
        if request.method == "POST":
            _session.check_sign_in_csrf()
            key_id = (request.form.get("access_key_id") or "").strip()
            secret = (request.form.get("secret_access_key") or "").strip()
            limiter, address = _tokens.sign_in_limiter(), _tokens.client_address()
            try:
                limiter.attempt(address, key_id or None)
                credential = sessions.check_secret(key_id, secret, _session.credentials().lookup)
            except ThrottlingException as exc:
                retry_after = exc.retry_after
                error, status = f"Too many sign-in attempts. Try again in {retry_after} seconds.", 429
            except sessions.InvalidCredentialsError as exc:
                limiter.failed(address, key_id or None)
                error, status = exc.message, 401
            else:
                response = redirect(next_url)
                _session.start(response, key_id, credential)
                return response
        token = _session.sign_in_token()
        response = make_response(
            render_template("console/sign_in.html", csrf_token=token, next_url=next_url, error=error, signed_in=False),
            status,
        )
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        _session.set_sign_in_cookie(response, token)
        return response

    @bp.post("/sign-out")
    def sign_out() -> BaseResponse:
        response = redirect(url_for("console.sign_in"))
        _session.end(response)
        return response

    @bp.get("/")
    def home() -> BaseResponse:
        return redirect(url_for("console.endpoints"))

    @bp.get("/fleet", endpoint="fleet")
    def fleet_page() -> str:
        me = _session.current()
        settings = context.settings()
        views = fleet.list_hosts(context.db(), settings, account_id=None if me.is_admin else me.account_id)
        template = "fleet_hosts.html" if request.args.get("partial") == "1" else "fleet.html"
        colors: dict[int, int] = {}
        for view in views:
            owners: dict[str, int] = {}
            for replica in view.replicas:
                key = f"{replica.endpoint_name}/{replica.variant_name}" if replica.visible else "hidden"
                colors[replica.id] = owners.setdefault(key, len(owners) % 8)
        return render(
            template,
            section="fleet",
            hosts=views,
            loaded={v.host.id: loaded_models(v) for v in views},
            colors=colors,
            device_bytes_per_chip=fleet.DEVICE_MEMORY_BYTES_PER_CHIP,
        )

    @bp.get("/models", endpoint="models")
    def models_page() -> str:
        page = models.list_models(
            context.db(), account_id=owner()["account_id"], page=page_request(), name_contains=search()
        )
        return render(
            "models.html",
            section="models",
            items=[shapes.model_summary(m) for m in page.items],
            next_token=page.next_token,
            q=search() or "",
        )

    @bp.get("/new/model")
    def new_model() -> str:
        return render(
            "model_new.html",
            section="models",
            default_image=DEFAULT_IMAGE,
            embedded=not context.settings().s3_endpoint_url,
            values={},
            error=None,
        )

    @bp.post("/models")
    def create_model() -> BaseResponse | tuple[str, int]:
        session = context.db()
        settings = context.settings()
        name = form_str("name", max_length=63)
        image = form_str("image", max_length=255)
        url = form_str("model_data_url", required=False)
        upload = request.files.get("model_file")
        try:
            if upload is not None and upload.filename:
                data = pack_model_file(upload.filename, upload.read())
                bucket = objects.artifact_bucket_name(owner()["account_id"])
                info = artifacts.put_artifact(
                    session,
                    settings,
                    account_id=owner()["account_id"],
                    bucket=bucket,
                    key=f"models/{name}/model.tar.gz",
                    body=data,
                    content_type="application/gzip",
                )
                url = artifacts.s3_uri(info.bucket, info.key)
            elif not url:
                raise ValidationException("Upload a model file or give the S3 URL of a model.tar.gz.")
            who = owner()
            deploy.create_model(
                session, account_id=who["account_id"], region=who["region"], name=name, image=image, model_data_url=url
            )
            session.commit()
        except ValidationException as exc:
            session.rollback()
            page = render(
                "model_new.html",
                section="models",
                default_image=DEFAULT_IMAGE,
                embedded=not settings.s3_endpoint_url,
                values=request.form,
                error=exc.message,
            )
            return page, 400
        return redirect(url_for("console.model", name=name))

    @bp.get("/models/<name>")
    def model(name: str) -> str:
        session = context.db()
        row = models.get_model(session, **owner(), name=name)
        detail = shapes.model_detail(row)
        used_by = endpoints.endpoints_using_model(session, account_id=row.account_id, model_name=row.name)
        jobs = []
        if detail["model_data_url"]:
            jobs = compilation_jobs.jobs_producing(
                session, account_id=row.account_id, model_artifacts=detail["model_data_url"]
            )
        return render("model.html", section="models", model=detail, used_by=used_by, jobs=jobs)

    @bp.post("/models/<name>/delete")
    def delete_model(name: str) -> BaseResponse:
        session = context.db()
        models.delete_model(session, **owner(), name=name)
        session.commit()
        return redirect(url_for("console.models"))

    @bp.get("/jobs", endpoint="jobs")
    def jobs_page() -> str:
        status = request.args.get("status") or None
        if status is not None and status not in {s.value for s in CompilationJobStatus}:
            raise ValidationException(f"Unknown status {status!r}.")
        page = compilation_jobs.list_compilation_jobs(
            context.db(), account_id=owner()["account_id"], page=page_request(), name_contains=search(), status=status
        )
        return render(
            "jobs.html",
            section="jobs",
            items=page.items,
            next_token=page.next_token,
            q=search() or "",
            status=status or "",
            statuses=[s.value for s in CompilationJobStatus],
        )

    @bp.get("/jobs/<name>")
    def job(name: str) -> str:
        row = compilation_jobs.get_compilation_job(context.db(), **owner(), name=name)
        log_text, log_source = compile_reports.compile_log(context.settings(), row)
        report = row.report if isinstance(row.report, dict) else {}
        return render(
            "job.html",
            section="jobs",
            job=row,
            summary=shapes.compile_report_view(row),
            projections=shapes.projections_view(row),
            segments=(report.get("partition") or {}).get("segments") or [],
            log_text=log_text,
            log_source=log_source,
            iso=iso,
        )

    @bp.get("/costs", endpoint="costs")
    def costs_page() -> str:
        session = context.db()
        page = endpoints.list_endpoints(
            session, account_id=owner()["account_id"], page=page_request(), name_contains=search()
        )
        rows = costs.endpoint_costs(session, page.items)
        known = [r["usd_per_hour"] for r in rows if r["usd_per_hour"] is not None]
        return render(
            "costs.html",
            section="costs",
            rows=rows,
            total=round(sum(known), 4),
            next_token=page.next_token,
            q=search() or "",
            catalog=costs.catalog_json(),
        )
