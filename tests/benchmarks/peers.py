"""Peers for benchmarks: TorchServe started from its PyPI wheel, and wrk as the one load generator."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.platform import free_port
from tests.support.waiting import wait_for

# TorchServe's handler for both models: NPY in, NPY out, a batch concatenated on dim 0, one intra-op
# thread (the replica's setting), the same TorchScript file neurondock serves.
HANDLER = """
import io
import os

import numpy as np
import torch

_model = None


def handle(data, context):
    global _model
    if _model is None:
        torch.set_num_threads(1)
        model_dir = context.system_properties["model_dir"]
        path = os.path.join(model_dir, context.manifest["model"]["serializedFile"])
        _model = torch.jit.load(path, map_location="cpu").eval()
    if data is None:
        return None
    arrays = [np.load(io.BytesIO(row.get("body") or row.get("data")), allow_pickle=False) for row in data]
    with torch.inference_mode():
        out = _model(torch.from_numpy(np.concatenate(arrays))).numpy()
    answers, start = [], 0
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, out[start : start + array.shape[0]])
        answers.append(buffer.getvalue())
        start += array.shape[0]
    return answers
"""


def torchserve_missing() -> str | None:
    """Why TorchServe cannot run here, or None."""
    if shutil.which("torchserve") is None or shutil.which("torch-model-archiver") is None:
        return "TorchServe is not installed (pip install torchserve torch-model-archiver)"
    if shutil.which("java") is None:
        return "TorchServe needs Java 17 (java not found)"
    return None


@dataclass
class TorchServe:
    """One TorchServe process tree serving archives built from TorchScript files."""

    home: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def archive(self, name: str, model_file: Path) -> None:
        """Build ``<name>.mar`` from a TorchScript file with the NPY handler."""
        store = self.home / "store"
        store.mkdir(parents=True, exist_ok=True)
        handler = self.home / "npy_handler.py"
        handler.write_text(HANDLER)
        subprocess.run(
            ["torch-model-archiver", "--model-name", name, "--version", "1.0", "--serialized-file", str(model_file),
             "--handler", str(handler), "--export-path", str(store), "--force"],
            check=True, capture_output=True,
        )  # fmt: skip

    def start(self, models: dict[str, int], batch_delay_ms: int = 5) -> None:
        """Start with ``{archive name: batch size}``, one worker each; returns once started (not ready)."""
        self.port = free_port()
        spec = {
            name: {"1.0": {"defaultVersion": True, "marName": f"{name}.mar", "minWorkers": 1, "maxWorkers": 1,
                           "batchSize": batch, "maxBatchDelay": batch_delay_ms, "responseTimeout": 120}}
            for name, batch in models.items()
        }  # fmt: skip
        config = self.home / "config.properties"
        config.write_text(
            "\n".join(
                [
                    f"inference_address=http://127.0.0.1:{self.port}",
                    f"management_address=http://127.0.0.1:{free_port()}",
                    f"metrics_address=http://127.0.0.1:{free_port()}",
                    f"model_store={self.home / 'store'}",
                    "load_models=all",
                    "default_workers_per_model=1",
                    "job_queue_size=100",
                    "disable_system_metrics=true",
                    "models=" + json.dumps(spec),
                ]
            )
            + "\n"
        )
        # TMPDIR: TorchServe keeps its pid file in the temp dir and refuses to start while the process it
        # names runs, so one instance still shutting down (or another session's) would block this one.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "LOG_LOCATION": str(self.home / "logs"), "TMPDIR": str(self.home)}
        self.process = subprocess.Popen(
            ["torchserve", "--start", "--foreground", "--ncs", "--disable-token-auth", "--ts-config", str(config)],
            cwd=self.home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def url(self, model: str) -> str:
        return f"http://127.0.0.1:{self.port}/predictions/{model}"

    def predict(self, model: str, body: bytes) -> int:
        """POST one NPY body; the HTTP status."""
        request = urllib.request.Request(self.url(model), data=body, headers={"Content-Type": "application/x-npy"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:
            return 0

    def wait_ready(self, models: list[str], body: dict[str, bytes], timeout: float = 180.0) -> None:
        """Until every model answers a prediction."""
        for model in models:

            def served(name: str = model) -> bool:
                return self.predict(name, body[name]) == 200

            wait_for(served, timeout, what=f"TorchServe to serve {model}")

    def stop(self) -> None:
        """End the whole tree (the frontend and its Python workers)."""
        if self.process is None:
            return
        import signal

        group = self.process.pid
        try:
            os.killpg(group, signal.SIGTERM)
            self.process.wait(20)
            # The launcher can exit before its Java frontend and Python workers: wait for the whole group.
            wait_for(lambda: not _group_alive(group), 20, what="TorchServe's processes to exit")
        except (ProcessLookupError, subprocess.TimeoutExpired, AssertionError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            self.process.wait(10)
        self.process = None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# --- wrk --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    """What wrk reported for one run."""

    requests: int
    non_2xx: int
    rate: float
    p50_ms: float
    p99_ms: float

    @property
    def answered(self) -> int:
        return self.requests - self.non_2xx


def wrk_script(path: Path, body_file: Path, headers: dict[str, str]) -> Path:
    """A wrk Lua script that POSTs ``body_file`` with fixed headers (SigV4 signed once and replayed)."""
    lines = ['wrk.method = "POST"', f'local f = io.open("{body_file}", "rb")', 'wrk.body = f:read("*a")', "f:close()"]
    for name, value in headers.items():
        if name.lower() not in ("host", "content-length"):
            lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    assert match, text
    return float(match[1]) * _UNITS[match[2]]


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> WrkResult:
    """One wrk run with one thread and ``connections`` keep-alive connections."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "30s", "-s", str(script), url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    return WrkResult(
        requests,
        int(non2xx[1]) if non2xx else 0,
        rate,
        _ms(p50[1]) if p50 else float("nan"),
        _ms(p99[1]) if p99 else float("nan"),
    )
