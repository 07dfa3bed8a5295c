"""A small world of resources for service-level tests: a model, a config and an endpoint, optionally running.

The rows are made through the services (and the endpoint's status moved through ``endpoint_status``), then,
with ``running``, a host and Ready replica rows are written as a host agent would report them, with this test
process standing in for each replica's pid.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.config import Settings
from neurondock_platform.db import session_scope, utcnow
from neurondock_platform.models import Endpoint, EndpointStatus, Host, Replica, ReplicaState
from neurondock_platform.services import deploy, endpoint_status
from tests.conftest import ACCOUNT_ID

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"


def build_endpoint(
    session_factory: sessionmaker[Session],
    settings: Settings,
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
    """Create a model, config and endpoint through the services; with ``running``, put its replicas Ready here."""
    with session_scope(session_factory) as session:
        deploy.create_model(
            session,
            account_id=account_id,
            region=settings.region,
            name=f"{name}-model",
            image=IMAGE,
            model_data_url=model_data_url,
        )
        endpoint = deploy.deploy_model(
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
            endpoint_status.transition(session, row, EndpointStatus.IN_SERVICE)
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
