# A worker host: Celery worker plus the host agent that owns this host's emulated Inferentia chips.
FROM python:3.11-slim
WORKDIR /app
COPY .ci/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY platform platform
COPY sdk sdk
COPY workers workers
COPY migrations migrations
# The CPU build of torch: pass PyTorch's CPU wheel index as PIP_EXTRA_INDEX_URL at build time,
# otherwise PyPI's default Linux wheel (a multi-GB CUDA build) is installed.
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install --no-cache-dir -c /tmp/constraints.txt '.[workers]'
ENV NEURONDOCK_DATA_DIR=/data
CMD ["sh", "-c", "neurondock worker & exec neurondock agent"]
