"""List* operations: pagination through every page, sorting, NameContains, status and time filters."""

from __future__ import annotations

import datetime as dt

import pytest
from tests.integration.control_plane.cp_helpers import ACCOUNT, IMAGE, REGION, variant

LISTS = {
    "ListModels": ("Models", "ModelName"),
    "ListEndpointConfigs": ("EndpointConfigs", "EndpointConfigName"),
    "ListEndpoints": ("Endpoints", "EndpointName"),
}


def walk(ok, operation, params=None):
    """Follow NextToken to the end; return the names in order and the page sizes."""
    key, name_key = LISTS[operation]
    params = dict(params or {})
    names, sizes = [], []
    for _ in range(100):  # a token that never ends (or repeats a row) must fail, not hang
        page = ok(operation, params)
        names += [item[name_key] for item in page[key]]
        sizes.append(len(page[key]))
        if "NextToken" not in page:
            return names, sizes
        params["NextToken"] = page["NextToken"]
    raise AssertionError(f"pagination did not end: {names[:30]}")


@pytest.fixture
def many(db):
    """23 models, configs and endpoints named r00…r22, created one second apart (r00 oldest).

    Built through the services in one transaction (the HTTP path is covered elsewhere) to stay fast.
    """
    from neurondock_platform.services import endpoint_configs, endpoints, models

    names = [f"r{i:02d}" for i in range(23)]
    owner = {"account_id": ACCOUNT, "region": REGION}

    def at(seconds: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(seconds, dt.UTC)

    def build(session):
        base = models.create_model(session, **owner, name="base", primary_container={"Image": IMAGE})
        base.created_at = at(1_600_000_000)
        for i, name in enumerate(names):
            model = models.create_model(session, **owner, name=name, primary_container={"Image": IMAGE})
            config = endpoint_configs.create_endpoint_config(
                session, **owner, name=name, production_variants=[variant(model="base")]
            )
            endpoint = endpoints.create_endpoint(session, **owner, name=name, config_name=name)
            model.created_at = config.created_at = endpoint.created_at = at(1_700_000_000 + i)
            endpoint.last_modified_at = at(1_700_100_000 + i)

    db(build)
    return names


def test_walk_all_pages_newest_first_by_default(ok, many):
    for operation in LISTS:
        names, sizes = walk(ok, operation, {"NameContains": "r"})
        assert names == list(reversed(many))
        assert sizes == [10, 10, 3]  # the default MaxResults is 10


def test_walk_by_name_ascending_with_page_size(ok, many):
    for operation in LISTS:
        names, sizes = walk(ok, operation, {"SortBy": "Name", "SortOrder": "Ascending", "MaxResults": 7})
        extra = ["base"] if operation == "ListModels" else []
        assert names == sorted(many + extra)
        assert sizes == [7, 7, 7, 2 + len(extra)]


def test_max_results_100_returns_everything_without_token(ok, many):
    page = ok("ListModels", {"MaxResults": 100})
    assert len(page["Models"]) == 24
    assert "NextToken" not in page
    assert set(page["Models"][0]) == {"ModelName", "ModelArn", "CreationTime"}


def test_pages_stay_stable_when_rows_are_added_mid_walk(ok, many):
    first = ok("ListEndpointConfigs", {"SortBy": "CreationTime", "SortOrder": "Ascending", "MaxResults": 5})
    ok("CreateEndpointConfig", {"EndpointConfigName": "late", "ProductionVariants": [variant(model="base")]})
    rest, _ = walk(
        ok,
        "ListEndpointConfigs",
        {
            "SortBy": "CreationTime",
            "SortOrder": "Ascending",
            "MaxResults": 5,
            "NextToken": first["NextToken"],
        },
    )
    names = [c["EndpointConfigName"] for c in first["EndpointConfigs"]] + rest
    assert names == [*many, "late"]


def test_name_contains_is_case_insensitive(ok, many):
    names, _ = walk(ok, "ListEndpoints", {"NameContains": "R1", "SortBy": "Name", "SortOrder": "Ascending"})
    assert names == [f"r{i}" for i in range(10, 20)]
    assert ok("ListModels", {"NameContains": "zzz"}) == {"Models": []}


def test_creation_time_filters_are_exclusive(ok, many):
    params = {
        "CreationTimeAfter": 1_700_000_003,
        "CreationTimeBefore": 1_700_000_007,
        "SortOrder": "Ascending",
    }
    for operation in LISTS:
        names, _ = walk(ok, operation, params)
        assert names == ["r04", "r05", "r06"], operation


def test_time_filters_accept_iso_8601(ok, many):
    names, _ = walk(ok, "ListModels", {"CreationTimeBefore": "2023-11-14T22:13:21Z"})
    assert names == ["r00", "base"]


def test_last_modified_filters_and_status_sort(ok, many, endpoint_row):
    from neurondock_platform.models import EndpointStatus

    names, _ = walk(
        ok,
        "ListEndpoints",
        {
            "LastModifiedTimeAfter": 1_700_100_019,
            "LastModifiedTimeBefore": 1_700_100_022,
            "SortOrder": "Ascending",
        },
    )
    assert names == ["r20", "r21"]
    endpoint_row("r05", status=EndpointStatus.IN_SERVICE)
    endpoint_row("r07", status=EndpointStatus.FAILED)
    assert walk(ok, "ListEndpoints", {"StatusEquals": "InService"})[0] == ["r05"]
    by_status, _ = walk(ok, "ListEndpoints", {"SortBy": "Status", "SortOrder": "Ascending", "MaxResults": 4})
    assert by_status[0] == "r00"  # "Creating" sorts first; ties fall back to creation order
    assert by_status[-2:] == ["r07", "r05"]  # then "Failed", then "InService"
    assert len(by_status) == 23


INVALID_LIST_PARAMS = [
    (
        "ListModels",
        {"MaxResults": 0},
        "Value '0' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1",
    ),
    (
        "ListEndpoints",
        {"MaxResults": 101},
        "Value '101' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 100",
    ),
    (
        "ListEndpoints",
        {"SortBy": "Size"},
        "Value 'Size' at 'sortBy' failed to satisfy constraint: "
        "Member must satisfy enum value set: [Name, CreationTime, Status]",
    ),
    (
        "ListModels",
        {"SortBy": "Status"},
        "Member must satisfy enum value set: [Name, CreationTime]",
    ),
    (
        "ListEndpointConfigs",
        {"SortOrder": "Up"},
        "Member must satisfy enum value set: [Ascending, Descending]",
    ),
    ("ListEndpoints", {"StatusEquals": "Running"}, "Value 'Running' at 'statusEquals'"),
    (
        "ListModels",
        {"NameContains": "a_b"},
        "Value 'a_b' at 'nameContains' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: ^[a-zA-Z0-9-]+",
    ),
    (
        "ListModels",
        {"CreationTimeAfter": "yesterday"},
        "at 'creationTimeAfter' failed to satisfy constraint",
    ),
    ("ListModels", {"NextToken": "x" * 8193}, "Member must have length less than or equal to 8192"),
    ("ListModels", {"NextToken": "not-a-token"}, "Invalid pagination token"),
    ("ListEndpoints", {"NextToken": "eyJzIjoxfQ"}, "Invalid pagination token"),
]


def test_list_parameter_validation(fails):
    for operation, params, expected in INVALID_LIST_PARAMS:
        assert expected in fails(operation, params)


def test_a_token_only_works_for_its_own_query(ok, fails, many):
    token = ok("ListModels", {"MaxResults": 2})["NextToken"]
    assert "Invalid pagination token" in fails("ListModels", {"MaxResults": 2, "SortBy": "Name", "NextToken": token})
    assert "Invalid pagination token" in fails("ListEndpoints", {"NextToken": token})
