"""The explorer's pages and the interface every page module implements.

The explorer (:mod:`dashboard.explorer`) routes with one ``dcc.Location(id="url")`` itself (no
``dash.register_page`` / ``use_pages``). Each page is a module ``dashboard.pages.<name>`` listed
in :data:`PAGE_MODULES`; modules are imported lazily by :func:`load_pages`, and a module that is
missing or fails to import is skipped with a warning (the app still starts).

A page module provides
----------------------
``PATH`` : str
    Its URL path, e.g. ``"/timeline"`` (``"/"`` for the overview).
``TITLE`` : str
    Label in the navbar and the browser tab.
``ORDER`` : int
    Position in the navbar (small first).
``REQUIRES`` : tuple of str, optional
    What a dataset must have for the page to make sense, any of ``"results"``, ``"maps"``,
    ``"rheology"``. The explorer shows a clear message instead of calling ``layout`` when the
    selected dataset lacks one of them (pages may also handle partial data themselves: then
    leave it empty and check ``ctx.dataset``).
``layout(ctx: PageContext) -> dash component``
    Builds the page for the selected dataset, called by the router on every navigation or
    dataset change. It should put the initial figures straight into the layout (one round
    trip), reading the cached arrays through ``ctx.dataset`` (a
    :class:`dashboard.catalog.DatasetEntry`), never all maps: maps are shown as images through
    :func:`dashboard.images.map_image_url`.
``register_callbacks(app, services: Services) -> None``
    Registers the page's callbacks, once per app, **with ``app.callback``** on the given
    instance (never the global ``dash.callback``). Callbacks find the selected dataset with
    ``State(DATASET_STORE, "data")`` (the dataset id, a str or None) and
    ``services.catalog.get(dataset_id)``. Component ids must be unique across pages: prefix
    them with the page name (``"timeline-k"``, ``"similarity-target"``...).

Helpers in :mod:`dashboard.explorer` for page modules: ``graph_card`` (a figure with its PNG
and CSV buttons) + ``register_csv_download`` (``register_clustering_csv`` for a figure drawn for
one clustering), ``register_seeded_redraw`` (a 'draw other maps' button with its seed),
``thumbnail_grid`` (map thumbnails through the PNG route, or a "latents only" message),
``map_detail`` (one map, optionally its reconstruction, and its metadata), ``message``. The
clustering a page shows (a precomputed k or a re-clustering result of the session) comes from
:mod:`dashboard.clusterings` (``k_options``, ``pick_k``, ``labels_for``, ``counts_for``,
``choice_label``); pages import shared modules like these, never each other. Figures sent to the browser must carry event ``customdata`` as plain
lists (:func:`dashboard.figures.common.event_list`): dcc.Graph drops customdata of base64 arrays
from click/hover/selection events.

Long work (a background callback with a progress bar) goes through
:func:`dashboard.explorer.register_background_callback` (``services.register_background``),
which uses the single background manager the app created (``services.background_manager``).

Ids shared by all pages (defined by the explorer's shell)
---------------------------------------------------------
``url`` (dcc.Location), :data:`DATASET_STORE` (dcc.Store holding the selected dataset id),
``dataset-select`` (the navbar dropdown), ``page-content`` (the router's output).
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
from types import ModuleType
from typing import Any, Callable

log = logging.getLogger(__name__)

#: the explorer's pages, in no particular order (ORDER sorts the navbar)
PAGE_MODULES: tuple[str, ...] = ("overview", "timeline", "sectors", "latent_map",
                                 "similarity", "clusters", "model", "compare", "help")

#: id of the dcc.Store with the selected dataset id (str or None)
DATASET_STORE = "dataset-store"

#: dataset capabilities a page may require (see ``REQUIRES``)
CAPABILITIES = ("results", "maps", "rheology")


@dataclasses.dataclass
class PageContext:
    """What a page's ``layout`` gets.

    Attributes
    ----------
    dataset : DatasetEntry or None
        The selected dataset (cached arrays: ``dataset.result("labels")``, ``dataset.meta``,
        ``dataset.attrs``, ``dataset.has_maps``...), None when the data folder is empty.
    dataset_id : str or None
        Its id (the file name without ``.h5``), what ``?dataset=`` holds.
    datasets : list of DatasetEntry
        Every dataset of the data folder (for the overview).
    query : dict of str -> str
        The URL query parameters (first value each), e.g. ``{"dataset": "demo", "k": "5"}``.
    services : Services
        The app's shared services (catalog, config, background manager...).
    state : dict
        The validated, typed view state of the URL (:func:`dashboard.view_state.parse`):
        ``{"dataset": "demo", "k": 3, "times": [0, 4], "map": 17, ...}``; bad values are
        already dropped (range checks against the dataset are the page's).
    session_clusterings : list of str
        Ids of the re-clustering results this browser tab made (:mod:`dashboard.clusterings`).
    """

    dataset: Any
    dataset_id: str | None
    datasets: list
    query: dict[str, str]
    services: "Services"
    state: dict = dataclasses.field(default_factory=dict)
    session_clusterings: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not self.state and self.query:  # built by hand (tests, scripts): the state is the query's
            from urllib.parse import urlencode

            from dashboard import view_state

            self.state = view_state.parse("?" + urlencode(self.query))

    @property
    def instance_dir(self):
        """The app's instance folder (re-clustering results live there), or None."""
        return getattr(getattr(self.services, "config", None), "instance_dir", None)

    def href(self, path: str, **params) -> str:
        """A link to ``path`` that keeps the selected dataset (and adds ``params``)."""
        return self.services.href(path, self.dataset_id, **params)


@dataclasses.dataclass
class Services:
    """Shared objects handed to every page's ``register_callbacks``.

    Attributes
    ----------
    app : dash.Dash
        The explorer app (register callbacks with ``app.callback``).
    config : dashboard.config.Config
    catalog : dashboard.catalog.Catalog
        ``catalog.get(dataset_id)`` -> DatasetEntry or None; ``catalog.entries()``.
    background_manager : object
        The app's one Dash background-callback manager (diskcache or celery).
    register_background : callable
        :func:`dashboard.explorer.register_background_callback` bound to this app: use it for
        long work, e.g. ``services.register_background(output=..., inputs=..., progress=...)``
        as a decorator.
    pages : list of module
        The loaded page modules, sorted by ORDER.
    """

    app: Any
    config: Any
    catalog: Any
    background_manager: Any
    register_background: Callable
    pages: list = dataclasses.field(default_factory=list)

    def href(self, path: str, dataset_id: str | None, **params) -> str:
        """URL of ``path`` with ``?dataset=<id>`` (and extra query parameters)."""
        from urllib.parse import urlencode

        query = {"dataset": dataset_id} if dataset_id else {}
        query.update({k: v for k, v in params.items() if v is not None})
        return path + ("?" + urlencode(query) if query else "")


def load_pages(names: tuple[str, ...] = PAGE_MODULES) -> list[ModuleType]:
    """Import the page modules that exist and implement the interface, sorted by ORDER."""
    pages = []
    for name in names:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                log.info("page %s not available", name)
            else:
                log.warning("page %s skipped: %s", name, exc)
            continue
        except Exception:  # a broken page must not take the explorer down
            log.exception("page %s failed to import", name)
            continue
        missing = [a for a in ("PATH", "TITLE", "layout") if not hasattr(mod, a)]
        if missing:
            log.warning("page %s skipped: missing %s", name, ", ".join(missing))
            continue
        pages.append(mod)
    return sorted(pages, key=lambda m: (getattr(m, "ORDER", 100), m.PATH))


def missing_requirements(page: ModuleType, entry) -> list[str]:
    """The capabilities of ``REQUIRES`` the dataset ``entry`` lacks (empty: the page can show)."""
    needs = tuple(getattr(page, "REQUIRES", ()))
    if entry is None:
        return list(needs) or []
    have = {"results": entry.has_results, "maps": entry.has_maps, "rheology": entry.has_rheology}
    return [n for n in needs if not have.get(n, False)]


def parse_query(search: str | None) -> dict[str, str]:
    """``"?dataset=demo&k=5"`` -> ``{"dataset": "demo", "k": "5"}`` (first value of each key)."""
    from urllib.parse import parse_qs

    parsed = parse_qs((search or "").lstrip("?"), keep_blank_values=False)
    return {k: v[0] for k, v in parsed.items() if v}

