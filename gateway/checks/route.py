"""Which data service a request is for: method and path against the catalogue's routes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.catalogue import Catalogue, DataService, RouteSpec
from gateway.denials import MethodNotAllowed, NotFound
from gateway.exchange import Exchange

if TYPE_CHECKING:
    from gateway.node import Node


@dataclass(frozen=True)
class CompiledRoute:
    pattern: re.Pattern[str]
    spec: RouteSpec
    service: DataService
    upstream: str


class Routes:
    """The routes this node offers: catalogue routes of the data services it has an upstream for."""

    def __init__(self, catalogue: Catalogue, upstreams: dict[str, str]) -> None:
        self._routes = [
            CompiledRoute(spec.compile(), spec, service, upstreams[name].rstrip("/"))
            for name, service in catalogue.services.items()
            if name in upstreams
            for spec in service.routes
        ]

    def match(self, method: str, path: str) -> tuple[CompiledRoute, dict[str, str]]:
        allowed: list[str] = []
        for route in self._routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.spec.method == method:
                return route, found.groupdict()
            allowed.append(route.spec.method)
        # The messages never quote the path: it goes into the log, and a path may hold a student's identifier.
        if allowed:
            raise MethodNotAllowed(f"{method} is not offered on this path; use {', '.join(allowed)}", step="route")
        raise NotFound("no data service is offered at this path", step="route")


def route(node: Node, x: Exchange) -> None:
    matched, params = node.routes.match(x.request.method, x.request.path)
    x.service, x.route, x.path_params, x.upstream = matched.service, matched.spec, params, matched.upstream
