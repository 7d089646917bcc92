# The supernode image: one image, three commands (see deploy/image/entrypoint.sh):
#   replica (default), worker, migrate.
# BASE_IMAGE is any Debian bookworm with python3.11 on PATH: the public python:3.11-slim-bookworm by
# default, or the base `make image` builds from Debian packages (deploy/image/build-base.sh).
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

# ---- build: a virtualenv with the package and its runtime dependencies only ----------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3.11 -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone: this layer is reused until they change.
COPY pyproject.toml ./
# A site whose egress goes through a TLS-intercepting proxy passes its CA bundle as the optional build
# secret `build_ca` (make image does, from PIP_CERT): used by pip only, never stored in a layer.
RUN --mount=type=secret,id=build_ca,required=false \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca; fi \
 && python3.11 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > requirements.txt \
 && /opt/venv/bin/pip install -r requirements.txt \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib
COPY app ./app
COPY workers ./workers
# The package alone (not editable, no dev extras), compiled, in a directory of its own: the runtime
# stage copies it over the dependencies' layer, so a code change makes one small layer instead of a
# new copy of the whole virtualenv. (COPY is cached by content; a RUN with a bind mount of another stage
# would be cached on its command line alone and could keep stale code.)
RUN --mount=type=secret,id=build_ca,required=false \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca; fi \
 && /opt/venv/bin/pip install --no-deps --target /pkg . \
 && /opt/venv/bin/python -m compileall -q /pkg

# ---- runtime ---------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="df-supernode" \
      org.opencontainers.image.description="Highly available drop-in replacement for the Dragonfly 1.x supernode"
# A fixed non-root uid/gid (the chart's securityContext names them); written directly so that bases
# without the passwd package (a debootstrap minbase) work too.
RUN echo 'dragonfly:x:10001:10001:dragonfly:/home/admin:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'dragonfly:x:10001:' >> /etc/group \
 && mkdir -p /home/admin/supernode \
 && chown -R 10001:10001 /home/admin
COPY --from=build /opt/venv /opt/venv
COPY --from=build /pkg /opt/venv/lib/python3.11/site-packages
COPY alembic.ini /app/alembic.ini
COPY migrations /app/migrations
COPY deploy/image/entrypoint.sh /usr/local/bin/df-supernode
WORKDIR /app
# DF_LISTEN: a container is reached on its own interface, not loopback. DF_HOME: the legacy homeDir;
# the seed cache is DF_HOME/repo unless DF_SEED_DIR names the shared volume.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DF_LISTEN=0.0.0.0 \
    DF_HOME=/home/admin/supernode
USER 10001:10001
EXPOSE 8002 8001
ENTRYPOINT ["df-supernode"]
CMD ["replica"]
