# The control plane: SageMaker API, runtime front door and the S3-compatible store (no torch).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY platform platform
COPY sdk sdk
COPY workers workers
COPY migrations migrations
RUN pip install --no-cache-dir '.[platform]'
ENV NEURONDOCK_HOST=0.0.0.0 NEURONDOCK_PORT=8780 NEURONDOCK_DATA_DIR=/data
EXPOSE 8780
CMD ["sh", "-c", "neurondock db upgrade && neurondock api"]
