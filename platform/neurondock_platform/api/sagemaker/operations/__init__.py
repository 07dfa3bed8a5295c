"""One module per resource; importing them fills the operation registry."""

from neurondock_platform.api.sagemaker.operations import (  # noqa: F401  (registers the handlers)
    compilation_jobs,
    contexts,
    endpoint_configs,
    endpoints,
    models,
    tags,
)
