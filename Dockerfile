# prequal: one image for every process; the command picks which one runs.
#
#   docker build -t prequal .
#   docker run --rm -e PREQUAL_PG_HOST=db prequal prequal-migrate upgrade head
#   docker run -e HEALTHCHECK_PORT=8005 prequal outbox-relay
#
# Processes (console scripts of pyproject.toml): command-api (default), query-api,
# query-projector, outbox-relay, credit-worker, decision-worker, prequal-migrate,
# prequal-ops. Every setting is a PREQUAL_* environment variable (README's table).
#
# The builder stage resolves the locked dependencies with Poetry into /opt/venv and
# installs the project as a wheel; the final stage copies only that virtualenv: no
# Poetry, no compiler, no source tree.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ARG POETRY_VERSION=2.2.1
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POETRY_NO_INTERACTION=1 \
    POETRY_VIRTUALENVS_CREATE=false \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Poetry lives in its own virtualenv; with VIRTUAL_ENV set it installs into /opt/venv.
RUN python -m venv /opt/poetry \
    && /opt/poetry/bin/pip install "poetry==${POETRY_VERSION}" \
    && python -m venv /opt/venv

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml poetry.lock README.md ./
RUN /opt/poetry/bin/poetry install --only main --no-root --no-ansi

COPY runtime ./runtime
COPY schema ./schema
COPY outbox ./outbox
COPY command_api ./command_api
COPY query_api ./query_api
COPY credit_worker ./credit_worker
COPY decision_worker ./decision_worker
COPY messaging ./messaging
COPY ops ./ops
# The project as a wheel (packages, migrations, JSON Schemas, console scripts).
RUN /opt/poetry/bin/poetry build --format wheel --no-ansi \
    && pip install --no-deps dist/*.whl \
    && prequal-ops --help >/dev/null

# ------------------------------------------------------------------------------ final
FROM ${PYTHON_IMAGE} AS final

# Containers reach each other by name, so the processes listen on every interface.
# HEALTHCHECK_PORT is the port the default health check asks (docker-compose.yml gives
# each service its own check).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PREQUAL_HTTP_HOST=0.0.0.0 \
    HEALTHCHECK_PORT=8000

RUN groupadd --system --gid 10001 prequal \
    && useradd --system --uid 10001 --gid prequal --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin prequal \
    && mkdir /app && chown prequal:prequal /app \
    && mkdir -p /var/lib/prequal/auth && chown -R prequal:prequal /var/lib/prequal

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

# command-api, query-api, credit-worker, decision-worker, query-projector, outbox-relay.
EXPOSE 8000 8001 8002 8003 8004 8005

# Python's standard library only: the image has no curl. A 503 (a dependency down)
# raises, so the check fails.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HEALTHCHECK_PORT', '8000') + '/livez', timeout=4)"]

CMD ["command-api"]
