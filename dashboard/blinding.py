"""Blinding that survives explorer access: datasets of open studies are withheld from the explorer.

The attack (issue 14): an expert of an open study who can also use the explorer (it is open
without ``AINERD_VIEWER_PASSWORD``, or the expert holds the viewer password) finds the study's
target on the similarity page and reads off which method found each candidate and at which
rank. Refusing only the expert's browser session does not help: the same person opens a
private window. So the design withholds the *data*, not the person:

1. **Withheld datasets.** While a study is open, its dataset (matched by resolved path, and any
   copy of the same file in the data folder, matched by size and a SHA-256 of its first and last
   MiB) is withheld from every explorer request that is not the admin's: it is missing from the
   dataset list and the catalog (:class:`BlindedCatalog` wraps the explorer's catalog, so the
   router, the pages and their callbacks cannot resolve it), and the gate
   (:meth:`Blinding.check`) answers 403 to

   - ``/_maps/<id>/...`` and ``/_results/<id>/...`` (map and figure images),
   - ``/_dash-update-component`` whose inputs or state name the dataset (``dataset-store``,
     ``dataset-select``, a ``?dataset=<id>`` search string, any string value equal to the id),
   - page loads with ``?dataset=<id>``.

   Closing the study releases the dataset at once (the list of open studies is read from the
   database on every such request; no cache, so every worker agrees).
2. **Expert sessions get no explorer.** A browser that holds the session of an expert whose
   study is open gets 403 on every explorer route (defence in depth; an admin login overrides).
3. **The admin sees everything**, with the list of withheld datasets and warnings where blinding
   is at risk (:meth:`Blinding.report`): a study dataset no longer at its recorded path (its
   copies cannot be recognised by path), and data-folder datasets that look like another version
   of a study's data (same number of maps and the same title, different file) - those are *not*
   withheld and the admin should move them out of the data folder while the study runs.

What this does not cover: an expert who knows the admin password, and copies of the maps held
outside this server.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote

import flask

_MAP_ROUTE = re.compile(r"^/_(?:maps|results)/([^/]+)/")
_FP_BYTES = 1 << 20
EXPERT_SESSION_KEY = "ainerd_expert"  # dashboard.evaluation_app.SESSION_KEY


class Blinding:
    """Which datasets are withheld now, and the explorer gate (one per server)."""

    def __init__(self, config, store, catalog):
        self.config = config
        self.store = store
        self.catalog = catalog  # the explorer's unwrapped catalog
        self._fp_cache: dict[tuple, str] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ file identity
    def _fingerprint(self, path: Path) -> str | None:
        """size + SHA-256 of the first and last MiB (cached per path, mtime and size)."""
        try:
            st = path.stat()
        except OSError:
            return None
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            got = self._fp_cache.get(key)
        if got is not None:
            return got
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                h.update(f.read(_FP_BYTES))
                if st.st_size > _FP_BYTES:
                    f.seek(max(_FP_BYTES, st.st_size - _FP_BYTES))
                    h.update(f.read(_FP_BYTES))
        except OSError:
            return None
        got = f"{st.st_size}:{h.hexdigest()}"
        with self._lock:
            if len(self._fp_cache) > 4096:
                self._fp_cache.clear()
            self._fp_cache[key] = got
        return got

    # ------------------------------------------------------------------ what is withheld
    def _compute(self) -> dict[str, list[int]]:
        studies = self.store.open_study_datasets()
        if not studies:
            return {}
        by_path: dict[str, list[int]] = {}
        by_fp: dict[str, list[int]] = {}
        sizes = set()
        for sid, p in studies:
            path = Path(p)
            by_path.setdefault(os.path.realpath(path), []).append(sid)
            fp = self._fingerprint(path)
            if fp is not None:
                by_fp.setdefault(fp, []).append(sid)
                sizes.add(int(fp.split(":", 1)[0]))
        out: dict[str, list[int]] = {}
        for entry in self.catalog.entries():
            sids = list(by_path.get(os.path.realpath(entry.path), []))
            if entry.size_bytes in sizes:
                fp = self._fingerprint(entry.path)
                sids += [s for s in by_fp.get(fp, []) if s not in sids]
            if sids:
                out[entry.id] = sorted(sids)
        return out

    def withheld(self) -> dict[str, list[int]]:
        """{dataset id: [open study ids]} of the datasets withheld from non-admin requests
        (computed once per request; outside a request, freshly)."""
        if not flask.has_request_context():
            return self._compute()
        got = getattr(flask.g, "ainerd_withheld", None)
        if got is None:
            got = flask.g.ainerd_withheld = self._compute()
        return got

    def hidden_for_this_request(self) -> set[str]:
        """Dataset ids this request may not see (empty for the admin and outside requests)."""
        if not flask.has_request_context() or _is_admin():
            return set()
        return set(self.withheld())

    # ------------------------------------------------------------------ the gate
    def _expert_of_open_study(self) -> bool:
        eid = flask.session.get(EXPERT_SESSION_KEY)
        if eid is None:
            return False
        ok, _ = self.store.check_expert(eid)
        return ok is not None

    def check(self, path: str):
        """``before_request`` part for explorer routes; None to let the request through."""
        if _is_admin():
            return None
        if self._expert_of_open_study():
            return _refuse("This browser holds the link of an open blind-evaluation study: the explorer "
                           "is closed to it until the study ends.", "expert-session")
        withheld = None
        m = _MAP_ROUTE.match(path)
        if m:
            withheld = self.withheld()
            if unquote(m.group(1)) in withheld:
                return _refuse_dataset(unquote(m.group(1)), withheld)
            return None
        if path.endswith("/_dash-update-component") and flask.request.method == "POST":
            withheld = self.withheld()
            if withheld:
                body = flask.request.get_json(silent=True)
                if isinstance(body, dict):
                    named = _named_datasets([body.get("inputs"), body.get("state")], withheld)
                    if named:
                        return _refuse_dataset(named, withheld)
            return None
        wanted = flask.request.args.get("dataset")
        if wanted:
            withheld = self.withheld()
            if wanted in withheld:
                return _refuse_dataset(wanted, withheld)
        return None

    # ------------------------------------------------------------------ admin report
    def report(self) -> dict:
        """For the admin page: withheld datasets and warnings where blinding is at risk."""
        withheld = self._compute()
        studies = self.store.open_study_datasets()
        warnings = []
        study_entries = {}
        for sid, p in studies:
            path = Path(p)
            if not path.exists():
                warnings.append(f"study {sid}: its dataset {p} is no longer at that path, so copies of it in the "
                                "data folder cannot be recognised; check the data folder by hand.")
                continue
            try:
                from ainerd_core.dataset import open_dataset

                with open_dataset(path) as ds:
                    study_entries[sid] = (int(ds.n_maps), str(ds.attrs.get("title", "")), os.path.realpath(path))
            except Exception as exc:  # noqa: BLE001 - a report, never a failure
                warnings.append(f"study {sid}: its dataset {p} cannot be read ({exc}).")
        for entry in self.catalog.entries():
            if entry.error is not None or entry.id in withheld:
                continue
            for sid, (n, title, real) in study_entries.items():
                if title and entry.n_maps == n and str(entry.attrs.get("title", "")) == title \
                        and os.path.realpath(entry.path) != real:
                    warnings.append(f"blinding at risk: the explorer serves '{entry.id}', which looks like another "
                                    f"version of study {sid}'s data (same title, {n} maps) but is a different file; "
                                    "move it out of the data folder while the study runs.")
        if not self.config.viewer_password:
            note = "The explorer is open to everybody (no AINERD_VIEWER_PASSWORD)."
        else:
            note = "The explorer needs the viewer password."
        return {"withheld": withheld, "warnings": warnings, "note": note, "n_open": len(studies)}


def _is_admin() -> bool:
    from .auth import current_role

    try:
        return current_role() == "admin"
    except Exception:  # noqa: BLE001 - a broken session is not admin
        return False


def _named_datasets(values, withheld: dict) -> str | None:
    """The first withheld dataset id named anywhere in ``values`` (nested lists/dicts of a Dash
    request): a string equal to the id, or a query string with ``dataset=<id>``."""
    stack = list(values)
    seen = 0
    while stack and seen < 100000:
        seen += 1
        v = stack.pop()
        if isinstance(v, str):
            if v in withheld:
                return v
            if "dataset" in v:
                q = v.split("?", 1)[-1]
                for d in parse_qs(q).get("dataset", []):
                    if d in withheld:
                        return d
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def _refuse(message: str, reason: str, status: int = 403):
    wants_html = (flask.request.method == "GET" and "/_" not in flask.request.path
                  and flask.request.accept_mimetypes.best_match(["text/html", "application/json"]) == "text/html")
    if wants_html:
        from .auth import _page

        import html as _html

        return _page("Not available", f"<p class='error' id='blinding-refused'>{_html.escape(message)}</p>"
                                      "<p><a href='/'>Explorer</a></p>", status=status)
    response = flask.jsonify(error=message, reason=reason)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _refuse_dataset(dataset_id: str, withheld: dict):
    sids = ", ".join(str(s) for s in withheld.get(dataset_id, []))
    return _refuse(f"Dataset '{dataset_id}' is under blind evaluation (study {sids}) and withheld from the "
                   "explorer until the study closes; only the admin can open it now.", "blind-evaluation")


class BlindedCatalog:
    """The explorer's catalog without the withheld datasets (for non-admin requests)."""

    def __init__(self, inner, blinding: Blinding):
        self._inner = inner
        self._blinding = blinding

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _hidden(self) -> set[str]:
        return self._blinding.hidden_for_this_request()

    def entries(self):
        hidden = self._hidden()
        return [e for e in self._inner.entries() if e.id not in hidden]

    def ids(self):
        return [e.id for e in self.entries()]

    def get(self, dataset_id):
        if dataset_id and str(dataset_id) in self._hidden():
            return None
        return self._inner.get(dataset_id)

    def default_id(self):
        good = [e for e in self.entries() if e.error is None]
        for e in good:
            if e.has_results:
                return e.id
        return good[0].id if good else None

    def resolve(self, dataset_id):
        return self.get(dataset_id) or self.get(self.default_id())


def blinded_catalog(server: flask.Flask, config, inner) -> BlindedCatalog:
    """The explorer's catalog without withheld datasets; installs :class:`Blinding` on ``server``
    (its gate runs in :func:`dashboard.auth._enforce`). Called by the explorer before any page
    registers its callbacks, so every page holds the wrapped catalog."""
    from .auth import _store

    blinding = Blinding(config, _store(config), inner)
    server.extensions["ainerd_blinding"] = blinding
    return BlindedCatalog(inner, blinding)
