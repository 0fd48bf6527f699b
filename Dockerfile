# gwadm: one image for control-plane nodes, proxies, the demo upstream and the CLI.
#
#   pip wheel -c constraints.txt -w wheels .        # on the host: the project and its dependencies
#   docker build -t gwadm .                          # no network needed inside the build
#   (without ./wheels the build installs from the package index instead)
#   docker build --build-arg BASE_IMAGE=gwadm-base:bookworm -t gwadm .   # a locally built base (.ci/run)
#
# The base needs python3 with venv (python:3.11-slim, or Debian bookworm + python3-venv). No
# compiler anywhere: every dependency comes as a wheel from ./wheels. No secret is ever in the
# image: the compose `init` service creates them at run time, in volumes.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
COPY . /src/
# With ./wheels (built on the host): offline, exactly those versions. Without: from the package
# index, pinned by constraints.txt (a fresh checkout on a machine that reaches PyPI).
RUN python3 -m venv /opt/gwadm \
 && if ls /src/wheels/gwadm-*.whl >/dev/null 2>&1; then \
      /opt/gwadm/bin/pip install --no-cache-dir --no-index --find-links /src/wheels gwadm; \
    else \
      /opt/gwadm/bin/pip install --no-cache-dir -c /src/constraints.txt /src; \
    fi \
 && /opt/gwadm/bin/python -c "import cli.main, cluster.node, proxy.node"

FROM ${BASE_IMAGE} AS runtime
RUN groupadd --system --gid 10001 gwadm \
 && useradd --system --uid 10001 --gid gwadm --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin gwadm \
 && mkdir -p /gwadm/ca /gwadm/cp /gwadm/dp /data /cache \
 && chown gwadm:gwadm /gwadm/ca /gwadm/cp /gwadm/dp /data /cache \
 && chmod 0700 /gwadm/ca /gwadm/cp /gwadm/dp /data /cache
COPY --from=build /opt/gwadm /opt/gwadm
ENV PATH=/opt/gwadm/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER gwadm
WORKDIR /data
# GWADM_HEALTH_URL (and GWADM_HEALTH_CA for https) say what to probe: set per service.
HEALTHCHECK --interval=5s --timeout=4s --start-period=20s --retries=5 CMD ["python3", "-m", "cli.healthcheck"]
ENTRYPOINT ["gwadm"]
CMD ["--help"]
