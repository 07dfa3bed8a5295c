"""The import rules of docs/architecture.md, checked in fresh interpreters and by import-linter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_sdk_loads_no_platform_dependencies():
    loaded = _loaded_after("import neurondock")
    assert not loaded & {
        "flask",
        "sqlalchemy",
        "celery",
        "torch",
        "neurondock_platform",
        "neurondock_workers",
    }


def test_platform_never_loads_torch_or_workers():
    loaded = _loaded_after("import neurondock_platform.server, neurondock_platform.cli, neurondock_platform.app")
    assert "torch" not in loaded
    assert "neurondock_workers" not in loaded


def test_api_and_worker_start_without_boto3_or_torch():
    # boto3 costs each process ~10 MB it keeps; they build S3 clients only when a request or job needs one.
    loaded = _loaded_after("import neurondock_platform.server, neurondock_workers.tasks, neurondock_workers.cli")
    assert not loaded & {"boto3", "s3transfer", "torch", "numpy"}


def test_the_host_process_reads_model_data_without_botocore():
    # botocore with S3's parsed model cost the host process ~13 MB for good, then a ~41 MB child while
    # replicas started (docs/measured.md): the agent's own HEAD and GET need neither.
    loaded = _loaded_after(
        "import neurondock_workers.cli, neurondock_workers.tasks, neurondock_workers.hosting.agent, "
        "neurondock_workers.hosting.launcher"
    )
    assert not loaded & {"botocore", "boto3", "urllib3", "s3transfer"}


def test_source_roots_hold_no_python_files():
    for root in ("platform", "sdk", "workers"):
        assert not list((ROOT / root).glob("*.py")), f"{root}/ must not hold .py files (it would shadow stdlib)"
    assert not list(ROOT.glob("tests/**/platform")), "no test directory may be named 'platform'"


def test_stdlib_platform_is_not_shadowed():
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.strip()


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return set(out.stdout.split())


# What `up`'s supervisor would keep for its whole life if it imported them once (docs/measured.md, "Memory
# by process"): an HTTP client with TLS and email parsing, OpenSSL's hashes, logging, the operator
# commands, the ORM, and what ctypes.util and getaddrinfo's idna codec bring.
NOT_IN_THE_SUPERVISOR = {
    "neurondock_platform.cli_commands",
    "urllib.request",
    "http.client",
    "email",
    "ssl",
    "hashlib",
    "_hashlib",
    "secrets",
    "logging",
    "concurrent.futures",
    "ctypes.util",
    "tempfile",
    "unicodedata",
    "encodings.idna",
    "sqlalchemy",
    "alembic",
}


def test_up_supervisor_does_its_work_without_what_it_would_keep(tmp_path):
    # What `neurondock up` runs in its own process: the command line, the children's environment (the
    # root identity), the port check, a child spawned, the readiness probe (refused here) and the banner.
    code = f"""
from pathlib import Path
from neurondock_platform.cli import main
from neurondock_platform import supervisor
from neurondock_platform.config import Settings

assert main.get_command(None, "up") is not None
settings = Settings.from_env(data_dir=Path({str(tmp_path)!r}), port=9)
supervisor.child_env(settings, root_keys=True)
supervisor.port_in_use(settings.host, settings.port)
supervisor.Child("true", ["true"], Path({str(tmp_path / "true.log")!r})).start({{}})
assert not supervisor.answers_ping("127.0.0.1", 9)
supervisor.banner(settings, {{"mode": "off", "describe": "off"}})
"""
    assert _modules_after(code) & NOT_IN_THE_SUPERVISOR == set()


def test_the_supervisors_watch_keeps_none_of_the_command_lines_imports(tmp_path):
    # What `up` is once its children run (watch.hand_over): it lives as long as the platform, and only
    # what watching needs may stay (docs/supervision.md).
    code = f"""
from neurondock_platform import watch
child = watch.Child("true", ["true"], {str(tmp_path / "true.log")!r})
child.start({{}})
assert child.wait(10)
watch.stop_all([child], 1.0)
"""
    kept = {"click", "neurondock_platform.config", "neurondock_platform.supervisor", "dataclasses", "pathlib"}
    # typing: 0.45 MB RSS of a 13 MB watch, imported for annotations only (docs/measured.md).
    assert _modules_after(code) & (NOT_IN_THE_SUPERVISOR | kept | {"typing"}) == set()


def test_operator_commands_load_when_named():
    loaded = _modules_after(
        "from neurondock_platform.cli import main\n"
        "assert main.get_command(None, 'endpoints') is not None\n"
        "assert 'neuron-ls' in main.list_commands(None)"
    )
    assert "neurondock_platform.cli_commands" in loaded


def test_a_sqlite_platform_loads_no_other_database_dialect(tmp_path):
    # Each costs every process that loads it 1-2 MB it keeps (docs/measured.md, "The API and the host
    # process, leaner"): the metric store's upsert and kombu's broker tables (a MySQL table option) did.
    code = f"""
