"""The dashboard's aiohttp application: every page at /PATH and its JSON twin at /api/PATH, the error pages, and
the metadata store, opened read-only on the first request that needs it (so that a store made after the dashboard
started is found) and kept open after that.

Requests are answered one at a time: an MLMD store handle is not safe to share between threads, and each page
costs a few milliseconds of ML Metadata queries, which a local dashboard can afford to run on the event loop.
"""
from __future__ import annotations

import datetime
import os
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jinja2
import orjson
from aiohttp import web
from ml_metadata import metadata_store

from pipeline.config import PipelineConfig
from pipeline.metadata import store as mlmd_store
from pipeline.ui import charts, live, pages

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
NAVIGATION = (("/runs", "Runs"), ("/models", "Models"), ("/monitor", "Monitor"), ("/lineage/served", "Lineage"),
              ("/compare", "Compare"))
STATE_KEY = web.AppKey("state", "DashboardState")


class DashboardState:
    """The configuration, the templates and the store (None until a request opens it)."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self.connection = config.metadata_connection_config()
        self.where = mlmd_store.describe_connection(self.connection)
        self._store: metadata_store.MetadataStore | None = None
        self.session: aiohttp.ClientSession | None = None
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                                            autoescape=jinja2.select_autoescape(["html"]),
                                            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.templates.globals.update(
            bar_chart=lambda *a, **k: jinja2.utils.markupsafe.Markup(charts.bar_chart(*a, **k)),
            line_chart=lambda *a, **k: jinja2.utils.markupsafe.Markup(charts.line_chart(*a, **k)),
            feature_histogram=lambda f: jinja2.utils.markupsafe.Markup(charts.histogram(
                [(b["low"], b["high"], b["count"]) for b in f["histogram"]], title=f"{f['name']}: values")),
            quote=lambda text: urllib.parse.quote(str(text), safe=""), navigation=NAVIGATION,
            number=_number, as_text=_as_text)

    def store(self) -> metadata_store.MetadataStore:
        if self._store is None:
            store = mlmd_store.open_store(self.connection)
            mlmd_store.require_not_empty(store, self.where)
            self._store = store
        return self._store

    def render(self, template: str, **values: Any) -> str:
        return self.templates.get_template(template).render(
            store=self.where, pipeline=self.config.pipeline_name,
            generated=datetime.datetime.now().isoformat(timespec="seconds"), **values)


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY),
                        status=status, content_type="application/json")


ERRORS = {  # exception class -> HTTP status, page title
    mlmd_store.StoreNotFoundError: (503, "No metadata store yet"),
    mlmd_store.EmptyStoreError: (503, "The metadata store is empty"),
    mlmd_store.CorruptStoreError: (500, "The metadata store cannot be read"),
    mlmd_store.NotFoundError: (404, "Not found"),
    pages.BadRequest: (400, "Bad request"),
    mlmd_store.MetadataError: (500, "Metadata error"),
}


@web.middleware
async def errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    """Every failure as a page (or, under /api/, JSON) that says what happened and what to do."""
    state = request.app[STATE_KEY]
    api = request.path.startswith("/api/")
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        status, title, message = e.status, e.reason, (
            f"There is no page at {request.path}." if e.status == 404 else e.text or e.reason)
    except tuple(ERRORS) as e:
        status, title = next(v for k, v in ERRORS.items() if isinstance(e, k))
        message = str(e)
    if api:
        return _json({"error": title, "message": message, "status": status}, status)
    kind = "no_store" if status == 503 else "error"
    html = state.render("error.html", title=title, message=message, status=status, kind=kind,
                        metadata_path=state.config.metadata_path)
    return web.Response(text=html, status=status, content_type="text/html")


def page_route(build: Callable[[web.Request, DashboardState], Awaitable[pages.Page]]):
    """A page handler and its /api/ twin, from one function that builds the page's data."""
    async def html(request: web.Request) -> web.Response:
        state = request.app[STATE_KEY]
        page = await build(request, state)
        return web.Response(text=state.render(page.template, data=page.data, **page.extras),
                            content_type="text/html")

    async def api(request: web.Request) -> web.Response:
        return _json((await build(request, request.app[STATE_KEY])).data)
    return html, api


async def _runs(request: web.Request, state: DashboardState) -> pages.Page:
    page = pages.positive_int(request.query.get("page"), "page", 1)
    per_page = pages.positive_int(request.query.get("per_page"), "per_page", pages.PER_PAGE, pages.MAX_PER_PAGE)
    return pages.runs_page(state.store(), state.config, page, per_page)


def _run_view(build: Callable[..., pages.Page]):
    async def view(request: web.Request, state: DashboardState) -> pages.Page:
        return build(state.store(), state.config, request.match_info["run_id"])
    return view


async def _models(request: web.Request, state: DashboardState) -> pages.Page:
    store = state.store()
    if state.session is None:
        state.session = aiohttp.ClientSession()
    answer = await live.served_versions(state.session, state.config.rest_url, state.config.model_name)
    page = pages.positive_int(request.query.get("page"), "page", 1)
    per_page = pages.positive_int(request.query.get("per_page"), "per_page", pages.PER_PAGE, pages.MAX_PER_PAGE)
    return pages.models_page(store, state.config, answer, page, per_page)


async def _monitor(request: web.Request, state: DashboardState) -> pages.Page:
    version = request.query.get("version") or None
    return pages.monitor_page(state.store(), state.config,
                              None if version is None else pages.positive_int(version, "version", 1))


async def _lineage(request: web.Request, state: DashboardState) -> pages.Page:
    return pages.lineage_page(state.store(), state.config, request.match_info["target"],
                              request.query.get("direction", "upstream"))


async def _compare(request: web.Request, state: DashboardState) -> pages.Page:
    return pages.compare_page(state.store(), state.config, request.query.get("a"), request.query.get("b"))


async def _go(request: web.Request) -> web.Response:
    raise web.HTTPFound(pages.node_target(request.app[STATE_KEY].store(), request.match_info["key"]))


async def _home(request: web.Request) -> web.Response:
    raise web.HTTPFound("/runs")


ROUTES = (
    ("/runs", _runs),
    ("/runs/{run_id}", _run_view(pages.run_page)),
    ("/runs/{run_id}/data", _run_view(pages.data_page)),
    ("/runs/{run_id}/evaluation", _run_view(pages.evaluation_page)),
    ("/runs/{run_id}/training", _run_view(pages.training_page)),
    ("/models", _models),
    ("/monitor", _monitor),
    ("/lineage/{target}", _lineage),
    ("/compare", _compare),
)


async def _close_session(app: web.Application) -> None:
    session = app[STATE_KEY].session
    if session is not None:
        await session.close()


def make_app(config: PipelineConfig) -> web.Application:
    """The dashboard over the store `config` points at. Nothing is opened until a request needs it."""
    app = web.Application(middlewares=[errors])
    app[STATE_KEY] = DashboardState(config)
    app.router.add_get("/", _home)
    app.router.add_get("/go/{key}", _go)
    for path, build in ROUTES:
        html, api = page_route(build)
        app.router.add_get(path, html)
        app.router.add_get("/api" + path, api)
    app.on_cleanup.append(_close_session)
    return app
