"""Run a compile in a child process with wall-clock, memory and CPU limits, killable at any time.

A hostile or broken model can exhaust memory, spin forever or crash the interpreter; none of that may
reach the Celery worker. The child sets `resource.setrlimit` before importing torch, reports its
result or typed error as JSON, and runs in its own session so `stop()` kills it and any helpers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    ) -> None:
        self.request = request
        self.max_runtime_s = max_runtime_s
        self.memory_limit_bytes = memory_limit_bytes
        self.cpu_limit_s = cpu_limit_s
        self.sandbox = Path(request.workdir) / "sandbox"
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
        request_path.write_text(
            json.dumps(
                {
                    "request": asdict(self.request),
                    "limits": {"memory_bytes": self.memory_limit_bytes, "cpu_seconds": self.cpu_limit_s},
                }
            )
        )
        result_path = self.sandbox / "result.json"
        result_path.unlink(missing_ok=True)
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(self.request.torch_threads)
        with (self.sandbox / "child.log").open("wb") as out:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "neurondock_workers.compiler._child",
                    str(request_path),
                    str(result_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self._started = time.monotonic()
        return self

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
        if self._outcome == "timeout":
            raise CompileTimeoutError(seconds=self.max_runtime_s)
        if self._outcome == "stopped":
            raise CompileStoppedError()
        code = self._proc.returncode
        result_path = self.sandbox / "result.json"
        if result_path.is_file():
            payload = json.loads(result_path.read_text())
            if payload.get("ok"):
                return CompileResult.from_dict(payload["result"])
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

    def _signal_error(self, signum: int) -> CompilerError:
        if signum == signal.SIGXCPU:
            return CompileResourceError(resource="CPU time", limit=f"{self.cpu_limit_s} s")
        if signum == signal.SIGKILL:  # not ours (we record our own kills): the kernel's OOM killer
            return CompileResourceError(resource="memory", limit=_fmt_bytes(self.memory_limit_bytes))
        return CompilationError(
            reason=f"The compiler process died with signal {signal.Signals(signum).name}."
        )


def _fmt_bytes(value: int | None) -> str:
    return "the host's memory" if value is None else f"{value / 1024**3:.1f} GiB"


def run_compile_sandboxed(
    request: CompileRequest,
    *,
    max_runtime_s: float | None = None,
    memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT,
    cpu_limit_s: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CompileResult:
    """Compile in a child process and return its result (raises the child's typed error)."""
    process = CompileProcess(
        request, max_runtime_s=max_runtime_s, memory_limit_bytes=memory_limit_bytes, cpu_limit_s=cpu_limit_s
    )
    return process.start().wait(should_stop=should_stop)
