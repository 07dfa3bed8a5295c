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
# Refused in the API only: kombu takes billiard's ``register_after_fork`` when it can import it, else
# multiprocessing's; the API sends tasks with kombu alone and never forks a pool. The host process's
# Celery worker needs billiard itself. ~0.3-0.6 MB RSS with the cffi modules it brings (docs/measured.md).
UNUSED_IN_THE_API = ("billiard",)


def refuse(*, api: bool = False) -> None:
    """Make the unused optional packages unimportable in this process (one already imported stays).

    With ``api``, also those only the API does without (``UNUSED_IN_THE_API``).
    """
    for name in UNUSED + (UNUSED_IN_THE_API if api else ()):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
