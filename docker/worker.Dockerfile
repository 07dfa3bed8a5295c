# A worker host: `neurondock host` supervises a Celery worker and the host agent, which owns this
# host's emulated Inferentia chips and runs each replica in bubblewrap (docs/sandbox.md).
FROM python:3.11-slim

# bubblewrap sandboxes user code; setpriv (util-linux) drops each sandbox to a uid of its own.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap=0.8.* util-linux=2.38.* \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY .ci/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY platform platform
COPY sdk sdk
COPY workers workers
COPY migrations migrations
# The CPU build of torch (2.13.0+cpu from PyTorch's CPU index satisfies the pin); PyPI's own Linux
# wheel would be a multi-GB CUDA build.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# This project itself; its dependencies' bounds live in pyproject.toml (and torch's pin in the constraints).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir -c /tmp/constraints.txt '.[workers]'

# Root: bubblewrap runs privileged and gives every sandbox a fresh unprivileged uid (docs/sandbox.md).
ENV NEURONDOCK_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
STOPSIGNAL SIGTERM
CMD ["neurondock", "host"]
