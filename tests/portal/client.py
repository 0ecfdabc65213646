"""A browser-like HTTP client for the portal: no client certificate, a cookie jar, forms with their CSRF tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from connectors.samples.federation import Federation
from gateway.portal.web import PORTAL, Portal


@dataclass
class Page:
    status: int
    text: str
    headers: dict[str, str]
    url: str
    set_cookies: list[str] = field(default_factory=list)

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert found, "no CSRF token on the page"
        return found.group(1)

    def json(self) -> Any:
        import json

        return json.loads(self.text)


@dataclass
class PortalClient:
    fed: Federation
    identity: Any = None  # an Issued to present a client certificate, as a participant would
    _session: aiohttp.ClientSession | None = field(default=None, init=False)

    @staticmethod
    def portal_of(fed: Federation) -> Portal:
        assert fed.served is not None
        app: web.Application = fed.served.runner.app  # type: ignore[assignment]
        return app[PORTAL]

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.fed.trust(self.identity)),
                cookie_jar=aiohttp.CookieJar(unsafe=True),  # cookies for 127.0.0.1
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, path: str, **params: Any) -> Page:
        async with self.session.get(self.fed.base_url + path, params=params or None) as r:
            return Page(r.status, await r.text(), dict(r.headers), str(r.url), r.headers.getall("Set-Cookie", []))

    async def post(self, path: str, data: Any, *, follow: bool = True) -> Page:
        async with self.session.post(self.fed.base_url + path, data=data, allow_redirects=follow) as r:
            return Page(r.status, await r.text(), dict(r.headers), str(r.url), r.headers.getall("Set-Cookie", []))

    def cookie(self, name: str) -> str | None:
        from yarl import URL

        morsel = self.session.cookie_jar.filter_cookies(URL(self.fed.base_url + "/portal/")).get(name)
        return morsel.value if morsel is not None else None

    async def login(self, email: str, password: str) -> Page:
        form = await self.get("/portal/login")
        page = await self.post("/portal/login", {"csrf": form.csrf(), "email": email, "password": password})
        return page

    async def csrf(self) -> str:
        return (await self.get("/portal/student")).csrf()
