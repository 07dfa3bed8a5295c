"""A model artifact plus image: compile it for Inferentia and deploy it behind an endpoint."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from neurondock import packaging, waiters
from neurondock._names import base_from_name, base_name_from_image, name_from_base
from neurondock.deserializers import BaseDeserializer
from neurondock.errors import AwsError, ConfigurationError, ResourceNotFound, translate_client_errors
from neurondock.predictor import Predictor
from neurondock.serializers import BaseSerializer
from neurondock.session import Session

logger = logging.getLogger(__name__)

DEFAULT_PYTORCH_IMAGE = "763104351884.dkr.ecr.{region}.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
COMPILE_FRAMEWORKS = frozenset({"mxnet", "tensorflow", "keras", "pytorch", "onnx", "xgboost", "tflite"})
CODE_MOUNT = "/opt/ml/model/code"
# logging.INFO, which the SageMaker SDK sends as SAGEMAKER_CONTAINER_LOG_LEVEL.
CONTAINER_LOG_LEVEL = "20"
_S3 = "s3://"


def default_image_uri(region: str) -> str:
    """Return the PyTorch inference image neurondock and SageMaker both accept for ``region``."""
    return DEFAULT_PYTORCH_IMAGE.format(region=region)


def _short_version(version: str) -> str:
    # Neo wants major.minor ("1.13"), as the SageMaker SDK's get_short_version sends.
    return ".".join(version.split(".")[:2])


def _sends_framework_version(target: str, framework: str) -> bool:
    # The SageMaker SDK's rule: non-Inferentia ml_* targets for pytorch/tensorflow, and the Neuron
    # targets for pytorch/tensorflow (plus mxnet on ml_inf1).
    framework = framework.lower()
    if framework in ("pytorch", "tensorflow") and re.match(r"(?=^ml_)(?!ml_inf)", target):
        return True
    neuron = {
        "ml_inf1": ("pytorch", "tensorflow", "mxnet"),
        "ml_inf2": ("pytorch", "tensorflow"),
        "ml_trn1": ("pytorch", "tensorflow"),
    }
    return framework in neuron.get(target, ())


def _json_or_str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class Model:
    """A model artifact (``model.tar.gz``, local or on S3) and the image that serves it."""

    def __init__(
        self,
        model_data: str | os.PathLike[str] | None = None,
        image_uri: str | None = None,
        role: str | None = None,
        name: str | None = None,
        entry_point: str | None = None,
        source_dir: str | None = None,
        env: dict[str, str] | None = None,
        session: Session | None = None,
    ) -> None:
        self.model_data = os.fspath(model_data) if model_data is not None else None
        self.image_uri = image_uri
        self.role = role
        self.name = name
        self.entry_point = entry_point
        self.source_dir = source_dir
        self.env = dict(env or {})
        self._session = session
        self.endpoint_name: str | None = None
        self.compilation_job_name: str | None = None
        self.compiled_target: str | None = None
        self._compile_target: str | None = None
        self._compile_timeout = waiters.COMPILATION_TIMEOUT
        self._uploaded: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, model_data={self.model_data!r}, image_uri={self.image_uri!r})"

    @property
    def session(self) -> Session:
        """The SDK session, created on first use so that building a Model needs no AWS configuration."""
        if self._session is None:
            self._session = Session()
        return self._session

    def _image(self) -> str:
        return self.image_uri or default_image_uri(self.session.region_name)

    def _base_name(self) -> str:
        base = base_from_name(self.name) if self.name else base_name_from_image(self._image())
        if self.compiled_target and not self.name:
            base = f"{base}-{self.compiled_target.replace('_', '-')}"
        return base

    # -- artifacts -------------------------------------------------------------------------------

    def _has_local_code(self) -> bool:
        if self.source_dir is not None:
            return True
        return self.entry_point is not None and Path(self.entry_point).is_file()

    def _s3_model_data(self, key_prefix: str, with_code: bool) -> str | None:
        """Return an S3 URI for model_data, uploading local files and repacking code in as needed."""
        data = self.model_data
        if data is None:
            return None
        repack = with_code and self._has_local_code()
        if data.startswith(_S3) and not repack:
            return data
        cache_key = f"{data}|{repack}"
        if cache_key in self._uploaded:
            return self._uploaded[cache_key]
        with tempfile.TemporaryDirectory(prefix="neurondock-model-") as tmp:
            local = Path(data)
            if data.startswith(_S3):
                local = self.session.download_file(data, Path(tmp) / "source.tar.gz")
            entry_point, source_dir = (self.entry_point, self.source_dir) if repack else (None, None)
            target = Path(tmp) / "model.tar.gz"
            if not local.exists():
                raise ConfigurationError(f"model_data is neither an s3:// URI nor a local path: {data}")
            if local.is_dir():
                packaging.package_folder(local, target, entry_point=entry_point, source_dir=source_dir)
            elif repack:
                packaging.add_code(local, target, entry_point=entry_point, source_dir=source_dir)
            else:
                target = local
            uri = self.session.upload_data(target, key_prefix=key_prefix)
        self._uploaded[cache_key] = uri
        return uri

    def _container_env(self) -> dict[str, str]:
        env = dict(self.env)
        if self.entry_point:
            # Script-mode variables win over env, as in the SageMaker SDK.
            program = self.entry_point if self.source_dir else Path(self.entry_point).name
            env.update(
                {
                    "SAGEMAKER_PROGRAM": program,
                    "SAGEMAKER_SUBMIT_DIRECTORY": CODE_MOUNT,
                    "SAGEMAKER_CONTAINER_LOG_LEVEL": CONTAINER_LOG_LEVEL,
                    "SAGEMAKER_REGION": self.session.region_name,
                }
            )
        return env

    # -- compile ---------------------------------------------------------------------------------

    def compile(
        self,
        target_instance_family: str,
        input_shape: dict[str, Any] | list[Any] | str,
        output_path: str,
        framework: str = "pytorch",
        framework_version: str | None = None,
        compiler_options: dict[str, Any] | str | None = None,
        job_name: str | None = None,
        compile_max_run: int = 900,
        wait: bool = True,
        role: str | None = None,
        tags: list[dict[str, str]] | None = None,
    ) -> Model:
        """Run CreateCompilationJob (e.g. ``ml_inf1``); when done, use the compiled artifact and image."""
        if framework.lower() not in COMPILE_FRAMEWORKS:
            allowed = sorted(COMPILE_FRAMEWORKS)
            raise ConfigurationError(f"framework must be one of {allowed}, not {framework!r}")
        if self.model_data is None:
            raise ConfigurationError("model_data is required to compile")
        target_suffix = target_instance_family.replace("_", "-")
        job_name = job_name or name_from_base(f"{self._base_name()}-{target_suffix}")
        input_config: dict[str, Any] = {
            "S3Uri": self._s3_model_data(job_name, with_code=False),
            "DataInputConfig": _json_or_str(input_shape),
            "Framework": framework.upper(),
        }
        if framework_version and _sends_framework_version(target_instance_family, framework):
            input_config["FrameworkVersion"] = _short_version(framework_version)
        output_config: dict[str, Any] = {
            "S3OutputLocation": output_path,
            "TargetDevice": target_instance_family,
        }
        if compiler_options is not None:
            output_config["CompilerOptions"] = _json_or_str(compiler_options)
        request: dict[str, Any] = {
            "CompilationJobName": job_name,
            "RoleArn": self.session.expand_role(role or self.role),
            "InputConfig": input_config,
            "OutputConfig": output_config,
            "StoppingCondition": {"MaxRuntimeInSeconds": compile_max_run},
        }
        if tags:
            request["Tags"] = tags
        with translate_client_errors():
            self.session.sagemaker_client.create_compilation_job(**request)
        self.compilation_job_name = job_name
        self._compile_timeout = float(compile_max_run) + 60.0
        self._compile_target = target_instance_family
        if wait:
            self.wait_for_compilation()
        return self

    def wait_for_compilation(self, timeout: float | None = None) -> Model:
        """Wait for the last compile() job; on COMPLETED adopt its artifact and inference image."""
        if self.compilation_job_name is None:
            raise ConfigurationError("compile() has not been called")
        description = waiters.wait_for_compilation_job(
            self.session.sagemaker_client,
            self.compilation_job_name,
            policy=self.session.poll_policy,
            timeout=timeout or self._compile_timeout,
        )
        self.model_data = description["ModelArtifacts"]["S3ModelArtifacts"]
        target = str(description.get("OutputConfig", {}).get("TargetDevice") or self._compile_target or "")
        # Like the SageMaker SDK, ml_* targets (but not Elastic Inference) deploy with InferenceImage.
        if target.startswith("ml_") and target != "ml_eia2" and description.get("InferenceImage"):
            self.image_uri = description["InferenceImage"]
        self.compiled_target = target
        return self

    def stop_compilation(self, wait: bool = True, timeout: float = 300.0) -> None:
        """Stop the running compilation job (StopCompilationJob) and optionally wait for STOPPED."""
        if self.compilation_job_name is None:
            raise ConfigurationError("compile() has not been called")
        with translate_client_errors():
            self.session.sagemaker_client.stop_compilation_job(CompilationJobName=self.compilation_job_name)
        if wait:
            # A job may finish before the stop lands; any terminal status ends the wait.
            terminal = ("STOPPED", "COMPLETED", "FAILED")
            waiters.wait_for_compilation_job(
                self.session.sagemaker_client,
                self.compilation_job_name,
                policy=self.session.poll_policy,
                timeout=timeout,
                success=terminal,
            )

    # -- deploy ----------------------------------------------------------------------------------

    def create(self, tags: list[dict[str, str]] | None = None) -> str:
        """CreateModel (an existing model of the same name is reused) and return the model name."""
        name = self.name or name_from_base(self._base_name())
        container: dict[str, Any] = {"Image": self._image(), "Environment": self._container_env()}
        model_data = self._s3_model_data(name, with_code=True)
        if model_data is not None:
            container["ModelDataUrl"] = model_data
        request: dict[str, Any] = {"ModelName": name, "PrimaryContainer": container}
        if self.role:
            request["ExecutionRoleArn"] = self.session.expand_role(self.role)
        if tags:
            request["Tags"] = tags
        try:
            with translate_client_errors():
                self.session.sagemaker_client.create_model(**request)
        except AwsError as exc:
            # The SageMaker SDK logs and reuses a model that already exists.
            if "Cannot create already existing model" not in exc.message:
                raise
            logger.info("Using already existing model: %s", name)
        self.name = name
        return name

    def deploy(
        self,
        initial_instance_count: int,
        instance_type: str,
        endpoint_name: str | None = None,
        serializer: BaseSerializer | None = None,
        deserializer: BaseDeserializer | None = None,
        wait: bool = True,
        update_endpoint: bool = False,
        variant_name: str = "AllTraffic",
        tags: list[dict[str, str]] | None = None,
        timeout: float = waiters.ENDPOINT_TIMEOUT,
    ) -> Predictor:
        """CreateModel, CreateEndpointConfig, CreateEndpoint (or UpdateEndpoint) and return a Predictor."""
        if update_endpoint and not endpoint_name:
            raise ConfigurationError("update_endpoint=True needs the endpoint_name of an existing endpoint")
        if instance_type.startswith("ml.inf") and not self.compiled_target:
            logger.warning("Your model is not compiled. Please compile your model before using Inferentia.")
        model_name = self.create(tags=tags)
        endpoint_name = endpoint_name or name_from_base(base_from_name(model_name))
        variant = {
            "VariantName": variant_name,
            "ModelName": model_name,
            "InitialInstanceCount": initial_instance_count,
            "InstanceType": instance_type,
            "InitialVariantWeight": 1,
        }
        client = self.session.sagemaker_client
        if update_endpoint:
            config_name = name_from_base(model_name)
            with translate_client_errors():
                client.create_endpoint_config(EndpointConfigName=config_name, ProductionVariants=[variant])
            try:
                with translate_client_errors():
                    client.describe_endpoint(EndpointName=endpoint_name)
            except ResourceNotFound as exc:
                raise ConfigurationError(
                    f"Endpoint with name {endpoint_name!r} does not exist; please use an existing endpoint name"
                ) from exc
            with translate_client_errors():
                client.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name)
        else:
            # The SageMaker SDK names the config after the endpoint.
            config_name = endpoint_name
            config_request: dict[str, Any] = {
                "EndpointConfigName": config_name,
                "ProductionVariants": [variant],
            }
            if tags:
                config_request["Tags"] = tags
            with translate_client_errors():
                client.create_endpoint_config(**config_request)
                client.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name, Tags=tags or [])
        self.endpoint_name = endpoint_name
        if wait:
            expected = config_name if update_endpoint else None
            waiters.wait_for_endpoint(
                self.session.sagemaker_client,
                endpoint_name,
                policy=self.session.poll_policy,
                timeout=timeout,
                expected_config=expected,
            )
        return Predictor(endpoint_name, self.session, serializer=serializer, deserializer=deserializer)

    def delete_model(self) -> None:
        """DeleteModel for this model's name."""
        if self.name is None:
            raise ConfigurationError("The model has not been created")
        with translate_client_errors():
            self.session.sagemaker_client.delete_model(ModelName=self.name)
