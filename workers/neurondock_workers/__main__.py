"""``python -m neurondock_workers {worker|agent|host}``: entry points the platform CLI spawns."""

from __future__ import annotations

import sys

from neurondock_workers.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
