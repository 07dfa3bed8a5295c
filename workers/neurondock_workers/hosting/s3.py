"""The S3 clients the host agent fetches model data with: acting as the model's owner (``s3_client``)."""

from __future__ import annotations

from neurondock_platform.s3_client import (
    OwnerClientFactory,
    OwnerClients,
    StoreKeys,
    StoreOwner,
    client_for,
    make_s3_client,
    warm,
)

__all__ = ["OwnerClientFactory", "OwnerClients", "StoreKeys", "StoreOwner", "client_for", "make_s3_client", "warm"]
