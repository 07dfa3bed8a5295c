"""neurondock SDK: compile, deploy and invoke PyTorch models on neurondock or SageMaker, with boto3 alone."""

from __future__ import annotations

from neurondock import deserializers, errors, packaging, serializers, waiters
from neurondock._names import name_from_base
from neurondock.deserializers import (
    BytesDeserializer,
    JSONDeserializer,
    NumpyDeserializer,
    StringDeserializer,
    TorchTensorDeserializer,
)
from neurondock.errors import (
    AwsError,
    ConfigurationError,
    ModelError,
    ModelStreamError,
    ResourceNotFound,
    SdkError,
    UnexpectedStatusError,
    ValidationError,
    WaitError,
    WaitTimeoutError,
)
from neurondock.model import Model, default_image_uri
from neurondock.packaging import ModelPackage, package_folder, package_module
from neurondock.predictor import Predictor
from neurondock.serializers import (
    CSVSerializer,
    IdentitySerializer,
    JSONSerializer,
    NumpySerializer,
    StringSerializer,
    TorchTensorSerializer,
)
from neurondock.session import Session

__version__ = "0.1.0"

__all__ = [
    "AwsError",
    "BytesDeserializer",
    "CSVSerializer",
    "ConfigurationError",
    "IdentitySerializer",
    "JSONDeserializer",
    "JSONSerializer",
    "Model",
    "ModelError",
    "ModelPackage",
    "ModelStreamError",
    "NumpyDeserializer",
    "NumpySerializer",
    "Predictor",
    "ResourceNotFound",
    "SdkError",
    "Session",
    "StringDeserializer",
    "StringSerializer",
    "TorchTensorDeserializer",
    "TorchTensorSerializer",
    "UnexpectedStatusError",
    "ValidationError",
    "WaitError",
    "WaitTimeoutError",
    "__version__",
    "default_image_uri",
    "deserializers",
    "errors",
    "name_from_base",
    "package_folder",
    "package_module",
    "packaging",
    "serializers",
    "waiters",
]
