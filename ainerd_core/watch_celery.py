"""Celery app of the live watcher's per-file work: ``celery -A ainerd_core.watch_celery worker``.

The broker (and result backend) is ``AINERD_WATCH_BROKER`` or ``AINERD_REDIS_URL`` (the Redis
the dashboard's background callbacks already use). One task, ``ainerd.watch.compute_file``:
read one result file, resample, encode and fit its maps (:func:`ainerd_core.watch.compute_file`)
and return the arrays as JSON (base64 blocks; no pickle on the broker). The watcher that sent
it stays the only process that writes the dataset.
"""
from __future__ import annotations

import os

from .errors import InputError

TASK_NAME = "ainerd.watch.compute_file"


def broker_url(broker: str | None = None) -> str:
    url = broker or os.environ.get("AINERD_WATCH_BROKER") or os.environ.get("AINERD_REDIS_URL")
    if not url:
        raise InputError("--broker", "no Celery broker: pass --broker redis://HOST:PORT/DB or set AINERD_REDIS_URL")
    return url


def make_app(broker: str | None = None):
    """A Celery app on ``broker`` with the compute task registered."""
    from celery import Celery

    url = broker_url(broker)
    app = Celery("ainerd_watch", broker=url, backend=url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                    result_expires=3600, worker_prefetch_multiplier=1, task_acks_late=True,
                    broker_connection_retry_on_startup=True)

    @app.task(name=TASK_NAME)
    def compute_file_task(path: str, settings_json: str) -> dict:
        from .watch import FileSettings, compute_file, pack_result

        try:
            return pack_result(compute_file(path, FileSettings.from_json(settings_json)))
        except InputError as exc:  # an incomplete file: the watcher counts an attempt and retries
            return {"error": {"value": str(exc)}}

    return app


if os.environ.get("AINERD_WATCH_BROKER") or os.environ.get("AINERD_REDIS_URL"):
    app = make_app()
