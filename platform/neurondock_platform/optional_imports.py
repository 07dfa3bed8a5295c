"""Optional packages the API and the host process never use, refused there so that no library loads them.

Each is imported by a library only when it is installed, for a feature neurondock does not use: PyYAML
by kombu (a YAML serializer; the platform's messages are JSON), greenlet by Celery's bootsteps (to
ignore ``GreenletExit``, which only green threads raise; SQLAlchemy wants it only for its asyncio
extension) and psutil by Celery's debug helpers. The API and the host process live as long as the
platform and would keep them for good: ~0.8, ~1.0 and ~0.7 MB RSS (docs/measured.md). The refusal is
Python's own: a ``None`` in ``sys.modules`` makes the import raise ImportError, which each of those
libraries catches.
"""

from __future__ import annotations

import sys

UNUSED = ("yaml", "greenlet", "psutil")


def refuse() -> None:
    """Make the unused optional packages unimportable in this process (one already imported stays)."""
    for name in UNUSED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
