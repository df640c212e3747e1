"""Sessions and the login limit against a real server: gunicorn, 3 worker processes x 4 threads
(the hosted configuration), real concurrent HTTP requests.

- 60 concurrent wrong-password attempts from one address: exactly AINERD_LOGIN_MAX_FAILURES
  (10) have their password checked (401), the other 50 get 429; a correct password then gets
  429 too (the limit holds until the window has passed);
- a copied session cookie works in every worker until its owner logs out, then in none;
- the instance folder is 0700 and the database 0600 when gunicorn created them.
"""
from __future__ import annotations

import os
import re
import stat
import threading

import pytest
import requests

from browser_support import start_server

pytestmark = pytest.mark.slow

SECRET = "c" * 64
ADMIN_PW = "concurrency-admin-password"
VIEWER_PW = "concurrency-viewer-password"
N_ATTEMPTS = 60
MAX_FAILURES = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    instance = tmp_path_factory.mktemp("base") / "instance"  # gunicorn's workers create it
    old = os.umask(0o022)
    try:
        srv = start_server(data, instance, gunicorn_workers=3, AINERD_SECRET_KEY=SECRET,
                           AINERD_ADMIN_PASSWORD=ADMIN_PW, AINERD_VIEWER_PASSWORD=VIEWER_PW,
                           AINERD_LOGIN_MAX_FAILURES=str(MAX_FAILURES), AINERD_LOGIN_WINDOW_S="600",
                           GUNICORN_THREADS="4")
    finally:
        os.umask(old)
    srv.instance = instance
    try:
        yield srv
    finally:
        srv.stop()


def form_token(s: requests.Session, base: str) -> str:
    page = s.get(base + "/login", timeout=30)
    return re.search(r"name='csrf_token' value='([^']+)'", page.text).group(1)


def test_instance_private_when_gunicorn_made_it(server):
    assert stat.S_IMODE(server.instance.stat().st_mode) == 0o700
    db = server.instance / "ainerd.db"
    assert db.exists() and stat.S_IMODE(db.stat().st_mode) == 0o600


def test_copied_cookie_dies_with_logout_in_every_worker(server):
    owner = requests.Session()
    token = form_token(owner, server.url)
    r = owner.post(server.url + "/login", data=dict(role="admin", password=ADMIN_PW, csrf_token=token, next="/admin/"),
                   allow_redirects=False, timeout=30)
    assert r.status_code == 303
    cookie = owner.cookies.get("session")
    thief = requests.Session()
    thief.cookies.set("session", cookie)
    # new connections: the workers take turns; each accepts the copy while the session lives
    for _ in range(6):
        assert thief.get(server.url + "/admin/_dash-layout", headers={"Connection": "close"}, timeout=30).status_code == 200
    page = owner.get(server.url + "/logout", timeout=30)
    token = re.search(r"name='csrf_token' value='([^']+)'", page.text).group(1)
    assert owner.post(server.url + "/logout", data={"csrf_token": token}, allow_redirects=False,
                      timeout=30).status_code == 303
    codes = [thief.get(server.url + "/admin/_dash-layout", headers={"Connection": "close", "Accept": "application/json"},
                       timeout=30).status_code for _ in range(6)]
    assert codes == [401] * 6, codes


def test_login_limit_exact_under_concurrency(server):
    sessions = [requests.Session() for _ in range(N_ATTEMPTS)]
    tokens = [form_token(s, server.url) for s in sessions]
    barrier = threading.Barrier(N_ATTEMPTS)
    codes: list[int] = [0] * N_ATTEMPTS

    def attempt(i):
        barrier.wait()
        r = sessions[i].post(server.url + "/login", data=dict(role="admin", password=f"wrong-{i}",
                                                              csrf_token=tokens[i], next="/"),
                             allow_redirects=False, timeout=120)
        codes[i] = r.status_code

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(N_ATTEMPTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = {c: codes.count(c) for c in set(codes)}
    print("60 concurrent wrong passwords ->", counts)
    assert counts == {401: MAX_FAILURES, 429: N_ATTEMPTS - MAX_FAILURES}, counts
    # the right password is not even checked now
    s = requests.Session()
    r = s.post(server.url + "/login", data=dict(role="admin", password=ADMIN_PW, csrf_token=form_token(s, server.url)),
               allow_redirects=False, timeout=30)
    assert r.status_code == 429 and "Too many failed logins" in r.text
