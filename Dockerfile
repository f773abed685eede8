# The detector image: `moments worker` by default; the same image runs `moments simulate`.
# Build: docker build -t moments .   (docker compose builds it for you; for Kubernetes,
# build the tag deploy/k8s runs and push it: docs/operations.md, "Kubernetes")
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MOMENTS_DATA_DIR=/var/lib/moments \
    MOMENTS_METRICS_PORT=9308

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
# The rocksdb extra: the RocksDB table store (MOMENTS_STORE=rocksdb) keeps state on the volume.
# constraints.txt: the versions the test suite ran with, not whatever is newest that day.
RUN pip install -c constraints.txt ".[rocksdb]" \
    && useradd --system --uid 10001 --home-dir /var/lib/moments --create-home moments

USER moments
WORKDIR /var/lib/moments
VOLUME ["/var/lib/moments"]
EXPOSE 9308
ENTRYPOINT ["moments"]
CMD ["worker"]
