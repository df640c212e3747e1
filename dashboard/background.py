"""Background-callback manager of the Dash apps (long work started from the UI).

``diskcache`` (default) keeps jobs in ``AINERD_CACHE_DIR``; diskcache unpickles what it reads,
so the folder is created private to the app's user (mode 0700) and refused if others can write.
"""
from __future__ import annotations

import os
import stat


def private_dir(path) -> str:
    """Create ``path`` with mode 0700 (or tighten it) and return it as a string."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path}: cache folder belongs to another user")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return str(path)


def make_background_manager(config):
    """The Dash background-callback manager chosen by ``config.background``."""
    if config.background == "celery":
        from celery import Celery
        from dash import CeleryManager

        celery_app = Celery("ainerd", broker=config.redis_url, backend=config.redis_url)
        return CeleryManager(celery_app)
    import diskcache
    from dash import DiskcacheManager

    return DiskcacheManager(diskcache.Cache(private_dir(config.cache_dir)))
