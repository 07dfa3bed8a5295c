"""Run a compile in a child process with wall-clock, memory and CPU limits, killable at any time.

A hostile or broken model can exhaust memory, spin forever or crash the interpreter; none of that may
reach the Celery worker. The child sets `resource.setrlimit` before importing torch, reports its
result or typed error as JSON, and runs in its own session so `stop()` kills it and any helpers.

With an enabled ``sandbox`` the child also runs in bubblewrap (docs/sandbox.md): a uid of its own,
no network, only its input (read-only) and its work directory (writable) besides the system, the
Python environment and a private /tmp. What it leaves behind is then untrusted: before this process
reads anything from the work directory, every symbolic link and special file there is removed, and
the paths its result names must lie inside it — else a child could point the worker (which uploads
the artifact to the job's output) at a file only the worker can read. The compile cache is written
here, never by the child.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from neurondock_workers.sandbox import Bind, Jail, Sandbox, scrubbed_environment

from ._cache import CompileCache
from ._compile import CompileResult
from .errors import (
    CompilationError,
    CompilerError,
    CompileResourceError,
    CompileStoppedError,
    CompileTimeoutError,
    error_from_dict,
)

DEFAULT_MEMORY_LIMIT = 8 * 1024**3
STOP_GRACE_S = 3.0
# Threads and processes a sandboxed compile may have (torch's pools plus the measuring loop).
COMPILE_PROCESSES = 256


@dataclass(frozen=True)
class CompileRequest:
    """Everything the child needs; plain JSON so it crosses the process boundary as a file."""

    model_path: str
    input_config: Any
    workdir: str
    target: str = "ml_inf1"
    compiler_options: Any = None
    cache_dir: str | None = None
    torch_threads: int = 1
    measure_budget_s: float = 1.5


class CompileProcess:
    """One compile in a child process; `wait()` enforces MaxRuntimeInSeconds, `stop()` kills it."""

    def __init__(
        self,
        request: CompileRequest,
        *,
        max_runtime_s: float | None = None,
        memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT,
        cpu_limit_s: int | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.request = request
        self.max_runtime_s = max_runtime_s
        self.memory_limit_bytes = memory_limit_bytes
        self.cpu_limit_s = cpu_limit_s
        # The child's own files (request, result, output); "sandbox" is the directory's old name.
        self.sandbox = Path(request.workdir) / "sandbox"
        self.jail = sandbox if sandbox is not None and sandbox.enabled else None
        self._uid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._outcome: str | None = None  # "stopped" | "timeout" once we killed it

    @property
    def pid(self) -> int | None:
        """Return the child's pid once started."""
        return self._proc.pid if self._proc else None

    def start(self) -> CompileProcess:
        """Launch the child."""
        self.sandbox.mkdir(parents=True, exist_ok=True)
        request_path = self.sandbox / "request.json"
        # A sandboxed child never sees the shared cache: this process stores its result there.
        request = replace(self.request, cache_dir=None) if self.jail is not None else self.request
        request_path.write_text(
            json.dumps(
                {
                    "request": asdict(request),
                    "limits": {
                        "memory_bytes": self.memory_limit_bytes,
                        "cpu_seconds": self.cpu_limit_s,
                        # A uid of its own (root mode): its threads and processes are all it counts.
                        **({"processes": COMPILE_PROCESSES} if self.jail is not None and self.jail.per_uid else {}),
                    },
                }
            )
        )
        result_path = self.sandbox / "result.json"
        result_path.unlink(missing_ok=True)
        # Never the platform's credentials, sandboxed or not.
        env = scrubbed_environment()
        env["OMP_NUM_THREADS"] = str(self.request.torch_threads)
        argv = self.child_argv(request_path, result_path)
        if self.jail is not None:
            workdir = Path(self.request.workdir)
            self._uid = self.jail.allocate_uid()
            self.jail.give(workdir, self._uid)
            binds = (
                Bind(Path(self.request.model_path), self.request.model_path),
                Bind(workdir, str(workdir), writable=True),
            )
            argv = self.jail.command(argv, Jail(binds=binds, network=False, cwd=str(workdir)), uid=self._uid)
        with (self.sandbox / "child.log").open("wb") as out:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self._started = time.monotonic()
        return self

    def child_argv(self, request_path: Path, result_path: Path) -> list[str]:
        """The child's command line (before the sandbox wraps it)."""
        return [sys.executable, "-m", "neurondock_workers.compiler._child", str(request_path), str(result_path)]

    def running(self) -> bool:
        """Return whether the child is still running."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the compile: SIGTERM the child's session, then SIGKILL after `grace_s`."""
        self._outcome = self._outcome or "stopped"
        self._kill(grace_s)

    def _kill(self, grace_s: float) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self._proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def wait(
        self,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        poll_interval: float = 0.1,
    ) -> CompileResult:
        """Wait for the result; enforce MaxRuntimeInSeconds; poll `should_stop` for StopCompilationJob."""
        if self._proc is None:
            if self._outcome == "stopped":  # stopped before it ever started
                raise CompileStoppedError()
            self.start()
        assert self._proc is not None
        waited_from = time.monotonic()
        while self._proc.poll() is None:
            now = time.monotonic()
            if self.max_runtime_s is not None and now - self._started > self.max_runtime_s:
                self._outcome = "timeout"
                self._kill(0.5)
                break
            if should_stop is not None and should_stop():
                self.stop()
                break
            if timeout is not None and now - waited_from > timeout:
                raise TimeoutError(f"compile still running after {timeout} s (pid {self._proc.pid})")
            time.sleep(poll_interval)
        return self._result()

    def _result(self) -> CompileResult:
        assert self._proc is not None
        if self.jail is not None:
            # The child (and its pid namespace) is gone: nothing can change the directory any more.
            confine(Path(self.request.workdir))
            self.jail.release_uid(self._uid)
        if self._outcome == "timeout":
            raise CompileTimeoutError(seconds=self.max_runtime_s)
        if self._outcome == "stopped":
            raise CompileStoppedError()
        code = self._proc.returncode
        if self.jail is not None and code is not None and code > 128:
            code = -(code - 128)  # bwrap reports a child killed by signal N as 128 + N
        result_path = self.sandbox / "result.json"
        if result_path.is_file():
            payload = json.loads(result_path.read_text())
            if payload.get("ok"):
                return self._accept(CompileResult.from_dict(payload["result"]))
            raise error_from_dict(payload["error"])
        if code is not None and code < 0:
            raise self._signal_error(-code)
        tail = (
            (self.sandbox / "child.log").read_text(errors="replace").strip().splitlines()[-1:]
            if (self.sandbox / "child.log").exists()
            else []
        )
        raise CompilationError(
            reason="There was an unexpected error during compilation, check your inputs and try "
            f"again in a few minutes. (exit status {code}{': ' + tail[0] if tail else ''})"
        )

    def _accept(self, result: CompileResult) -> CompileResult:
        if self.jail is None:
            return result
        workdir = Path(self.request.workdir).resolve()
        for name in ("artifact_path", "log_path"):
            path = Path(getattr(result, name)).resolve()
            if workdir not in path.parents or not path.is_file():
                raise CompilationError(
                    reason=f"The compiler process reported its output outside its work directory ({name})."
                )
        if self.request.cache_dir and not result.cache_hit:
            CompileCache(Path(self.request.cache_dir)).put(
                result.cache_key, Path(result.artifact_path), Path(result.log_path), result.to_dict()
            )
        return result

    def _signal_error(self, signum: int) -> CompilerError:
        if signum == signal.SIGXCPU:
            return CompileResourceError(resource="CPU time", limit=f"{self.cpu_limit_s} s")
        if signum == signal.SIGKILL:  # not ours (we record our own kills): the kernel's OOM killer
            return CompileResourceError(resource="memory", limit=_fmt_bytes(self.memory_limit_bytes))
        return CompilationError(reason=f"The compiler process died with signal {signal.Signals(signum).name}.")


def confine(root: Path) -> None:
    """Remove every symbolic link and special file under ``root``: what is left are files and directories."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                os.unlink(path)


def _fmt_bytes(value: int | None) -> str:
    return "the host's memory" if value is None else f"{value / 1024**3:.1f} GiB"


def run_compile_sandboxed(
    request: CompileRequest,
    *,
    max_runtime_s: float | None = None,
    memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT,
    cpu_limit_s: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    sandbox: Sandbox | None = None,
) -> CompileResult:
    """Compile in a child process and return its result (raises the child's typed error)."""
    process = CompileProcess(
        request,
        max_runtime_s=max_runtime_s,
        memory_limit_bytes=memory_limit_bytes,
        cpu_limit_s=cpu_limit_s,
        sandbox=sandbox,
    )
    return process.start().wait(should_stop=should_stop)
