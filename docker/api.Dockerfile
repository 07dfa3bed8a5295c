# The control plane image: `neurondock api` (SageMaker API, runtime front door), and with another
# command `neurondock store` (the S3 store on its own) and `neurondock db upgrade`. No torch in here.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY platform platform
COPY sdk sdk
COPY workers workers
COPY migrations migrations
# This project itself; its dependencies' bounds live in pyproject.toml (and torch's pin in the constraints).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[platform]' \
    && useradd --system --uid 10001 --home-dir /data --create-home neurondock

USER 10001
ENV NEURONDOCK_HOST=0.0.0.0 \
    NEURONDOCK_PORT=8780 \
    NEURONDOCK_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
EXPOSE 8780
VOLUME ["/data"]
# Every neurondock process stops within NEURONDOCK_STOP_TIMEOUT (8 s) of SIGTERM: under `docker stop`'s 10 s.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['NEURONDOCK_PORT']}/ping\", timeout=2)"]
CMD ["neurondock", "api"]
