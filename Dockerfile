# AI-NERD dashboard, hosted: gunicorn with several workers behind your reverse proxy (TLS there).
#   docker build -t ainerd .                      (BuildKit: the default since Docker 23)
#   docker run -p 8050:8050 -e AINERD_SECRET_KEY=... -e AINERD_ADMIN_PASSWORD=... \
#              -v ainerd-data:/data -v ainerd-instance:/instance ainerd
# docs/deployment.md: every variable, building without a registry (CI), the checks CI runs.
#
# Debian bookworm with Debian's own Python 3.11, so that CI, which cannot pull images, builds
# the same distribution locally (debootstrap, tests/docker_support.py) and passes it here.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8

# python3 + venv, make and libcairo2 (PDF export, cairosvg) from Debian, unless the base has them
# already (the local CI base does: tests/docker_support.py BASE_PACKAGES, keep the two lists equal)
RUN if ! dpkg -s python3 python3-venv make ca-certificates libcairo2 >/dev/null 2>&1; then \
        apt-get update \
     && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv make ca-certificates libcairo2 \
     && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 10001 ainerd \
 && useradd --system --uid 10001 --gid ainerd --home-dir /app --shell /usr/sbin/nologin ainerd \
 && mkdir -p /app /data /instance \
 && chown ainerd:ainerd /app /data /instance \
 && chmod 0700 /instance

WORKDIR /app
USER ainerd

# Pinned requirements, in the same virtual environment `make` uses (.venv), installed by
# `make install`. torch first from the CPU wheel index (the same pin; PyPI's default wheel would
# pull in CUDA); TORCH_INDEX_URL= (empty) leaves torch to pip's own settings.
# Builds that need special package-index settings (a mirror, a local wheel folder, a proxy's CA)
# pass them as BuildKit secrets `pip.conf` (and `ca.crt` if it names /run/secrets/ca.crt):
# mounted for this step only, never stored in a layer.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --chown=ainerd:ainerd requirements.txt Makefile ./
RUN --mount=type=secret,id=pip.conf,uid=10001 --mount=type=secret,id=ca.crt,uid=10001 \
    if [ -s /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi \
 && python3 -m venv .venv \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
        .venv/bin/pip install --index-url "$TORCH_INDEX_URL" "$(grep -E '^torch==' requirements.txt)"; \
    fi \
 && make install PY=python3

COPY --chown=ainerd:ainerd . .

ENV PATH=/app/.venv/bin:$PATH \
    HOME=/app \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    AINERD_HOSTED=1 \
    AINERD_DATA_DIR=/data \
    AINERD_INSTANCE_DIR=/instance \
    AINERD_BIND=0.0.0.0:8050 \
    WEB_CONCURRENCY=3

# Demo data built at image build time, with the same commands as `make demo precompute`
# (a named volume on /data starts with it; a bind mount replaces it).
RUN make DEMO=/data/demo.h5 demo precompute

VOLUME ["/data", "/instance"]
EXPOSE 8050

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('AINERD_BIND', ':8050').rsplit(':', 1)[1]; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

# the command tests/test_hosting.py runs (with 3 workers): keep them the same
CMD ["gunicorn", "--config", "gunicorn.conf.py", "dashboard.app:server"]
