# carrierwatch: one image for every process (worker, sink, gateway, poll, heartbeat, demo).
# Multi-stage: the build stage installs the package into a virtualenv; the runtime stage copies
# only that virtualenv and the configuration home (partners, codebooks, schemas), and runs as an
# unprivileged user. The base image is pinned to a patch release of Python 3.11 (the version the
# project is tested on); pin its digest too in production (docs/deploy.md).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade "pip>=24" \
 && /opt/venv/bin/pip install .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 carrierwatch \
 && useradd --system --uid 10001 --gid carrierwatch --home-dir /var/lib/carrierwatch \
      --shell /usr/sbin/nologin carrierwatch \
 && mkdir -p /var/lib/carrierwatch \
 && chown carrierwatch:carrierwatch /var/lib/carrierwatch
COPY --from=build /opt/venv /opt/venv
COPY partners /opt/carrierwatch/partners
COPY codebooks /opt/carrierwatch/codebooks
COPY schemas /opt/carrierwatch/schemas
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CARRIERWATCH_HOME=/opt/carrierwatch \
    CARRIERWATCH_DATA_DIR=/var/lib/carrierwatch
USER carrierwatch:carrierwatch
WORKDIR /var/lib/carrierwatch
VOLUME ["/var/lib/carrierwatch"]
ENTRYPOINT ["carrierwatch"]
CMD ["--help"]
