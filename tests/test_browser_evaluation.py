"""A whole blind study in a real browser against a real server process.

Created with the CLI on a small dataset; two experts rate through their links (different
orders), with buttons and keys, one goes back and changes an answer; the server is killed with
SIGKILL mid-way and restarted; both finish; the admin results (accuracy per rank, exported
CSV, and the 50 % rank on the page) are checked against a hand computation from the answers.
"""
from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from ainerd_core import evaluation as ev
from ainerd_core.studies import Assignment, Candidate, CandidateSource, Expert, StudyStore
from ainerd_core.testing import build_tiny

from browser_support import (console_errors, make_driver, quit_driver, require_browser, start_server,
                             wait_for)

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[1]
SECRET = "b" * 48
ADMIN_PW = "browser admin pw"


def state(driver):
    from selenium.webdriver.common.by import By

    src = driver.find_element(By.ID, "eval-candidate").get_attribute("src") or ""
    return src.rsplit("/", 1)[-1] if "/evaluate/img/" in src else "", driver.find_element(By.ID, "eval-progress").text


def rate(driver, answer: bool, use_key: bool):
    """Rate the shown image and wait until the app acknowledged (progress or image changed)."""
    from selenium.webdriver.common.by import By

    before = state(driver)
    if use_key:
        driver.find_element(By.TAG_NAME, "body").send_keys("s" if answer else "d")
    else:
        driver.find_element(By.ID, "rate-similar" if answer else "rate-not-similar").click()
    wait_for(lambda: state(driver) != before, what="acknowledgement")


