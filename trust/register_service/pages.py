"""Server-rendered HTML: one jinja2 environment (autoescaped) for the public page and the console."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

ENVIRONMENT = web.AppKey("jinja", jinja2.Environment)
TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


def _day(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value is not None else ""


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["when"] = _when
    env.filters["day"] = _day
    return env


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    html = request.app[ENVIRONMENT].get_template(template).render(**context)
    return web.Response(text=html, content_type="text/html", status=status)
