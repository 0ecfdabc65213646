"""The portal's plumbing: its state on the application, sessions in cookies, CSRF, language, rendering."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web

from gateway.portal.accounts import SchoolAccounts
from gateway.portal.i18n import COOKIE as LANG_COOKIE
from gateway.portal.i18n import Translator, language
from gateway.portal.oidc import OidcProvider
from gateway.portal.sessions import InProcessStore, PortalSession, RedisStore, Sessions, Store

if TYPE_CHECKING:
    from gateway.node import Node

HERE = Path(__file__).parent
SESSION_COOKIE = "__Host-edugate_portal"  # __Host-: Secure, Path=/, no Domain: bound to this origin
LOGIN_CSRF_COOKIE = "edugate_portal_login"
PREFIX = "/portal"


@dataclass
class Portal:
    node: Node
    accounts: SchoolAccounts
    sessions: Sessions
    providers: dict[str, OidcProvider] = field(default_factory=dict)
    templates: jinja2.Environment = field(init=False)

    def __post_init__(self) -> None:
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
        )

    @classmethod
    def for_node(cls, node: Node) -> Portal:
        section = node.config.portal
        store: Store
        if node.redis is not None:
            prefix = node.config.redis.prefix if node.config.redis else "edugate"
            store = RedisStore(node.redis, prefix)
        else:
            store = InProcessStore()
        accounts = SchoolAccounts(
            section.accounts or node.config.node.state_dir / "portal-accounts.sqlite",
            max_failed=section.max_failed_logins,
            lockout=timedelta(minutes=section.lockout_minutes),
        )
        base = node.config.node.public_url
        providers = {
            p.name: OidcProvider(p, redirect_uri=f"{base}{PREFIX}/oidc/{p.name}/callback") for p in section.oidc
        }
        return cls(node, accounts, Sessions(store, lifetime=section.session_lifetime), providers)


PORTAL = web.AppKey("portal", Portal)


def portal(request: web.Request) -> Portal:
    return request.app[PORTAL]


async def current_session(request: web.Request) -> PortalSession | None:
    """The school session behind the request's cookie, or None (no portal, no cookie, ended, expired)."""
    if PORTAL not in request.app:
        return None
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id or len(session_id) > 128:
        return None
    return await request.app[PORTAL].sessions.get(session_id)


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def set_session_cookie(response: web.StreamResponse, session_id: str, lifetime: float) -> None:
    # Secure + HttpOnly + SameSite=Lax: never over plain HTTP, never to scripts, not on cross-site posts.
    # Path=/: the log API (/log/v1/...) reads the same session for a school's proofs and records.
    response.set_cookie(SESSION_COOKIE, session_id, path="/", secure=True, httponly=True, samesite="Lax",
                        max_age=int(lifetime))


def login_csrf(request: web.Request) -> str:
    """The double-submit token for the login form (there is no session yet to hold one)."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)


def render(request: web.Request, template: str, *, status: int = 200, session: PortalSession | None = None,
           **context: Any) -> web.Response:
    lang = language(request)
    t = Translator(lang)
    node = portal(request).node
    page = portal(request).templates.get_template(template).render(
        t=t, lang=lang, session=session, node=node, prefix=PREFIX, path=request.path,
        query=dict(request.query), **context
    )
    response = web.Response(text=page, status=status, content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    if request.query.get("lang") == lang:
        response.set_cookie(LANG_COOKIE, lang, path=PREFIX, secure=True, httponly=True, samesite="Lax",
                            max_age=365 * 86400)
    return response
