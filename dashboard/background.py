"""Background-callback manager of the Dash apps (long work started from the UI).

``diskcache`` (default) keeps jobs in ``AINERD_CACHE_DIR``; diskcache unpickles what it reads,
so the folder is created private to the app's user (mode 0700) and refused if others can write.
Jobs run in a subprocess of the web worker that received the request; progress and results
live in the shared folder, so any gunicorn worker of the same host can answer the polls.

``celery`` (``AINERD_BACKGROUND=celery``) sends jobs to a Celery worker through Redis
(``AINERD_REDIS_URL``, broker and result backend; JSON only, nothing is unpickled). Start the
worker with the same environment as the web server::

    celery -A dashboard.celery_worker worker --loglevel=INFO

It builds the same Dash apps (``create_app``), so it knows every background callback.

All Dash apps of one process share one manager (one Celery app per Redis URL, one diskcache per
folder): Dash registers every background callback with every manager, and the worker exposes
exactly that Celery app.
"""
from __future__ import annotations

import os
import stat
import threading

_lock = threading.Lock()
_celery_apps: dict = {}
_managers: dict = {}


def private_dir(path) -> str:
    """Create ``path`` with mode 0700 (or tighten it) and return it as a string."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path}: cache folder belongs to another user")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return str(path)


def celery_app_for(config):
    """The process's Celery app for ``config.redis_url`` (created once per URL)."""
    with _lock:
        app = _celery_apps.get(config.redis_url)
        if app is None:
            from celery import Celery

            app = Celery("ainerd", broker=config.redis_url, backend=config.redis_url)
            app.conf.update(
                task_serializer="json", result_serializer="json", accept_content=["json"],
                broker_connection_retry_on_startup=True,
                result_expires=24 * 3600,
                worker_hijack_root_logger=False,
                worker_prefetch_multiplier=1,  # long jobs: do not hoard tasks
                task_acks_late=False,
            )
            _celery_apps[config.redis_url] = app
        return app


def make_background_manager(config):
    """The Dash background-callback manager chosen by ``config.background``.

    Calls with the same configuration return the same manager.
    """
    if config.background == "celery":
        key = ("celery", config.redis_url)
    else:
        key = ("diskcache", os.path.abspath(str(config.cache_dir)))
    with _lock:
        manager = _managers.get(key)
    if manager is not None:
        return manager
    if config.background == "celery":
        from dash import CeleryManager

        manager = CeleryManager(celery_app_for(config))
    else:
        import diskcache
        from dash import DiskcacheManager

        manager = DiskcacheManager(diskcache.Cache(private_dir(config.cache_dir)))
    with _lock:
        return _managers.setdefault(key, manager)
