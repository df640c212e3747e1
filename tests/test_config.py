"""Config.from_env (every variable, safe defaults, hosted refusals) and the background manager."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dashboard import background
from dashboard.config import Config, ConfigError

KEY = "k" * 40


def test_defaults_are_local_and_safe():
    cfg = Config.from_env({})
    assert cfg.hosted is False
    assert cfg.admin_password is None and cfg.viewer_password is None
    assert cfg.background == "diskcache"
    assert cfg.max_upload_bytes == 16 * 1024 * 1024
    assert cfg.cache_dir == Path("instance") / "cache"
    assert len(cfg.secret_key) >= 32  # random, local mode only
    assert cfg.trusted_proxies == 0
    assert cfg.login_max_failures == 10 and cfg.login_window_s == 900
    assert cfg.session_hours == 12
    assert cfg.database_url.startswith("sqlite:///")


def test_every_variable_read(tmp_path):
    env = {
        "AINERD_DATA_DIR": str(tmp_path / "d"), "AINERD_INSTANCE_DIR": str(tmp_path / "i"),
        "AINERD_CACHE_DIR": str(tmp_path / "c"), "AINERD_DATABASE_URL": "sqlite:///x.db",
        "AINERD_SECRET_KEY": KEY, "AINERD_ADMIN_PASSWORD": "a", "AINERD_VIEWER_PASSWORD": "v",
        "AINERD_HOSTED": "1", "AINERD_BACKGROUND": "Celery", "AINERD_REDIS_URL": "redis://h:1/2",
        "AINERD_MAX_UPLOAD_MB": "2.5", "AINERD_TRUSTED_PROXIES": "1", "AINERD_LOGIN_MAX_FAILURES": "4",
        "AINERD_LOGIN_WINDOW_S": "30", "AINERD_SESSION_HOURS": "0.5",
    }
    cfg = Config.from_env(env)
    assert cfg.data_dir == tmp_path / "d" and cfg.instance_dir == tmp_path / "i"
    assert cfg.cache_dir == tmp_path / "c" and cfg.database_url == "sqlite:///x.db"
    assert cfg.secret_key == KEY and cfg.admin_password == "a" and cfg.viewer_password == "v"
    assert cfg.hosted and cfg.background == "celery" and cfg.redis_url == "redis://h:1/2"
    assert cfg.max_upload_bytes == int(2.5 * 1024 * 1024)
    assert (cfg.trusted_proxies, cfg.login_max_failures, cfg.login_window_s, cfg.session_hours) == (1, 4, 30, 0.5)


@pytest.mark.parametrize("env, needle", [
    ({"AINERD_HOSTED": "1"}, "AINERD_SECRET_KEY and AINERD_ADMIN_PASSWORD"),
    ({"AINERD_HOSTED": "1", "AINERD_SECRET_KEY": KEY}, "AINERD_ADMIN_PASSWORD"),
    ({"AINERD_HOSTED": "1", "AINERD_ADMIN_PASSWORD": "x"}, "AINERD_SECRET_KEY"),
    ({"AINERD_HOSTED": "yes", "AINERD_ADMIN_PASSWORD": "x", "AINERD_SECRET_KEY": "short"}, "at least 32"),
    ({"AINERD_BACKGROUND": "threads"}, "AINERD_BACKGROUND"),
    ({"AINERD_TRUSTED_PROXIES": "one"}, "AINERD_TRUSTED_PROXIES"),
    ({"AINERD_LOGIN_MAX_FAILURES": "-1"}, "AINERD_LOGIN_MAX_FAILURES"),
    ({"AINERD_TRUSTED_PROXIES": "1.5"}, "AINERD_TRUSTED_PROXIES"),
    ({"AINERD_MAX_UPLOAD_MB": "0"}, "AINERD_MAX_UPLOAD_MB"),
])
def test_refusals_name_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle):
        Config.from_env(env)


def test_empty_passwords_mean_none():
    cfg = Config.from_env({"AINERD_ADMIN_PASSWORD": "", "AINERD_VIEWER_PASSWORD": ""})
    assert cfg.admin_password is None and cfg.viewer_password is None


def test_overrides():
    cfg = Config.from_env({}, viewer_password="v", login_max_failures=2)
    assert cfg.viewer_password == "v" and cfg.login_max_failures == 2


def test_private_cache_dir(tmp_path):
    path = tmp_path / "cache"
    path.mkdir(mode=0o777)
    os.chmod(path, 0o777)
    background.private_dir(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    fresh = tmp_path / "fresh" / "cache"
    background.private_dir(fresh)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700


def test_diskcache_manager_shared_per_folder(tmp_path):
    from dash import DiskcacheManager

    cfg = Config.from_env({"AINERD_INSTANCE_DIR": str(tmp_path)})
    m1 = background.make_background_manager(cfg)
    m2 = background.make_background_manager(Config.from_env({"AINERD_INSTANCE_DIR": str(tmp_path)}))
    assert isinstance(m1, DiskcacheManager) and m1 is m2
    assert stat.S_IMODE(os.stat(tmp_path / "cache").st_mode) == 0o700


def test_celery_manager_configuration():
    pytest.importorskip("celery")
    from dash import CeleryManager

    cfg = Config.from_env({"AINERD_BACKGROUND": "celery", "AINERD_REDIS_URL": "redis://127.0.0.1:1/3"})
    manager = background.make_background_manager(cfg)
    assert isinstance(manager, CeleryManager)
    app = background.celery_app_for(cfg)
    assert manager.handle is app
    assert app.conf.accept_content == ["json"] and app.conf.task_serializer == "json"
