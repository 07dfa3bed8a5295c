"""Admin routes for the fleet: hosts, their emulated chips and NeuronCores, and the instance catalog."""

from __future__ import annotations

from flask import Blueprint, Response

from neurondock_platform.api import context
from neurondock_platform.api.admin import _params as params
from neurondock_platform.api.admin._auth import caller
from neurondock_platform.api.admin._errors import json_body
from neurondock_platform.services import costs, fleet, neuron_monitor


def _scope() -> str | None:
    # Admins see every replica; other accounts see their own and anonymous occupied capacity.
    who = caller()
    return None if who.is_admin else who.account_id


def host_view(host_id: str) -> fleet.HostView:
    return fleet.get_host(context.db(), context.settings(), host_id, account_id=_scope())


def register(bp: Blueprint) -> None:
    @bp.get("/hosts")
    def list_hosts() -> Response:
        views = fleet.list_hosts(context.db(), context.settings(), account_id=_scope())
        detail = params.choice("detail", ["true", "false"], "false") == "true"
        items, token = params.slice_page([v.to_json(detail=detail) for v in views], scope="hosts")
        return json_body({"items": items, "next_token": token, "emulated": True})

    @bp.get("/hosts/<host_id>")
    def describe_host(host_id: str) -> Response:
        return json_body(host_view(host_id).to_json())

    @bp.get("/hosts/<host_id>/neuron-ls")
    def neuron_ls(host_id: str) -> Response:
        return json_body(fleet.neuron_ls(host_view(host_id)))

    @bp.get("/hosts/<host_id>/neuron-monitor")
    def neuron_monitor_report(host_id: str) -> Response:
        period = params.integer("period", int(neuron_monitor.DEFAULT_PERIOD_SECONDS), minimum=1, maximum=3600)
        document = neuron_monitor.report(
            context.db(), host_view(host_id), region=context.settings().region, period_seconds=period
        )
        return json_body(document)

    @bp.get("/instance-types")
    def instance_types() -> Response:
        family = params.choice("family", list(costs.FAMILIES))
        return json_body({"items": costs.catalog_json([family] if family else costs.FAMILIES)})