import neurondock_platform.server, neurondock_workers.hosting.agent, neurondock_workers.tasks
from neurondock_platform import models
from neurondock_platform.db import Base, make_engine, make_sessionmaker, session_scope
from neurondock_platform.dispatch import CeleryDispatcher
from neurondock_platform.services import metrics

engine = make_engine("sqlite:///{tmp_path}/db.sqlite")
Base.metadata.create_all(engine)
with session_scope(make_sessionmaker(engine)) as session:
    key = metrics.StreamKey("123456789012", "AWS/SageMaker", "Invocations", (("EndpointName", "e"),))
    assert metrics.stream_ids(session, [key])
CeleryDispatcher("sqla+sqlite:///{tmp_path}/broker.sqlite").send("neurondock.nothing")
"""
    loaded = _modules_after(code)
    assert "sqlalchemy.dialects.sqlite" in loaded
    assert not {m for m in loaded if m.startswith(("sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.mysql"))}


def test_the_api_sends_tasks_without_billiard(tmp_path):
    # kombu takes billiard's after-fork hook when it can import it; only Celery's worker needs billiard.
    code = f"""
from neurondock_platform import optional_imports
optional_imports.refuse(api=True)
import neurondock_platform.server
from kombu import Connection
from neurondock_platform.broker import resolve_broker_url
from neurondock_platform.dispatch import CeleryDispatcher
url = "sqla+sqlite:///{tmp_path}/broker.sqlite"
CeleryDispatcher(url).send("neurondock.nothing")
with Connection(resolve_broker_url(url)) as connection:
    message = connection.SimpleQueue("neurondock").get(timeout=5)
    assert message.headers["task"] == "neurondock.nothing"
assert sys.modules["billiard"] is None and "cffi" not in sys.modules
"""
    assert "kombu.transport.sqlalchemy" in _modules_after(code)


def test_the_api_validates_requests_without_botocores_model_code():
    # botocore.model brings botocore's HTTP, auth and date code (urllib3, dateutil, awscrt), ~2 MB the
    # API would keep for good; it reads only the shapes (docs/measured.md).
    code = """
import neurondock_platform.server
from neurondock_platform import catalog
from neurondock_platform.services import validation
validation.validate_input("DescribeEndpoint", {"EndpointName": "e"})
assert "ml.c5.large" in catalog.all_instance_types()
catalog.service_model("cloudwatch").operation_model("PutMetricData").input_shape.members
"""
    loaded = _modules_after(code)
    assert not loaded & {"botocore.model", "botocore.loaders", "urllib3", "dateutil"}


def test_the_api_forks_to_prepare_the_database_before_its_web_stack_is_imported(tmp_path):
    # The fork prepares while the API imports the rest (docs/supervision.md, "Start-up"): taken any
    # later, the preparation would wait for those imports, on the cores the launch waits for.
    code = f"""
import os
from pathlib import Path
from neurondock_platform import database_gate
from neurondock_platform.config import Settings
from neurondock_platform.migrate import prepare_in_fork
read, write = os.pipe()
settings = Settings.from_env(data_dir=Path({str(tmp_path)!r}))
pid = prepare_in_fork(settings, write)
assert database_gate.prepared(read) is None
database_gate.joined(pid)
"""
    loaded = _modules_after(code)
    assert "neurondock_platform.models" in loaded
    assert not loaded & {"flask", "werkzeug", "uvicorn", "a2wsgi", "kombu", "neurondock_platform.app"}


def test_the_api_and_the_host_process_refuse_the_optional_packages_they_never_use():
    # Libraries import them when installed (kombu's YAML serializer, Celery's bootsteps and debug
    # helpers); each would stay for good in a process that lives as long as the platform.
    code = """
from neurondock_platform import optional_imports
optional_imports.refuse()
import neurondock_platform.server, neurondock_workers.hosting.agent, neurondock_workers.tasks
import celery.bootsteps, celery.utils.debug, celery.worker, kombu.serialization
from neurondock_workers.celery_app import configure
loaded = {name for name, module in sys.modules.items() if module is not None}
assert "celery.worker" in loaded and not loaded & {"yaml", "greenlet", "psutil"}, loaded
"""
    _modules_after(code)
