# AI-NERD dashboard, hosted: gunicorn with several workers behind your reverse proxy (TLS there).
#   docker build -t ainerd .
#   docker run -p 8050:8050 -e AINERD_SECRET_KEY=... -e AINERD_ADMIN_PASSWORD=... \
#              -v ainerd-data:/data -v ainerd-instance:/instance ainerd
# docs/hosting.md lists every variable.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends make libcairo2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ainerd \
 && useradd --system --uid 10001 --gid ainerd --home-dir /app --shell /usr/sbin/nologin ainerd \
 && mkdir -p /app /data /instance \
 && chown ainerd:ainerd /app /data /instance \
 && chmod 0700 /instance

WORKDIR /app
USER ainerd

# Pinned requirements, in the same virtual environment `make` uses (.venv). torch first from the
# CPU wheel index (the same version pin; PyPI's default wheel would pull in CUDA).
COPY --chown=ainerd:ainerd requirements.txt Makefile ./
RUN python -m venv .venv \
 && .venv/bin/pip install --index-url https://download.pytorch.org/whl/cpu \
        "$(grep -E '^torch==' requirements.txt)" \
 && make install PY=python

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
