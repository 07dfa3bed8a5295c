"""Helpers shared by the operation modules: validated registration, the caller, list parameters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from neurondock_platform.api import context
from neurondock_platform.api.sagemaker.registry import Handler, operation
from neurondock_platform.services import pagination, validation


def sagemaker_operation(name: str) -> Callable[[Handler], Handler]:
    """Register a handler that only runs on a request valid against botocore's input shape."""

    def decorator(fn: Handler) -> Handler:
        def handler(params: dict[str, Any]) -> dict[str, Any]:
            validation.validate_input(name, params)
            return fn(validation.without_nulls(params))

        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        operation(name)(handler)
        return fn

    return decorator


def owner() -> dict[str, str]:
    """Return the caller's account and the platform's region as service keyword arguments."""
    return {"account_id": context.auth().account_id, "region": context.settings().region}


def timestamp(params: dict[str, Any], key: str) -> dt.datetime | None:
    """Return a validated timestamp parameter as aware UTC, or None when absent."""
    value = params.get(key)
    return None if value is None else validation.to_datetime(value)


def page_request(
    params: dict[str, Any],
    *,
    default_sort: str = "CreationTime",
    default_order: str = pagination.DESCENDING,
    default_max: int = pagination.DEFAULT_MAX_RESULTS,
) -> pagination.PageRequest:
    """Build a PageRequest from validated List* parameters."""
    return pagination.PageRequest(
        max_results=params.get("MaxResults") or default_max,
        next_token=params.get("NextToken") or None,
        sort_by=params.get("SortBy") or default_sort,
        sort_order=params.get("SortOrder") or default_order,
    )


def listing(key: str, page: pagination.Page[Any], shape: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Return a List* response: the shaped items under ``key`` and NextToken when there is more."""
    out: dict[str, Any] = {key: [shape(item) for item in page.items]}
    if page.next_token:
        out["NextToken"] = page.next_token
    return out
