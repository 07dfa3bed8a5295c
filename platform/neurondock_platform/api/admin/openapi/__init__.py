"""The OpenAPI 3.1 document of the admin API, written by hand beside the routes it describes.

``tests/integration/admin`` checks that every route of the blueprint is documented here and that the
server's answers validate against these schemas (and fuzzes it with schemathesis).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from neurondock_platform.api.admin.openapi.paths import paths
from neurondock_platform.api.admin.openapi.schemas import schemas

VERSION = "1.0.0"


@functools.cache
def _document_template() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "neurondock admin API",
            "version": VERSION,
            "description": (
                "Operator API of neurondock: models, endpoint configs, endpoints with their replicas and "
                "emulated NeuronCores, compilation jobs, hosts, costs, logs, artifacts and accounts. "
                "Authenticate with SigV4 (any service name, the account's access key) or with "
                '\'Authorization: Bearer <token>\' from POST /tokens. Errors are {"error": {"code", "message"}}. '
                "Everything about Inferentia is emulated or projected and says so."
            ),
        },
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A token from POST /tokens"},
                "sigv4": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "AWS Signature Version 4 with a neurondock access key",
                },
            },
        },
        "security": [{"bearer": []}, {"sigv4": []}],
    }


def document(public_url: str) -> dict[str, Any]:
    """Return the OpenAPI document with the server URL of this deployment."""
    doc = copy.deepcopy(_document_template())
    doc["servers"] = [{"url": f"{public_url.rstrip('/')}/api/v1"}]
    return doc
