"""The portal's pages. Every page after login reads and changes only the logged-in school's data: the school comes
from the server-side session, never from the request, and a request that names another school is refused."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiohttp import web
from multidict import MultiDictProxy

from connectors.bodies import form_within
from gateway.activation import ActivationError, NotFoundError, ProcessingAgreement
from gateway.denials import Denial
from gateway.log_api import RecordQuery, inclusion_json, parse_moment
from gateway.portal.accounts import AccountLocked
from gateway.portal.chart import bar_chart, series
from gateway.portal.export import export_csv, export_json, school_records
from gateway.portal.i18n import Translator, language
from gateway.portal.oidc import OidcLoginFailed
from gateway.portal.sessions import PortalSession
from gateway.portal.web import (
    LOGIN_CSRF_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    current_session,
    login_csrf,
    portal,
    render,
    same,
    set_session_cookie,
)
from trust.eckid import EckId, InvalidEckId

log = structlog.get_logger("edugate.portal")
OIDC_COOKIE = "edugate_portal_oidc"

Page = Callable[[web.Request, PortalSession], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FORM = web.RequestKey("form", dict[str, str])  # the checked form of a POST


async def posted(request: web.Request) -> MultiDictProxy[Any]:
    """The request's form, within the node's body timeout (408 past it)."""
    return await form_within(request, portal(request).node.config.limits.body_timeout)


def school_page(page: Page) -> Handler:
    """Require a session; on POST also its CSRF token; refuse any `school` parameter but the session's own."""

    async def handler(request: web.Request) -> web.StreamResponse:
        session = await current_session(request)
        if session is None:
            if request.method == "GET":
                raise web.HTTPSeeOther(f"{PREFIX}/login")
            return render(request, "error.html", status=401, message=Translator(language(request))("login"))
        form: dict[str, str] = {}
        if request.method == "POST":
            form = {k: v for k, v in (await posted(request)).items() if isinstance(v, str)}
            if not same(form.get("csrf"), session.csrf):
                log.info("portal csrf refused", school=session.school, path=request.path)
                return render(request, "error.html", status=403, session=session,
                              message=Translator(language(request))("csrf_failed"))
        named = {v for v in (request.query.get("school"), form.get("school")) if v}
        if named - {session.school}:
            log.warning("portal other school refused", school=session.school, path=request.path)
            return render(request, "error.html", status=403, session=session,
                          message=Translator(language(request))("forbidden"))
        request[FORM] = form
        try:
            return await page(request, session)
        except Denial as denial:  # bad parameters: the same words as the API's
            return render(request, "error.html", status=denial.http_status, session=session,
                          message=f"{Translator(language(request))('bad_request')} {denial.message}")

    return handler


# --- login and logout -------------------------------------------------------------------------------------------


async def login_page(request: web.Request, *, status: int = 200, error: str | None = None) -> web.Response:
    token = login_csrf(request)
    response = render(request, "login.html", status=status, csrf=token, error=error,
                      providers=list(portal(request).providers.values()))
    response.set_cookie(LOGIN_CSRF_COOKIE, token, path=PREFIX, secure=True, httponly=True, samesite="Strict")
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    if await current_session(request) is not None:
        raise web.HTTPSeeOther(f"{PREFIX}/exchanges")
    return await login_page(request)


async def login(request: web.Request) -> web.StreamResponse:
    t = Translator(language(request))
    form = await posted(request)
    if not same(str(form.get("csrf", "")), request.cookies.get(LOGIN_CSRF_COOKIE)):
        return await login_page(request, status=403, error=t("csrf_failed"))
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    try:
        account = await portal(request).accounts.authenticate(email, password)
    except AccountLocked as locked:
        log.warning("portal login locked", until=locked.until.isoformat())
        until = locked.until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return await login_page(request, status=429, error=f"{t('login_locked')} {until}.")
    if account is None:
        log.info("portal login failed")
        return await login_page(request, status=401, error=t("login_failed"))
    return await start_session(request, school=account.school, user=account.email, method="password")


