"""Opaque NextToken keyset pagination, on an in-memory SQLite table."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from neurondock_platform import models
from neurondock_platform.db import Base
from neurondock_platform.errors import ValidationException
from neurondock_platform.services import pagination


@pytest.fixture
def session():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine, tables=[models.Account.__table__, models.Model.__table__])
    with Session(engine) as s:
        s.add(models.Account(id="123456789012", name="root"))
        # Two rows share each creation second so ties must fall back to the id.
        for i in range(25):
            s.add(
                models.Model(
                    account_id="123456789012",
                    name=f"m{i:02d}",
                    arn=f"arn:m{i:02d}",
                    created_at=dt.datetime.fromtimestamp(1_700_000_000 + i // 2, dt.UTC),
                )
            )
        s.commit()
        yield s
    engine.dispose()


def walk(session, request: pagination.PageRequest, column, scope="q") -> tuple[list[str], list[int]]:
    names, sizes = [], []
    for _ in range(100):  # a token that never ends (or repeats a row) must fail, not hang
        page = pagination.paginate(
            session,
            select(models.Model),
            sort_column=column,
            id_column=models.Model.id,
            request=request,
            scope=scope,
        )
        names += [m.name for m in page.items]
        sizes.append(len(page.items))
        if page.next_token is None:
            return names, sizes
        request = pagination.PageRequest(request.max_results, page.next_token, request.sort_by, request.sort_order)
    raise AssertionError(f"pagination did not end: {names[:30]}")


@pytest.mark.parametrize("order", [pagination.ASCENDING, pagination.DESCENDING])
@pytest.mark.parametrize("size", [1, 4, 10, 25, 100])
def test_walk_visits_every_row_once_in_order(session, order, size):
    request = pagination.PageRequest(max_results=size, sort_by="CreationTime", sort_order=order)
    names, sizes = walk(session, request, models.Model.created_at)
    expected = [f"m{i:02d}" for i in range(25)]
    assert names == (expected if order == pagination.ASCENDING else expected[::-1])
    assert sum(sizes) == 25 and all(s == size for s in sizes[:-1])
    assert sizes[-1] == (25 % size or min(size, 25))


def test_sort_by_name(session):
    names, _ = walk(
        session,
        pagination.PageRequest(max_results=7, sort_by="Name", sort_order="Descending"),
        models.Model.name,
    )
    assert names == sorted(names, reverse=True) and len(names) == 25


def test_tokens_are_opaque_strings_bound_to_their_query(session):
    request = pagination.PageRequest(max_results=3)
    page = pagination.paginate(
        session,
        select(models.Model),
        sort_column=models.Model.created_at,
        id_column=models.Model.id,
        request=request,
        scope="a",
    )
    assert page.next_token and "m0" not in page.next_token and len(page.next_token) < 200
    other = pagination.PageRequest(max_results=3, next_token=page.next_token)
    with pytest.raises(ValidationException, match="Invalid pagination token"):
        pagination.paginate(
            session,
            select(models.Model),
            sort_column=models.Model.created_at,
            id_column=models.Model.id,
            request=other,
            scope="b",
        )


@pytest.mark.parametrize(
    "token",
    [
        "garbage!!",
        pagination.encode_token({"s": "q"}),
        pagination.encode_token({"s": "q", "i": "1", "v": ["v", "x"]}),
        pagination.encode_token({"s": "q", "i": True, "v": ["v", "x"]}),
        pagination.encode_token({"s": "q", "i": 1, "v": ["dt", "not a date"]}),
        pagination.encode_token({"s": "q", "i": 1, "v": ["??", 1]}),
        pagination.encode_token({"s": "q", "i": 1, "v": "flat"}),
        pagination.encode_token(["not", "a", "dict"]),  # type: ignore[arg-type]
    ],
)
def test_bad_tokens_are_validation_errors(session, token):
    with pytest.raises(ValidationException, match="Invalid pagination token"):
        pagination.paginate(
            session,
            select(models.Model),
            sort_column=models.Model.created_at,
            id_column=models.Model.id,
            request=pagination.PageRequest(next_token=token),
            scope="q",
        )


def test_token_round_trip_and_fingerprint():
    payload = {"s": "x", "v": ["v", "name"], "i": 3}
    assert pagination.decode_token(pagination.encode_token(payload)) == payload
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert pagination.fingerprint(a=1, b=when) == pagination.fingerprint(b=when, a=1)
    assert pagination.fingerprint(a=1) != pagination.fingerprint(a=2)
