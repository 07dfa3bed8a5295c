"""Admin-API fixtures: signed clients for root and a second account, and a small world of resources."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from tests.conftest import ACCOUNT_ID
from tests.integration.admin.admin_helpers import IMAGE, AdminClient


@pytest.fixture
def api(client) -> AdminClient:
    """The root (admin) account, signing with SigV4."""
    return AdminClient(client)


@dataclass
class Tenant:
    account_id: str
    access_key: str
    secret_key: str
    api: AdminClient


@pytest.fixture
def tenant(session_factory, client) -> Tenant:
    """A second, non-admin account with one access key."""
    from neurondock_platform.db import session_scope
    from neurondock_platform.services.accounts import create_account

    with session_scope(session_factory) as session:
        account, key = create_account(session, "tenant")
        ids = (account.id, key.access_key_id, key.secret_access_key)
    return Tenant(ids[0], ids[1], ids[2], AdminClient(client, ids[1], ids[2]))


@pytest.fixture
def world(session_factory, settings) -> Callable[..., Any]:
    """Create a model, config and endpoint through the services; optionally mark it running on a host."""
    from neurondock_platform.db import session_scope, utcnow
    from neurondock_platform.models import Endpoint, EndpointStatus, Host, Replica, ReplicaState
    from neurondock_platform.services import admin

    def build(
        name: str = "e1",
        *,
        instance_type: str = "ml.inf1.6xlarge",
        count: int = 1,
        account_id: str = ACCOUNT_ID,
        running: bool = True,
        model_data_url: str = "s3://models/m/model.tar.gz",
        host_chips: int = 16,
        replicas_per_instance: int = 1,
    ) -> dict[str, Any]:
        with session_scope(session_factory) as session:
            admin.create_model(
                session,
                account_id=account_id,
                region=settings.region,
                name=f"{name}-model",
                image=IMAGE,
                model_data_url=model_data_url,
            )
            endpoint = admin.deploy_model(
                session,
                account_id=account_id,
                region=settings.region,
                name=name,
                model_name=f"{name}-model",
                instance_type=instance_type,
                instance_count=count,
            )
            endpoint_id = endpoint.id
        replica_ids: list[int] = []
        if running:
            with session_scope(session_factory) as session:
                host = session.get(Host, settings.host_id)
                if host is None:
                    session.add(
                        Host(
                            id=settings.host_id,
                            address="127.0.0.1",
                            chips=host_chips,
                            vcpus=2,
                            memory_mb=8192,
                            agent_pid=os.getpid(),
                        )
                    )
                else:
                    host.last_heartbeat = utcnow()
                row = session.get(Endpoint, endpoint_id)
                assert row is not None
                row.status = EndpointStatus.IN_SERVICE
                for variant in row.variants:
                    variant.current_instance_count = variant.desired_instance_count
                    variant.current_weight = variant.desired_weight
                    variant.variant_status = None
                    for ordinal in range(variant.desired_instance_count * replicas_per_instance):
                        instance, group = divmod(ordinal, replicas_per_instance)
                        replica = Replica(
                            endpoint_id=row.id,
                            variant_id=variant.id,
                            host_id=settings.host_id,
                            ordinal=ordinal,
                            desired_state="running",
                            state=ReplicaState.READY,
                            address="127.0.0.1:1",
                            pid=os.getpid(),
                            setup_seconds=1.25,
                            log_tail="stored tail line\ninvocation failed with status 500: stored boom",
                            extra={"container_hash": "x", "standby": False, "instance": instance, "group": group},
                        )
                        session.add(replica)
                        session.flush()
                        replica_ids.append(replica.id)
        return {"endpoint_id": endpoint_id, "replica_ids": replica_ids, "name": name}

    return build
