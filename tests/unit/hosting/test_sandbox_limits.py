"""A replica's limits come from its instance type (sandbox.limits_for, docs/sandbox.md "Limits")."""

from __future__ import annotations

import resource

from neurondock_workers.sandbox import Limits, limits_for, memory_limit_note

GIB = 1024**3


def test_memory_is_the_instances_share_and_files_scale_with_vcpus() -> None:
    # ml.inf1.xlarge: 8 GiB and 4 vCPUs, split between its 4 NeuronCore replicas.
    assert limits_for("ml.inf1.xlarge", 4) == Limits(memory_bytes=2 * GIB, processes=256, open_files=4096)
    # ml.inf1.24xlarge: 192 GiB and 96 vCPUs, one replica per chip group of 16.
    assert limits_for("ml.inf1.24xlarge", 16) == Limits(memory_bytes=12 * GIB, processes=64 * 96, open_files=1024 * 96)
    assert limits_for("ml.c5.large").memory_bytes == 4 * GIB
    assert limits_for("ml.c5.large", 2).memory_bytes == 2 * GIB, "two workers of one instance halve it"


def test_without_a_uid_of_its_own_no_process_limit_and_unknown_types_keep_the_floors() -> None:
    assert limits_for("ml.c5.large", per_uid=False).processes is None
    assert limits_for("ml.unknown.type") == Limits(memory_bytes=None, processes=256, open_files=4096)
    assert limits_for(None, per_uid=False).processes is None
    assert limits_for("ml.inf1.xlarge", 4).describe() == "memory 2048 MiB, processes 256, open files 4096"


def test_an_allocation_past_the_limit_names_the_limit() -> None:
    torch_words = RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried to allocate 5 GB")
    assert memory_limit_note(MemoryError()) == "", "no limit set (the platform's own processes)"
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (64 * GIB, hard))  # above this process; only the soft limit moves
    try:
        note = memory_limit_note(MemoryError())
        assert note.startswith(" (this replica may use 65536 MiB: its share of the instance type's memory")
        assert memory_limit_note(torch_words) == note
        assert memory_limit_note(ValueError("bad input")) == ""
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
