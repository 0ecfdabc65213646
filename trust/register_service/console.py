"""The operator console: log in, look at and change the register, read the audit trail.

Every form carries a CSRF token (the session's own; before login a double-submit cookie), every change
needs the admin role, and every change goes through the same `RegisterStore` operations as the CLI,
so it is recorded in the history with the operator's name.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from multidict import MultiDictProxy

from connectors.bodies import form_within
from trust.register import KeurmerkStatus, ParticipantStatus, Role
from trust.register_service.accounts import Operator, OperatorAccounts, OperatorRole, Session
from trust.register_service.api import PUBLISHER, STORE
from trust.register_service.keys import public_pem
from trust.register_service.pages import render
from trust.register_service.store import HistoryEntry, RegisterChangeRefused, RegisterStore

log = structlog.get_logger("edugate.register_console")

ACCOUNTS = web.AppKey("accounts", OperatorAccounts)
SECURE = web.AppKey("secure_cookies", bool)
SERVICES = web.AppKey("data_services", tuple)  # data-service names offered when granting keurmerken

LOGIN_CSRF_COOKIE = "edugate_login_csrf"
FORM_TIMEOUT = 30.0  # seconds a form (an upload included) may take to arrive; a trickled one is refused (408)


def session_cookie(request: web.Request) -> str:
    # `__Host-` binds the cookie to this origin, but browsers only accept it with `Secure` (HTTPS).
    return "__Host-edugate_console" if request.app[SECURE] else "edugate_console"


async def current_session(request: web.Request) -> Session | None:
    session_id = request.cookies.get(session_cookie(request))
    if not session_id:
        return None
    return await request.app[ACCOUNTS].session(session_id)


async def require_session(request: web.Request) -> Session:
    session = await current_session(request)
    if session is None:
        raise web.HTTPSeeOther("/console/login")
    return session


def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def _csrf_refused(request: web.Request, session: Session | None) -> web.Response:
    log.warning("console CSRF token refused", path=request.path, peer=request.remote,
                operator=session.operator.username if session else None)
    return render(request, "console_error.html", status=403, session=session, saved=None,
                  message="The form's CSRF token is missing or wrong. Reload the page and try again.",
                  back="/console")


# ---- login and logout --------------------------------------------------------------------------------

async def login_form(request: web.Request, *, error: str | None = None, status: int = 200) -> web.Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "console_login.html", status=status, session=None, saved=None, csrf=token,
                      error=error)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", secure=request.app[SECURE],
                        path="/console")
    return response


async def login(request: web.Request) -> web.Response:
    form = await form_within(request, FORM_TIMEOUT)
    if not _same(_text(form, "csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)):
        return _csrf_refused(request, None)
    username = (_text(form, "username") or "")[:64]
    if request.app[ACCOUNTS].locked(username):
        log.warning("console login refused: too many failures", username=username, peer=request.remote)
        return await login_form(request, error="Too many failed logins for this account; try again later.",
                                status=429)
    operator = await request.app[ACCOUNTS].authenticate(username, _text(form, "password") or "")
    if operator is None:
        log.warning("console login failed", username=username, peer=request.remote)
        return await login_form(request, error="Unknown username or wrong password.", status=401)
    session_id, _ = await request.app[ACCOUNTS].start_session(operator)
    log.info("console login", operator=operator.username, role=operator.role.value, peer=request.remote)
    response = web.HTTPSeeOther("/console")
    response.set_cookie(session_cookie(request), session_id, httponly=True, samesite="Strict",
                        secure=request.app[SECURE], path="/",
                        max_age=int(request.app[ACCOUNTS].session_lifetime.total_seconds()))
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/console")
    raise response


async def logout(request: web.Request) -> web.Response:
    session = await require_session(request)
    form = await form_within(request, FORM_TIMEOUT)
    if not _same(_text(form, "csrf"), session.csrf):
        return _csrf_refused(request, session)
    await request.app[ACCOUNTS].end_session(request.cookies[session_cookie(request)])
    response = web.HTTPSeeOther("/console/login")
    response.del_cookie(session_cookie(request), path="/")
    raise response


# ---- pages ---------------------------------------------------------------------------------------------

def _saved(request: web.Request) -> str | None:
    value = request.query.get("saved", "")
    return value if value.isdigit() else None


async def participants_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    document = await request.app[STORE].register()
    return render(request, "console_participants.html", session=session, saved=_saved(request),
                  participants=sorted(document.participants, key=lambda p: p.name.casefold()),
                  serial=document.serial, statuses=[s.value for s in ParticipantStatus])


async def participant_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    store = request.app[STORE]
    oin = request.match_info["oin"]
    participant = await store.participant(oin)
    if participant is None:
        raise web.HTTPNotFound(text=f"no participant {oin}")
    return render(request, "console_participant.html", session=session, saved=_saved(request), p=participant,
                  certificates=await store.certificates(oin), reasons=await store.keurmerk_reasons(oin),
                  statuses=[s.value for s in ParticipantStatus], roles=[r.value for r in Role],
                  keurmerk_statuses=[s.value for s in KeurmerkStatus], services=request.app[SERVICES],
                  history=_with_changes(await store.history(limit=50, subject=f"participant:{oin}")))


async def cas_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    return render(request, "console_cas.html", session=session, saved=_saved(request),
                  cas=await request.app[STORE].trusted_cas())


async def audit_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    subject = request.query.get("subject", "").strip()[:200]
    entries = await request.app[STORE].history(limit=200, subject=subject or None)
    return render(request, "console_audit.html", session=session, saved=None, subject=subject,
                  history=_with_changes(entries))


async def data_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    document = await request.app[STORE].register()
    return render(request, "console_data.html", session=session, saved=_saved(request), serial=document.serial,
                  catalogue_version=document.catalogue_version,
                  operator_key=public_pem(request.app[PUBLISHER].key).decode())


async def operators_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    return render(request, "console_operators.html", session=session, saved=None,
                  operators=await request.app[ACCOUNTS].list(), roles=[r.value for r in OperatorRole])


async def export(request: web.Request) -> web.Response:
    await require_session(request)
    data = await request.app[STORE].export()
    return web.Response(text=json.dumps(data, indent=1), content_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="register-{data["serial"]}.json"'})


def _with_changes(entries: list[HistoryEntry]) -> list[tuple[HistoryEntry, list[tuple[str, str, str]]]]:
    return [(entry, changes(entry.before, entry.after)) for entry in entries]


def changes(before: Any, after: Any) -> list[tuple[str, str, str]]:
    """The top-level fields that differ between a history entry's before and after, as display text.
    A creation (no before) or removal (no after) shows every field going from or to nothing."""
    if before is None and isinstance(after, dict):
        before = {}
    if after is None and isinstance(before, dict):
        after = {}
    if not isinstance(before, dict) or not isinstance(after, dict):
        return [] if before == after else [("", _show(before), _show(after))]
    fields = sorted(set(before) | set(after))
    return [(f, _show(before.get(f)), _show(after.get(f))) for f in fields if before.get(f) != after.get(f)]


def _show(value: Any) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


# ---- changes -------------------------------------------------------------------------------------------

Form = MultiDictProxy[Any]
Action = Callable[[RegisterStore, OperatorAccounts, Form, str], Awaitable[tuple[int | None, str]]]


def _text(form: Form, name: str) -> str | None:
    value = form.get(name)
    if value is None or not isinstance(value, str):
        return None
    return value.strip() or None


def _required(form: Form, name: str) -> str:
    value = _text(form, name)
    if value is None:
        raise RegisterChangeRefused(f"{name} is required")
    return value


def utc_time(text: str | None) -> datetime | None:
    """RFC 3339, or a plain `YYYY-MM-DDTHH:MM` taken as UTC (what a datetime field sends)."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        # OverflowError: an offset that moves the time past year 1 or 9999 (`0001-01-01T00:00+01:00`)
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise RegisterChangeRefused(f"{text!r} is not a date and time (RFC 3339)") from exc


