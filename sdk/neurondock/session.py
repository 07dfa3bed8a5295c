"""The boto3 clients, region, account and default bucket every SDK call goes through."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from neurondock import waiters
from neurondock.errors import ConfigurationError, from_client_error, translate_client_errors

logger = logging.getLogger(__name__)

# neurondock's own default region (the platform's Settings.region default).
DEFAULT_REGION = "us-east-1"
# boto3's transfer manager default; named so tests and docs can refer to it.
MULTIPART_THRESHOLD = 8 * 1024 * 1024
# The model container must answer within 60 s (docs/sagemaker-api.md); leave room for the 424 reply.
RUNTIME_READ_TIMEOUT = 70
_USER_AGENT = "neurondock-sdk"


def _is_aws_host(url: str | None) -> bool:
    host = urlparse(url or "").hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn", ".api.aws"))


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigurationError(f"Not an S3 URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


class Session:
    """The sagemaker, sagemaker-runtime and s3 clients for one region, on neurondock or AWS alike."""

    def __init__(
        self,
        boto_session: boto3.Session | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        sagemaker_client: Any = None,
        sagemaker_runtime_client: Any = None,
        s3_client: Any = None,
        default_bucket: str | None = None,
        *,
        poll_interval: float = waiters.DEFAULT_POLL_INTERVAL,
        progress: bool = True,
    ) -> None:
        self.boto_session = boto_session or boto3.Session(region_name=region_name)
        # One neurondock URL serves SageMaker and the runtime at <url> and S3 at <url>/s3. Without it boto3
        # resolves endpoints itself, AWS_ENDPOINT_URL_SAGEMAKER[_RUNTIME] and AWS_ENDPOINT_URL_S3 included.
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        region = (
            region_name
            or (sagemaker_client.meta.region_name if sagemaker_client is not None else None)
            or self.boto_session.region_name
            or (DEFAULT_REGION if self.endpoint_url else None)
        )
        if not region:
            raise ConfigurationError(
                "No AWS region configured: pass region_name=..., set AWS_DEFAULT_REGION, or pass endpoint_url"
            )
        self.region_name: str = region
        self.poll_policy = waiters.PollPolicy(poll_interval, progress)
        self.sagemaker_client = sagemaker_client or self._client("sagemaker", self.endpoint_url)
        self.sagemaker_runtime_client = sagemaker_runtime_client or self._client(
            "sagemaker-runtime", self.endpoint_url, read_timeout=RUNTIME_READ_TIMEOUT
        )
        self.s3_client = s3_client or self._client(
            "s3",
            f"{self.endpoint_url}/s3" if self.endpoint_url else None,
            # neurondock's store is path-style only (docs/s3.md); virtual hosts would need DNS tricks.
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        waiters.install_log_tail_hook(self.sagemaker_client)
        self._default_bucket_name = default_bucket
        self._default_bucket: str | None = None
        self._account_id: str | None = None
        self._account_looked_up = False

    def __repr__(self) -> str:
        url = self.endpoint_url or self.sagemaker_client.meta.endpoint_url
        return f"Session(region_name={self.region_name!r}, endpoint_url={url!r})"

    @property
    def poll_interval(self) -> float:
        """Seconds between the first describes of a wait (it backs off while the status stays)."""
        return self.poll_policy.interval

    @property
    def progress(self) -> bool:
        """Whether waits print status changes to stderr."""
        return self.poll_policy.progress

    @property
    def boto_region_name(self) -> str:
        """The region, under the SageMaker SDK's attribute name."""
        return self.region_name

    def _client(self, service: str, endpoint_url: str | None, **config: Any) -> Any:
        options = {key: value for key, value in config.items() if value is not None}
        kwargs: dict[str, Any] = {
            "region_name": self.region_name,
            "config": Config(user_agent_extra=_USER_AGENT, **options),
        }
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        return self.boto_session.client(service, **kwargs)

    def _sts_client(self) -> Any:
        sagemaker_url = self.sagemaker_client.meta.endpoint_url
        endpoint_url = self.endpoint_url
        sts_override = os.environ.get("AWS_ENDPOINT_URL_STS") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint_url is None and not sts_override and not _is_aws_host(sagemaker_url):
            # SageMaker points at neurondock through the environment: ask that server, never real AWS.
            endpoint_url = sagemaker_url
        # Fail fast: STS is only used to name the default bucket, and there is a fallback.
        return self._client("sts", endpoint_url, connect_timeout=5, retries={"max_attempts": 2})

    def account_id(self) -> str | None:
        """Return the caller's account id from STS GetCallerIdentity, or None when STS is unavailable."""
        if not self._account_looked_up:
            self._account_looked_up = True
            try:
                self._account_id = str(self._sts_client().get_caller_identity()["Account"])
            except (ClientError, BotoCoreError) as exc:
                logger.info("STS GetCallerIdentity unavailable (%s); using neurondock defaults", exc)
        return self._account_id

    def expand_role(self, role: str | None) -> str:
        """Return a role ARN: ARNs pass through, bare names get this account's ARN prefix."""
        if role and role.startswith("arn:"):
            return role
        account = self.account_id() or "000000000000"
        return f"arn:aws:iam::{account}:role/{role or 'NeurondockExecutionRole'}"

    def default_bucket(self) -> str:
        """Return ``sagemaker-{region}-{account}``, creating it on first use if missing."""
        if self._default_bucket is None:
            name = self._default_bucket_name
            if name is None:
                account = self.account_id()
                # Without STS (a bare neurondock) there is no account id; any valid name works there.
                name = f"sagemaker-{self.region_name}-{account or 'neurondock'}"
            self._ensure_bucket(name)
            self._default_bucket = name
        return self._default_bucket

    def _ensure_bucket(self, name: str) -> None:
        try:
            self.s3_client.head_bucket(Bucket=name)
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("404", "NoSuchBucket", "NotFound"):
                if code in ("403", "AccessDenied"):
                    raise ConfigurationError(
                        f"Bucket {name!r} exists but this account cannot use it; pass default_bucket=..."
                    ) from exc
                raise from_client_error(exc) from exc
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.region_name != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region_name}
        try:
            self.s3_client.create_bucket(**kwargs)
            logger.info("Created S3 bucket %s", name)
        except ClientError as exc:
            # Another process may have created it between the HEAD and the PUT.
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise from_client_error(exc) from exc

    def upload_data(
        self,
        path: str | os.PathLike[str],
        bucket: str | None = None,
        key_prefix: str = "data",
        extra_args: dict[str, Any] | None = None,
    ) -> str:
        """Upload a file or a folder to S3 and return its ``s3://`` URI (multipart above 8 MB)."""
        # As in the SageMaker SDK: a file lands at {key_prefix}/{name} and its URI is returned; a folder's
        # files keep their relative paths under {key_prefix}/ and the prefix URI is returned.
        source = Path(path)
        bucket = bucket or self.default_bucket()
        prefix = key_prefix.strip("/")
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.is_file())
            for file in files:
                key = _join(prefix, file.relative_to(source).as_posix())
                self._upload_file(file, bucket, key, extra_args)
            return f"s3://{bucket}/{prefix}"
        if source.is_file():
            key = _join(prefix, source.name)
            self._upload_file(source, bucket, key, extra_args)
            return f"s3://{bucket}/{key}"
        raise ConfigurationError(f"No such file or directory: {source}")

    def _upload_file(self, file: Path, bucket: str, key: str, extra_args: dict[str, Any] | None) -> None:
        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD)
        with translate_client_errors():
            self.s3_client.upload_file(str(file), bucket, key, ExtraArgs=extra_args, Config=config)

    def download_file(self, s3_uri: str, destination: str | os.PathLike[str]) -> Path:
        """Download one S3 object to ``destination`` and return the local path."""
        bucket, key = parse_s3_uri(s3_uri)
        target = Path(destination)
        with translate_client_errors():
            self.s3_client.download_file(bucket, key, str(target))
        return target

    def wait_for_endpoint(self, endpoint_name: str, timeout: float = waiters.ENDPOINT_TIMEOUT) -> dict[str, Any]:
        """Wait until the endpoint is InService and return its description."""
        return waiters.wait_for_endpoint(self.sagemaker_client, endpoint_name, policy=self.poll_policy, timeout=timeout)

    def wait_for_compilation_job(self, job_name: str, timeout: float = waiters.COMPILATION_TIMEOUT) -> dict[str, Any]:
        """Wait until the compilation job is COMPLETED and return its description."""
        return waiters.wait_for_compilation_job(
            self.sagemaker_client, job_name, policy=self.poll_policy, timeout=timeout
        )


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name