def test_whole_study_in_browser(tmp_path):
    require_browser()
    from selenium.webdriver.common.by import By

    data, instance = tmp_path / "data", tmp_path / "instance"
    data.mkdir()
    tiny = build_tiny(data / "tiny.h5", n=24)
    db = f"sqlite:///{(instance / 'ainerd.db').resolve()}"
    env = dict(AINERD_SECRET_KEY=SECRET, AINERD_ADMIN_PASSWORD=ADMIN_PW)
    server = start_server(data, instance, **env)
    drivers = []
    try:
        r = subprocess.run([sys.executable, "-m", "ainerd_core", "study", "create", str(tiny), "--target", "11",
                            "--n", "5", "--experts", "Alice,Bob", "--base-url", server.url, "--db", db],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        links = r.stdout.split()
        assert len(links) == 2
        store = StudyStore(db)
        with store.session() as s:
            experts = {e.name: e.id for e in s.query(Expert)}
            key_to_cand = {a.image_key: (a.expert_id, a.candidate_id) for a in s.query(Assignment)}
            cand_index = {c.id: c.dataset_index for c in s.query(Candidate)}
            sources = [(x.method, x.rank, x.candidate_id) for x in s.query(CandidateSource)]
        total = len(cand_index)

        def policy(name, cid):  # the answers our two experts give
            i = cand_index[cid]
            return (i % 3 != 0) if name == "Alice" else (i % 2 == 0)

        answers = {}
        orders = {}
        alice, bob = make_driver(), make_driver()
        drivers += [alice, bob]
        for name, drv, link in (("Alice", alice, links[0]), ("Bob", bob, links[1])):
            drv.get(link)
            wait_for(lambda: drv.current_url.rstrip("/").endswith("/evaluate"), what="redirect")
            assert link.rsplit("/", 1)[1] not in drv.current_url  # the token left the address bar
            wait_for(lambda: state(drv)[0], what="first image")
            assert state(drv)[1] == f"0 / {total}"
            orders[name] = []

        def rate_some(name, drv, k):
            for j in range(k):
                key, _ = state(drv)
                eid, cid = key_to_cand[key]
                assert eid == experts[name]  # only the expert's own keys
                orders[name].append(cid)
                answers[(name, cid)] = policy(name, cid)
                rate(drv, answers[(name, cid)], use_key=(j % 2 == 0))

        rate_some("Alice", alice, 4)
        rate_some("Bob", bob, 3)
        with store.session() as s:
            db_orders = {e: [a.candidate_id for a in s.query(Assignment).filter_by(expert_id=e).order_by(Assignment.position)] for e in experts.values()}
        # each expert sees the images in their own stored order, and the orders differ
        assert orders["Alice"] == db_orders[experts["Alice"]][:4] and orders["Bob"] == db_orders[experts["Bob"]][:3]
        assert db_orders[experts["Alice"]] != db_orders[experts["Bob"]]
        # Alice goes back (Left key) to her last answer and changes it
        alice.find_element(By.TAG_NAME, "body").send_keys("\ue012")  # ArrowLeft
        wait_for(lambda: key_to_cand.get(state(alice)[0], (0, 0))[1] == orders["Alice"][-1], what="back")
        assert alice.find_element(By.ID, "eval-answer").text.startswith("Your answer:")
        cid = orders["Alice"][-1]
        answers[("Alice", cid)] = not answers[("Alice", cid)]
        rate(alice, answers[("Alice", cid)], use_key=False)
        assert state(alice)[1] == f"4 / {total}"

        # kill -9 mid-way, restart on the same database and secret
        server.kill()
        server = start_server(data, instance, **env)
        for name, drv in (("Alice", alice), ("Bob", bob)):
            drv.get(server.url + "/evaluate/")
            wait_for(lambda: state(drv)[0], what="resume")
            done = len([k for k in answers if k[0] == name])
            assert state(drv)[1] == f"{done} / {total}"  # every acknowledged rating survived
            eid, cid = key_to_cand[state(drv)[0]]
            assert (name, cid) not in answers  # resumed at an unrated image
        rate_some("Alice", alice, total - 4)
        rate_some("Bob", bob, total - 3)
        for drv in (alice, bob):
            wait_for(lambda: drv.find_element(By.ID, "eval-position").text.startswith("All "), what="done")
            assert state(drv)[1] == f"{total} / {total}"
            assert not [m for m in console_errors(drv) if "favicon" not in m]
        assert sorted(orders["Alice"]) == sorted(orders["Bob"]) == sorted(cand_index)
        assert orders["Alice"] != orders["Bob"]

        # the admin logs in and opens the study's results
        alice.get(server.url + "/login?next=/admin/studies/1")
        wait_for(lambda: alice.find_element(By.ID, "password-admin"), what="login form")
        alice.find_element(By.ID, "password-admin").send_keys(ADMIN_PW)
        alice.find_element(By.ID, "submit-admin").click()
        table = wait_for(lambda: alice.find_element(By.ID, "admin-method-table"), timeout=60, what="admin results")
        assert alice.find_element(By.ID, "admin-accuracy")
        cookies = {c["name"]: c["value"] for c in alice.get_cookies()}
        csv_text = requests.get(server.url + "/admin/export/1/accuracy.csv", cookies=cookies, timeout=30).text
        rows = list(csv.DictReader(io.StringIO(csv_text)))
        got = {(r["method"], int(r["rank"])): float(r["accuracy"]) for r in rows if r["expert"] == "average"}
        # hand computation: the mean over the two experts of the answers to each method's rank-r image
        hand = {}
        y = {m: np.zeros((2, 5)) for m in ("latent", "raw")}
        for m, rk, cid in sources:
            a, b = answers[("Alice", cid)], answers[("Bob", cid)]
            hand[(m, rk)] = (a + b) / 2
            y[m][:, rk - 1] = (a, b)
        assert got == hand
        text = table.text
        for m in ("latent", "raw"):
            last = ev.last_rank_above(ev.smoothed_accuracy(y[m], 21))
            # answered / total = 2 experts x 5 ranks, all answered
            assert f"{m} 10 / 10 " in text and f" {last} " in text.split(m, 1)[1].split("\n")[0] + " ", text
        log = requests.get(server.url + "/admin/export/1/rating_events.csv", cookies=cookies, timeout=30).text
        assert len(log.strip().splitlines()) - 1 == 2 * total + 1  # every click, the changed answer included
    finally:
        for d in drivers:
            quit_driver(d)
        server.stop()
