"""The school portal: a school logs in (local account or its own OpenID Connect provider) and sees every exchange
about it in this node's log, looks up a student by ECK iD, follows totals over time, manages its activations and
exports its records with proofs. Server-rendered, Dutch by default, usable without JavaScript.

`add_portal_routes(app, node)` mounts it under `/portal/`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway.portal.views import routes
from gateway.portal.web import HERE, PORTAL, PREFIX, Portal, current_session

if TYPE_CHECKING:
    from gateway.node import Node

__all__ = ["PORTAL", "Portal", "add_portal_routes", "current_session"]


def add_portal_routes(app: web.Application, node: Node) -> None:
    if not node.config.portal.enabled:
        return
    app[PORTAL] = Portal.for_node(node)
    app.router.add_routes(routes())
    app.router.add_static(PREFIX + "/static", HERE / "static", append_version=True)
