"""The store's CPU for one 43 MB model archive: boto3's multipart ``upload_file`` against one PutObject.

``python -m tests.benchmarks.upload_cpu [rounds]`` starts ``neurondock store`` (this interpreter's
platform), then alternates the two uploads of the same random float32 bytes and prints the CPU seconds
the store process spent on each (user + system, from /proc). The client runs in this process, so its
own hashing is not counted. docs/measured.md records the figures.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from tests.support.platform import ACCESS_KEY, REGION, SECRET_KEY
from tests.support.store import start_store

SIZE = 43 * 1024 * 1024
# The SDK's threshold (sdk/neurondock/session.py) and boto3's default 8 MB parts: six parts here.
CONFIG = TransferConfig(multipart_threshold=8 * 1024 * 1024)


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wrap = os.environ.get("UPLOAD_CPU_WRAP", "").split()  # e.g. a profiler: "py-spy record -o x.svg --"
        proc, url = start_store(Path(tmp), wrap=wrap)
        try:
            store_pid = int(os.environ.get("UPLOAD_CPU_PID", "0")) or _store_pid(proc.pid)
            s3 = boto3.client(
                "s3",
                endpoint_url=f"{url}/s3",
                region_name=REGION,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
            )
            s3.create_bucket(Bucket="bench")
            path = Path(tmp) / "model.tar.gz"
            path.write_bytes(os.urandom(SIZE // 4 * 4))
            data = path.read_bytes()
            s3.put_object(Bucket="bench", Key="warm", Body=b"x")  # first-request imports, not counted
            print(f"load average at start: {os.getloadavg()}")
            results: dict[str, list[float]] = {"multipart": [], "put": []}
            for i in range(rounds):
                for mode in ("multipart", "put"):
                    before, t0 = cpu_seconds(store_pid), time.perf_counter()
                    if mode == "multipart":
                        s3.upload_file(str(path), "bench", f"m{i}", Config=CONFIG)
                    else:
                        s3.put_object(Bucket="bench", Key=f"p{i}", Body=data)
                    wall = time.perf_counter() - t0
                    results[mode].append(cpu_seconds(store_pid) - before)
                    print(f"{mode:9s} round {i}: store CPU {results[mode][-1]:.2f} s, wall {wall:.2f} s")
            for mode, values in results.items():
                median = sorted(values)[len(values) // 2]
                print(f"{mode:9s} store CPU per upload: min {min(values):.2f} s, median {median:.2f} s")
            print(f"load average at end: {os.getloadavg()}")
        finally:
            if wrap:  # a profiler writes its output on SIGINT, then its child goes too
                proc.send_signal(signal.SIGINT)
            else:
                proc.terminate()
            proc.wait(30)


def _store_pid(pid: int) -> int:
    # Under a wrapper (a profiler) the store is the wrapper's child.
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if kids and os.environ.get("UPLOAD_CPU_WRAP") else pid


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