def _jwks(form: Form) -> dict[str, Any] | None:
    text = _text(form, "jwks")
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past what the interpreter holds
        raise RegisterChangeRefused(f"the JWKS is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise RegisterChangeRefused("the JWKS must be a JSON object")
    return value


def _page(oin: str) -> str:
    return f"/console/participants/{oin}"


async def _participant_add(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    oin = _required(form, "oin")
    status = ParticipantStatus(_text(form, "status") or ParticipantStatus.APPLIED.value)
    serial = await store.add_participant(oin, _required(form, "name"), kvk=_text(form, "kvk"),
                                         contact=_text(form, "contact"), status=status, actor=actor)
    return serial, _page(oin)


async def _participant_update(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    oin = _required(form, "oin")
    serial = await store.update_participant(
        oin, name=_text(form, "name"), kvk=_text(form, "kvk"), contact=_text(form, "contact"),
        token_endpoint=_text(form, "token_endpoint"), api_endpoint=_text(form, "api_endpoint"), actor=actor)
    return serial, _page(oin)


async def _participant_status(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    oin = _required(form, "oin")
    status = ParticipantStatus(_required(form, "status"))
    return await store.set_participant_status(oin, status, reason=_text(form, "reason"), actor=actor), _page(oin)


async def _withdrawal_schedule(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    oin = _required(form, "oin")
    effective = utc_time(_required(form, "effective"))
    assert effective is not None
    return await store.schedule_withdrawal(oin, effective, _required(form, "reason"), actor=actor), _page(oin)


async def _withdrawal_cancel(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    oin = _required(form, "oin")
    return await store.cancel_withdrawal(oin, actor=actor), _page(oin)


async def _keurmerk_grant(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    oin = _required(form, "oin")
    serial = await store.grant_keurmerk(
        oin, _required(form, "data_service"), Role(_required(form, "role")),
        valid_from=utc_time(_text(form, "valid_from")), valid_until=utc_time(_text(form, "valid_until")), actor=actor)
    return serial, _page(oin)


async def _keurmerk_status(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    oin = _required(form, "oin")
    service, _sep, role = _required(form, "keurmerk").rpartition("/")
    serial = await store.set_keurmerk_status(oin, service, Role(role), KeurmerkStatus(_required(form, "status")),
                                             reason=_text(form, "reason"), actor=actor)
    return serial, _page(oin)


async def _certificate_add(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    oin = _required(form, "oin")
    return await store.add_certificate(oin, _required(form, "pem"), actor=actor), _page(oin)


async def _certificate_rotate(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    oin = _required(form, "oin")
    serial = await store.rotate_certificate(oin, _required(form, "thumbprint"), _required(form, "pem"), actor=actor)
    return serial, _page(oin)


async def _certificate_remove(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    oin = _required(form, "oin")
    return await store.remove_certificate(oin, _required(form, "thumbprint"), actor=actor), _page(oin)


async def _client_add(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    oin = _required(form, "oin")
    serial = await store.add_client(oin, _required(form, "client_id"), jwks=_jwks(form),
                                    jwks_uri=_text(form, "jwks_uri"), actor=actor)
    return serial, _page(oin)


async def _client_rotate(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    serial = await store.rotate_client_keys(_required(form, "client_id"), jwks=_jwks(form),
                                            jwks_uri=_text(form, "jwks_uri"), actor=actor)
    return serial, _page(_required(form, "oin"))


async def _client_remove(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    serial = await store.remove_client(_required(form, "client_id"), actor=actor)
    return serial, _page(_required(form, "oin"))


async def _ca_add(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    return await store.add_trusted_ca(_required(form, "pem"), actor=actor), "/console/cas"


async def _ca_remove(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    return await store.remove_trusted_ca(_required(form, "fingerprint"), actor=actor), "/console/cas"


async def _catalogue_version(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    return await store.set_catalogue_version(_required(form, "version"), actor=actor), "/console/data"


async def _import(store: RegisterStore, _: OperatorAccounts, form: Form, actor: str) -> tuple[int, str]:
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise RegisterChangeRefused("choose an export file to import")
    try:
        data = json.loads(upload.file.read())
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past what the interpreter holds
        raise RegisterChangeRefused(f"the file is not JSON: {exc}") from exc
    return await store.import_register(data, actor=actor), "/console/data"


async def _operator_create(_: RegisterStore, accounts: OperatorAccounts, form: Form,
                           actor: str) -> tuple[None, str]:
    await accounts.create(_required(form, "username"), _required(form, "password"),
                          OperatorRole(_required(form, "role")), actor=actor)
    return None, "/console/operators"


ACTIONS: dict[str, Action] = {
    "participant-add": _participant_add,
    "participant-update": _participant_update,
    "participant-status": _participant_status,
    "withdrawal-schedule": _withdrawal_schedule,
    "withdrawal-cancel": _withdrawal_cancel,
    "keurmerk-grant": _keurmerk_grant,
    "keurmerk-status": _keurmerk_status,
    "certificate-add": _certificate_add,
    "certificate-rotate": _certificate_rotate,
    "certificate-remove": _certificate_remove,
    "client-add": _client_add,
    "client-rotate": _client_rotate,
    "client-remove": _client_remove,
    "ca-add": _ca_add,
    "ca-remove": _ca_remove,
    "catalogue-version": _catalogue_version,
    "import": _import,
    "operator-create": _operator_create,
}


async def act(request: web.Request) -> web.Response:
    session = await require_session(request)
    action = ACTIONS.get(request.match_info["action"])
    if action is None:
        raise web.HTTPNotFound(text="no such action")
    form = await form_within(request, FORM_TIMEOUT)
    if not _same(_text(form, "csrf"), session.csrf):
        return _csrf_refused(request, session)
    operator: Operator = session.operator
    if not operator.may_change:
        log.warning("console change refused: read-only operator", operator=operator.username,
                    action=request.match_info["action"])
        return render(request, "console_error.html", status=403, session=session, saved=None,
                      message=f"Operator {operator.username} has the read-only role and cannot change the register.",
                      back="/console")
    try:
        serial, back = await action(request.app[STORE], request.app[ACCOUNTS], form, operator.username)
    except (RegisterChangeRefused, ValueError) as exc:
        log.info("console change refused", operator=operator.username, action=request.match_info["action"],
                 reason=str(exc))
        return render(request, "console_error.html", status=400, session=session, saved=None, message=str(exc),
                      back="/console")
    log.info("console change", operator=operator.username, action=request.match_info["action"], serial=serial)
    raise web.HTTPSeeOther(back + (f"?saved={serial}" if serial is not None else ""))


def routes() -> list[web.RouteDef]:
    return [
        web.get("/console/login", login_form),
        web.post("/console/login", login),
        web.post("/console/logout", logout),
        web.get("/console", participants_page),
        web.get("/console/participants/{oin}", participant_page),
        web.get("/console/cas", cas_page),
        web.get("/console/audit", audit_page),
        web.get("/console/data", data_page),
        web.get("/console/operators", operators_page),
        web.get("/console/export", export),
        web.post("/console/actions/{action}", act),
    ]
