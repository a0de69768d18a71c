# The forwarder and the reference endpoint for docker-compose.yml: this package, installed
# with pip, and its `otel-metrics` command. One image, two services (see their `command`).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml README.md /src/
COPY otel_metrics /src/otel_metrics
# With the postgres extra, so the endpoint and the report take --db postgresql://... too; uvloop
# for less CPU per request (otel_metrics/event_loop.py).
RUN pip install '/src[postgres,uvloop]' && rm -rf /src

# State (the forwarder's outbox, the endpoint's SQLite unless --db names a PostgreSQL) lives
# in a volume mounted here; a new named volume takes this directory's owner, so the
# unprivileged user can write it.
RUN useradd --system --home-dir /var/lib/otel-metrics --create-home otel-metrics
USER otel-metrics
WORKDIR /var/lib/otel-metrics
ENV CLAUDE_METRICS_DIR=/var/lib/otel-metrics

ENTRYPOINT ["otel-metrics"]
CMD ["--help"]