async def start_session(request: web.Request, *, school: str, user: str, method: str) -> web.StreamResponse:
    sessions = portal(request).sessions
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        await sessions.end(old)
    session_id, _ = await sessions.start(school=school, user=user, method=method)
    log.info("portal login", school=school, method=method)
    response = web.HTTPSeeOther(f"{PREFIX}/exchanges")
    set_session_cookie(response, session_id, sessions.lifetime)
    response.del_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
    response.del_cookie(OIDC_COOKIE, path=PREFIX)
    raise response


async def oidc_start(request: web.Request) -> web.StreamResponse:
    provider = portal(request).providers.get(request.match_info["name"])
    if provider is None:
        raise web.HTTPNotFound()
    try:
        authorization = await provider.authorization(lang=language(request))
    except OidcLoginFailed as exc:
        log.warning("portal oidc unavailable", provider=provider.name, reason=str(exc))
        return await login_page(request, status=502, error=f"{Translator(language(request))('oidc_failed')} {exc}")
    # The state is also bound to this browser, so a callback URL planted in another browser logs nobody in there.
    binding = secrets.token_urlsafe(32)
    await portal(request).sessions.put_login_state(authorization.state, {**authorization.pending, "binding": binding})
    response = web.HTTPSeeOther(authorization.url)
    response.set_cookie(OIDC_COOKIE, binding, path=PREFIX, secure=True, httponly=True, samesite="Lax", max_age=600)
    raise response


async def oidc_callback(request: web.Request) -> web.StreamResponse:
    t = Translator(language(request))
    provider = portal(request).providers.get(request.match_info["name"])
    if provider is None:
        raise web.HTTPNotFound()
    state, code = request.query.get("state", ""), request.query.get("code", "")
    pending = await portal(request).sessions.take_login_state(state) if state else None
    try:
        if request.query.get("error"):
            raise OidcLoginFailed(f"{request.query['error']}: {request.query.get('error_description', '')}")
        if pending is None or pending.get("provider") != provider.name:
            raise OidcLoginFailed("unknown or used state: start the login again")
        if not same(pending.get("binding"), request.cookies.get(OIDC_COOKIE)):
            raise OidcLoginFailed("this login was started in another browser: start the login again")
        if not code:
            raise OidcLoginFailed("the provider sent no code")
        login = await provider.complete(code=code, pending=pending)
    except OidcLoginFailed as exc:
        log.warning("portal oidc login refused", provider=provider.name, reason=str(exc))
        return await login_page(request, status=403, error=f"{t('oidc_failed')} {exc}")
    return await start_session(request, school=login.school, user=login.subject, method=f"oidc:{provider.name}")


