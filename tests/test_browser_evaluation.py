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


class _Study:
    """The study the test runs: created with the CLI, then what the database says about it
    (experts, image keys, candidates, the methods' ranks) and what our two experts answered."""

    def __init__(self, tiny: Path, db: str, base_url: str):
        r = subprocess.run([sys.executable, "-m", "ainerd_core", "study", "create", str(tiny), "--target", "11",
                            "--n", "5", "--experts", "Alice,Bob", "--base-url", base_url, "--db", db],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        self.links = r.stdout.split()
        assert len(self.links) == 2
        self.store = StudyStore(db)
        with self.store.session() as s:
            self.experts = {e.name: e.id for e in s.query(Expert)}
            self.key_to_cand = {a.image_key: (a.expert_id, a.candidate_id) for a in s.query(Assignment)}
            self.cand_index = {c.id: c.dataset_index for c in s.query(Candidate)}
            self.sources = [(x.method, x.rank, x.candidate_id) for x in s.query(CandidateSource)]
        self.total = len(self.cand_index)
        self.answers: dict[tuple[str, int], bool] = {}  # (expert, candidate id) -> answer
        self.orders: dict[str, list[int]] = {"Alice": [], "Bob": []}  # candidate ids in the order shown

    def policy(self, name, cid) -> bool:
        """The answers our two experts give."""
        i = self.cand_index[cid]
        return (i % 3 != 0) if name == "Alice" else (i % 2 == 0)

    def rate_some(self, name, drv, k):
        """``name`` rates the next ``k`` images, alternating keys and buttons."""
        for j in range(k):
            key, _ = state(drv)
            eid, cid = self.key_to_cand[key]
            assert eid == self.experts[name]  # only the expert's own keys
            self.orders[name].append(cid)
            self.answers[(name, cid)] = self.policy(name, cid)
            rate(drv, self.answers[(name, cid)], use_key=(j % 2 == 0))

    def stored_orders(self) -> dict[int, list[int]]:
        with self.store.session() as s:
            return {e: [a.candidate_id for a in s.query(Assignment).filter_by(expert_id=e).order_by(Assignment.position)]
                    for e in self.experts.values()}


def _open_links(study: _Study, drivers: dict):
    """Each expert opens their link: the token leaves the address bar, nothing is rated yet."""
    for (name, drv), link in zip(drivers.items(), study.links):
        drv.get(link)
        wait_for(lambda: drv.current_url.rstrip("/").endswith("/evaluate"), what="redirect")
        assert link.rsplit("/", 1)[1] not in drv.current_url  # the token left the address bar
        wait_for(lambda: state(drv)[0], what="first image")
        assert state(drv)[1] == f"0 / {study.total}"


def _go_back_and_change_the_last_answer(study: _Study, alice):
    from selenium.webdriver.common.by import By

    alice.find_element(By.TAG_NAME, "body").send_keys("\ue012")  # ArrowLeft
    wait_for(lambda: study.key_to_cand.get(state(alice)[0], (0, 0))[1] == study.orders["Alice"][-1], what="back")
    assert alice.find_element(By.ID, "eval-answer").text.startswith("Your answer:")
    cid = study.orders["Alice"][-1]
    study.answers[("Alice", cid)] = not study.answers[("Alice", cid)]
    rate(alice, study.answers[("Alice", cid)], use_key=False)


def _resume(study: _Study, drivers: dict, url: str):
    """After the restart each expert resumes at an unrated image with every acknowledged rating kept."""
    for name, drv in drivers.items():
        drv.get(url + "/evaluate/")
        wait_for(lambda: state(drv)[0], what="resume")
        done = len([k for k in study.answers if k[0] == name])
        assert state(drv)[1] == f"{done} / {study.total}"  # every acknowledged rating survived
        eid, cid = study.key_to_cand[state(drv)[0]]
        assert (name, cid) not in study.answers  # resumed at an unrated image


def _check_admin_results(study: _Study, driver, url: str):
    """The admin logs in and opens the study's results: the accuracy per method and rank (CSV
    export), the 50 % rank on the page and the event log match a hand computation."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/login?next=/admin/studies/1")
    wait_for(lambda: driver.find_element(By.ID, "password-admin"), what="login form")
    driver.find_element(By.ID, "password-admin").send_keys(ADMIN_PW)
    driver.find_element(By.ID, "submit-admin").click()
    table = wait_for(lambda: driver.find_element(By.ID, "admin-method-table"), timeout=60, what="admin results")
    assert driver.find_element(By.ID, "admin-accuracy")
    cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    csv_text = requests.get(url + "/admin/export/1/accuracy.csv", cookies=cookies, timeout=30).text
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    got = {(r["method"], int(r["rank"])): float(r["accuracy"]) for r in rows if r["expert"] == "average"}
    # hand computation: the mean over the two experts of the answers to each method's rank-r image
    hand = {}
    y = {m: np.zeros((2, 5)) for m in ("latent", "raw")}
    for m, rk, cid in study.sources:
        a, b = study.answers[("Alice", cid)], study.answers[("Bob", cid)]
        hand[(m, rk)] = (a + b) / 2
        y[m][:, rk - 1] = (a, b)
    assert got == hand
    text = table.text
    for m in ("latent", "raw"):
        last = ev.last_rank_above(ev.smoothed_accuracy(y[m], 21))
        # answered / total = 2 experts x 5 ranks, all answered
        assert f"{m} 10 / 10 " in text and f" {last} " in text.split(m, 1)[1].split("\n")[0] + " ", text
    log = requests.get(url + "/admin/export/1/rating_events.csv", cookies=cookies, timeout=30).text
    assert len(log.strip().splitlines()) - 1 == 2 * study.total + 1  # every click, the changed answer included


def test_whole_study_in_browser(tmp_path):
    require_browser()
    from selenium.webdriver.common.by import By

    data, instance = tmp_path / "data", tmp_path / "instance"
    data.mkdir()
    tiny = build_tiny(data / "tiny.h5", n=24)
    db = f"sqlite:///{(instance / 'ainerd.db').resolve()}"
    env = dict(AINERD_SECRET_KEY=SECRET, AINERD_ADMIN_PASSWORD=ADMIN_PW)
    server = start_server(data, instance, **env)
    drivers = {}
    try:
        study = _Study(tiny, db, server.url)
        total = study.total
        drivers = {"Alice": make_driver(), "Bob": make_driver()}
        alice, bob = drivers["Alice"], drivers["Bob"]
        _open_links(study, drivers)
        study.rate_some("Alice", alice, 4)
        study.rate_some("Bob", bob, 3)
        db_orders = study.stored_orders()
        # each expert sees the images in their own stored order, and the orders differ
        experts, orders = study.experts, study.orders
        assert orders["Alice"] == db_orders[experts["Alice"]][:4] and orders["Bob"] == db_orders[experts["Bob"]][:3]
        assert db_orders[experts["Alice"]] != db_orders[experts["Bob"]]
        _go_back_and_change_the_last_answer(study, alice)  # Alice goes back (Left key) and changes it
        assert state(alice)[1] == f"4 / {total}"

        # kill -9 mid-way, restart on the same database and secret
        server.kill()
        server = start_server(data, instance, **env)
        _resume(study, drivers, server.url)
        study.rate_some("Alice", alice, total - 4)
        study.rate_some("Bob", bob, total - 3)
        for drv in (alice, bob):
            wait_for(lambda: drv.find_element(By.ID, "eval-position").text.startswith("All "), what="done")
            assert state(drv)[1] == f"{total} / {total}"
            assert not [m for m in console_errors(drv) if "favicon" not in m]
        assert sorted(orders["Alice"]) == sorted(orders["Bob"]) == sorted(study.cand_index)
        assert orders["Alice"] != orders["Bob"]
        _check_admin_results(study, alice, server.url)
    finally:
        for d in drivers.values():
            quit_driver(d)
        server.stop()
