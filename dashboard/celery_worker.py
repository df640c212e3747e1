"""The Celery app of the background callbacks: ``celery -A dashboard.celery_worker worker``.

Run it with the same environment as the web server (``AINERD_BACKGROUND=celery``,
``AINERD_REDIS_URL``, ``AINERD_DATA_DIR``, ``AINERD_SECRET_KEY``...). Importing this module
builds the same Dash apps as the web server (``create_app``): Dash registers each background
callback as a Celery task named after a hash of the callback's source and id, so the worker
knows exactly the tasks the web workers submit.
"""
from __future__ import annotations

import sys

from .background import celery_app_for
from .config import Config, ConfigError
from .security import install_log_redaction

install_log_redaction()
try:
    config = Config.from_env()
except ConfigError as exc:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
if config.background != "celery":
    print("error: AINERD_BACKGROUND=celery is needed to run the Celery worker "
          f"(it is {config.background!r})", file=sys.stderr)
    raise SystemExit(2)

from .app import create_app  # noqa: E402

server = create_app(config)
celery = app = celery_app_for(config)

from .background import make_background_manager  # noqa: E402

# the manager the apps use (cached per configuration): registers every background callback
# of the apps as a task of ``celery`` even if no app asked for a manager yet
make_background_manager(config)