@school_page
async def logout(request: web.Request, session: PortalSession) -> web.StreamResponse:
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        await portal(request).sessions.end(session_id)
    log.info("portal logout", school=session.school)
    response = web.HTTPSeeOther(f"{PREFIX}/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(f"{PREFIX}/exchanges" if await current_session(request) else f"{PREFIX}/login")


# --- reading the log ---------------------------------------------------------------------------------------------


def _choices(request: web.Request) -> dict[str, Any]:
    node = portal(request).node
    register = node.registers.register
    parties = sorted(((p.oin, p.name) for p in register.participants), key=lambda p: p[1]) if register else []
    lang = language(request)
    return {
        "parties": parties,
        "party_names": dict(parties),
        "services": sorted(node.catalogue.services),
        "purposes": [(p.code, p.nl if lang == "nl" else p.en) for p in node.purposes],
    }


@school_page
async def exchanges(request: web.Request, session: PortalSession) -> web.StreamResponse:
    query = RecordQuery.parse(request.query, default_limit=50)
    found = await portal(request).node.log.records(school=session.school, **query.filters(),
                                                    limit=query.limit, offset=query.offset)
    found = [s for s in found if s.record.school == session.school]
    pages = {k: v for k, v in request.query.items() if k not in ("offset", "lang")}
    return render(request, "exchanges.html", session=session, records=found, q=query, pages=pages,
                  **_choices(request))


@school_page
async def exchange_detail(request: web.Request, session: PortalSession) -> web.StreamResponse:
    query = RecordQuery.parse({"exchange_id": request.match_info["exchange_id"]})
    node = portal(request).node
    found = [s for s in await node.log.records(school=session.school, **query.filters(), oldest_first=True)
             if s.record.school == session.school]
    if not found:
        return render(request, "error.html", status=404, session=session,
                      message=Translator(language(request))("not_found"))
    proofs = [await inclusion_json(node, s) for s in found]
    return render(request, "exchange.html", session=session, items=list(zip(found, proofs, strict=True)),
                  exchange_id=query.exchange_id, **_choices(request))


@school_page
async def student(request: web.Request, session: PortalSession) -> web.StreamResponse:
    """A POST, so the ECK iD never appears in a URL, a history or an access log; it is hashed and forgotten."""
    t = Translator(language(request))
    form = request[FORM]
    found = None
    error = None
    if request.method == "POST":
        try:
            eck_id = EckId.parse(form.get("eck_id", "").strip())
        except InvalidEckId as exc:
            error = f"{t('eck_id_invalid')} {exc}"
        else:
            canonical = eck_id.canonical  # the form the exchange path hashed
            student_hash = portal(request).node.students.hash(session.school, canonical)
            found = [s async for s in school_records(portal(request).node, session.school, RecordQuery(),
                                                     student_hash=student_hash)]
            found.reverse()  # newest first, as everywhere
    return render(request, "student.html", session=session, records=found, error=error,
                  status=400 if error else 200, **_choices(request))


@school_page
async def totals(request: web.Request, session: PortalSession) -> web.StreamResponse:
    t = Translator(language(request))
    bucket = request.query.get("bucket", "day")
    if bucket not in ("day", "hour"):
        bucket = "day"
    since_text, until_text = request.query.get("since"), request.query.get("until")
    until = parse_moment("until", until_text, end_of_day=True) if until_text else None
    since = parse_moment("since", since_text) if since_text else _days_before(until or datetime.now(UTC), 30)
    rows = await portal(request).node.log.totals(school=session.school, since=since, until=until,
                                                 bucket=bucket)  # type: ignore[arg-type]
    table: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        key = (row["counterparty"] or "", row["data_service"] or "")
        sums = table.setdefault(key, {"exchanges": 0, "allowed": 0, "denied": 0, "records": 0, "bytes_out": 0})
        for column in sums:
            sums[column] += int(row.get(column) or 0)
    chart = bar_chart(series(rows), title=t("chart_title"), allowed=t("allowed"), denied=t("denied"),
                      hourly=bucket == "hour")
    return render(request, "totals.html", session=session, table=sorted(table.items()), chart=chart,
                  bucket=bucket, since=since.date().isoformat(),
                  until=_days_before(until, 1).date().isoformat() if until else "", **_choices(request))


def _days_before(moment: datetime, days: int) -> datetime:
    """`days` before `moment`, or the first moment there is: a school may ask for the totals up to the year 1."""
    try:
        return moment - timedelta(days=days)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


# --- activations ---------------------------------------------------------------------------------------------


@school_page
async def activations(request: web.Request, session: PortalSession) -> web.StreamResponse:
    node = portal(request).node
    found = await node.activations.find(school=session.school)
    now = node.clock()
    return render(request, "activations.html", session=session,
                  activations=[(a, a.state(now)) for a in reversed(found)],
                  notice=request.query.get("notice"), error=None, **_choices(request))


def _form_moment(name: str, value: str | None, *, end_of_day: bool = False) -> datetime | None:
    return parse_moment(name, value, end_of_day=end_of_day) if value else None


async def _activation_change(request: web.Request, session: PortalSession,
                             change: Callable[[], Awaitable[Any]]) -> web.StreamResponse:
    try:
        await change()
    except NotFoundError:
        return render(request, "error.html", status=404, session=session,
                      message=Translator(language(request))("not_found"))
    except (ActivationError, ValueError) as exc:
        node = portal(request).node
        found = await node.activations.find(school=session.school)
        return render(request, "activations.html", status=400, session=session,
                      activations=[(a, a.state(node.clock())) for a in reversed(found)], notice=None,
                      error=str(exc), **_choices(request))
    raise web.HTTPSeeOther(f"{PREFIX}/activations?notice=saved")


@school_page
async def grant(request: web.Request, session: PortalSession) -> web.StreamResponse:
    form = request[FORM]
    data = await posted(request)
    purposes = [str(p) for p in data.getall("purposes", [])]
    store = portal(request).node.activations

    async def change() -> None:
        reference = form.get("agreement_reference", "").strip()
        valid_from = _form_moment("valid_from", form.get("valid_from"))
        agreement = (
            ProcessingAgreement(reference=reference, valid_from=valid_from or datetime.now(UTC)) if reference else None
        )
        service = form.get("data_service", "")
        if service not in portal(request).node.catalogue.services:
            raise ActivationError(f"unknown data service {service!r}")
        await store.grant(
            school=session.school,  # never from the form
            data_service=service,
            counterparty=form.get("counterparty", ""),
            purposes=purposes,
            valid_from=valid_from,
            valid_until=_form_moment("valid_until", form.get("valid_until"), end_of_day=True),
            processing_agreement=agreement,
        )
        log.info("portal activation granted", school=session.school, data_service=service,
                 counterparty=form.get("counterparty"))

    return await _activation_change(request, session, change)


@school_page
async def activation_action(request: web.Request, session: PortalSession) -> web.StreamResponse:
    activation_id, action = request.match_info["activation_id"], request.match_info["action"]
    form = request[FORM]
    store = portal(request).node.activations

    async def change() -> None:
        if action == "revoke":
            await store.revoke(activation_id, school=session.school, reason=form.get("reason") or None)
        elif action == "confirm":
            await store.confirm(activation_id, school=session.school)
        elif action == "end":
            until = _form_moment("valid_until", form.get("valid_until"), end_of_day=True)
            if until is None:
                raise ActivationError("give the end date")
            await store.end(activation_id, school=session.school, valid_until=until)
        else:
            raise NotFoundError(action)
        log.info("portal activation changed", school=session.school, activation=activation_id, action=action)

    return await _activation_change(request, session, change)


# --- export --------------------------------------------------------------------------------------------------


@school_page
async def export_page(request: web.Request, session: PortalSession) -> web.StreamResponse:
    return render(request, "export.html", session=session, **_choices(request))


def _filename(session: PortalSession, suffix: str) -> str:
    return f"edugate-{session.school}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.{suffix}"


@school_page
async def export_csv_file(request: web.Request, session: PortalSession) -> web.StreamResponse:
    query = RecordQuery.parse(request.query)
    text = await export_csv(portal(request).node, session.school, query)
    log.info("portal export", school=session.school, format="csv")
    return web.Response(text=text, content_type="text/csv", charset="utf-8", headers={
        "Content-Disposition": f'attachment; filename="{_filename(session, "csv")}"', "Cache-Control": "no-store"})


@school_page
async def export_json_file(request: web.Request, session: PortalSession) -> web.StreamResponse:
    query = RecordQuery.parse(request.query)
    data = await export_json(portal(request).node, session.school, query)
    log.info("portal export", school=session.school, format="json", records=len(data["records"]))
    return web.Response(text=json.dumps(data, indent=1, ensure_ascii=False), content_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{_filename(session, "json")}"',
                                 "Cache-Control": "no-store"})


def routes() -> list[web.RouteDef]:
    return [
        web.get(PREFIX, home),
        web.get(PREFIX + "/", home),
        web.get(PREFIX + "/login", login_form),
        web.post(PREFIX + "/login", login),
        web.post(PREFIX + "/logout", logout),
        web.get(PREFIX + "/oidc/{name}/login", oidc_start),
        web.get(PREFIX + "/oidc/{name}/callback", oidc_callback),
        web.get(PREFIX + "/exchanges", exchanges),
        web.get(PREFIX + "/exchanges/{exchange_id}", exchange_detail),
        web.get(PREFIX + "/student", student),
        web.post(PREFIX + "/student", student),
        web.get(PREFIX + "/totals", totals),
        web.get(PREFIX + "/activations", activations),
        web.post(PREFIX + "/activations", grant),
        web.post(PREFIX + "/activations/{activation_id}/{action}", activation_action),
        web.get(PREFIX + "/export", export_page),
        web.get(PREFIX + "/export.csv", export_csv_file),
        web.get(PREFIX + "/export.json", export_json_file),
    ]
