"""The database gate: children `up` starts beside its migrations wait for them, or exit when they fail."""

from __future__ import annotations

import select

import pytest

from neurondock_platform import database_gate


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_gated_child_goes_on_only_once_the_gates_open():
    gates = database_gate.Gates()
    first, second = gates.reader(), gates.reader()
    assert not _readable(first) and not _readable(second), "wait would block until the database is ready"

    gates.open()

    database_gate.wait(first)
    database_gate.wait(second)


def test_a_gate_closed_without_opening_makes_the_child_exit():
    gates = database_gate.Gates()
    fd = gates.reader()

    gates.close()

    with pytest.raises(SystemExit) as exited:
        database_gate.wait(fd)
    assert exited.value.code == 1


def test_no_gate_means_no_wait_and_the_variable_is_not_passed_on(monkeypatch):
    database_gate.wait(None)
    monkeypatch.setenv(database_gate.ENV, "7")

    assert database_gate.take() == 7
    assert database_gate.take() is None, "a grandchild must not inherit the gate's descriptor number"


def test_the_database_is_prepared_in_a_fork_which_keeps_what_it_imports_to_itself():
    import os
    import sys
    import types

    read, write = os.pipe()
    name = f"imported_while_preparing_{os.getpid()}"

    def prepare() -> None:
        # As Alembic would be imported, for an older database.
        sys.modules[name] = types.ModuleType(name)

    pid = database_gate.prepare_in_fork(write, prepare)

    assert database_gate.prepared(read) is None
    database_gate.joined(pid)
    assert name not in sys.modules, "the API keeps none of what preparing imported"


def test_a_failed_preparation_tells_the_supervisor_why_and_the_api_exits():
    import os

    read, write = os.pipe()

    def prepare() -> None:
        raise RuntimeError("unable to open database file")

    pid = database_gate.prepare_in_fork(write, prepare)

    why = database_gate.prepared(read)
    assert why is not None and "RuntimeError: unable to open database file" in why
    with pytest.raises(SystemExit) as exited:
        database_gate.joined(pid)
    assert exited.value.code == 1


def test_an_api_that_exits_before_preparing_is_reported_as_such():
    import os

    read, write = os.pipe()
    os.close(write)

    assert database_gate.prepared(read) == "the API exited before it prepared the database"
