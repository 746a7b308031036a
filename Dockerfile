# The streamrec image, streamrec:latest in docker-compose.yml: Python 3.11, a Java 17 runtime for
# Spark, the streamrec wheel with its dependencies (pyspark among them), and the Spark Kafka
# connector jars resolved with Maven at build time, so that no job downloads anything at start.
#
#   docker build -t streamrec:latest .          (or: docker compose build)
#
# Untested: the machines streamrec is built and tested on have no Docker engine (README);
# tests/unit/test_docker_compose.py checks this file's structure only.

# Debian 12 (bookworm) packages Java 17; Debian 13, under the plain 3.11-slim tag, has 21 only.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# Build the wheel from the sources and install it in a venv; resolve the connector jars with
# streamrec's own resolver, into the cache its config names (stack.cache_dir: .cache, relative
# to the working directory).
FROM runtime AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends maven \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamrec streamrec
COPY schemas schemas
COPY streaming streaming
COPY batch batch
COPY model model
COPY producer producer
COPY stack stack
COPY bench bench
RUN python -m pip wheel --no-cache-dir --no-deps -w /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir "$(ls /wheels/streamrec-*.whl)[jobs]"
WORKDIR /opt/streamrec
RUN /opt/venv/bin/python -c "from streamrec.stack.maven import spark_connector_jars; spark_connector_jars('.cache')" \
 && rm -rf .cache/m2

FROM runtime
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/streamrec/.cache/maven /opt/streamrec/.cache/maven
ENV PATH=/opt/venv/bin:$PATH
# Relative paths of the config (event store, models, checkpoints: all under .streamrec/) land
# in /opt/streamrec/.streamrec, where docker-compose.yml mounts the jobs' shared volume.
WORKDIR /opt/streamrec
RUN useradd --system --uid 10001 --home-dir /opt/streamrec streamrec \
 && mkdir .streamrec && chown streamrec .streamrec
USER streamrec
EXPOSE 8080
CMD ["streamrec", "--help"]
