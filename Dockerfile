# The taskevents image: the `taskevents` command (worker, read API, tools) on Python 3.11.
# docker-compose.yml chooses the command; the default is the ingest worker.

# --- build: a wheel of the project, so no source tree or build leftovers reach the runtime image
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package is made of (pyproject names README.md and the three folders it installs as
# `taskevents`); this keeps a local .venv/, data/ and *.db out of the image even without .dockerignore.
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY ingest ./ingest
COPY api ./api
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TASKEVENTS_DB=/data/taskevents.db
COPY --from=build /wheels /wheels
# The server extra: the worker and the API (the base install is a runner's producer only); postgres:
# the driver, so the same image's worker can write a PostgreSQL store (docs/scaling.md).
RUN pip install "$(ls /wheels/*.whl)[server,postgres]" && rm -rf /wheels

# A non-root user owning /data: an empty named volume mounted there takes this ownership, so the
# worker can create the SQLite file (and its -wal/-shm files) beside it.
RUN groupadd --system --gid 10001 taskevents \
    && useradd --system --uid 10001 --gid taskevents --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin taskevents \
    && mkdir -p /data \
    && chown taskevents:taskevents /data
VOLUME ["/data"]
WORKDIR /data
USER taskevents

# Exec form: taskevents is PID 1 and gets SIGTERM itself (it commits the batch in hand, then exits).
CMD ["taskevents", "ingest"]
