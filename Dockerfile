# The quant code location and Dagster's processes (code server, webserver, daemon, run workers).
# One image for all of them; docker-compose.yml picks the command. Build: docker compose build
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /tmp/quant-src
COPY pyproject.toml setup.py constraints.txt README.md ./
COPY quant_core ./quant_core
COPY quant_resources ./quant_resources
COPY quant_assets ./quant_assets
COPY quant_cli ./quant_cli
COPY sensors ./sensors
COPY quant_definitions ./quant_definitions
COPY quant_api ./quant_api
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# quant_core's compiled modules (setup.py) need gcc and the Python headers at build time only:
# a build stage makes the wheels, the final image installs them and keeps no compiler.
# Non-editable install pinned by constraints.txt; the source tree is not kept in the image.
COPY --from=build /wheels /tmp/wheels
COPY constraints.txt /tmp/constraints.txt
RUN pip install -c /tmp/constraints.txt /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/constraints.txt

# Files the installed packages read at run time. An installed package cannot find them next to
# itself, so their places are given explicitly: QUANT_MIGRATIONS_DIR for the schema assets,
# QUANT_UNIVERSE_FILE for the default equity universe.
COPY migrations /opt/quant/migrations
COPY configs /opt/quant/configs
ENV QUANT_MIGRATIONS_DIR=/opt/quant/migrations \
    QUANT_UNIVERSE_FILE=/opt/quant/configs/universe.txt \
    QUANT_HOME=/var/lib/quant \
    DAGSTER_HOME=/opt/dagster/home

# Dagster instance (every setting from the environment, no secrets in the file) and the
# deployment workspace (webserver and daemon reach the code server over gRPC).
COPY dagster.yaml /opt/dagster/home/dagster.yaml
COPY deploy/workspace.yaml /opt/dagster/workspace.yaml

RUN groupadd --system --gid 10001 quant \
    && useradd --system --uid 10001 --gid quant --home-dir /var/lib/quant --shell /usr/sbin/nologin quant \
    && mkdir -p /var/lib/quant /opt/dagster/home/storage \
    && chown -R quant:quant /var/lib/quant /opt/dagster/home

USER quant
WORKDIR /opt/dagster
EXPOSE 3000 4000
CMD ["dagster", "api", "grpc", "-m", "quant_definitions", "-h", "0.0.0.0", "-p", "4000"]
