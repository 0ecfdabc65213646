"""The operator console over HTTP: login, sessions, CSRF, roles, and the audit trail of every change."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from register_fixtures import OIN_PUBLISHER, Clock, seed
from yarl import URL

from trust.register_service.accounts import OperatorAccounts, OperatorRole
from trust.register_service.store import RegisterStore
from trust.snapshot import PrivateKey

ADMIN_PASSWORD = "correct horse battery staple"
READER_PASSWORD = "read only but long enough"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


class Console:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http

    async def login(self, username: str, password: str) -> aiohttp.ClientResponse:
        async with self.http.get(f"{self.url}/console/login") as page:
            token = csrf_of(await page.text())
        return await self.http.post(f"{self.url}/console/login",
                                    data={"csrf": token, "username": username, "password": password})

    async def page(self, path: str) -> str:
        async with self.http.get(f"{self.url}{path}") as response:
            return await response.text()

    async def act(self, action: str, fields: dict[str, str], *, csrf: str | None = None) -> aiohttp.ClientResponse:
        token = csrf if csrf is not None else csrf_of(await self.page("/console"))
        return await self.http.post(f"{self.url}/console/actions/{action}", data={"csrf": token, **fields},
                                    allow_redirects=False)


@pytest.fixture
async def console_service(sqlite_store: RegisterStore, operator_key: PrivateKey,
                          service_factory: Callable[..., Any]) -> Any:
    await seed(sqlite_store)
    accounts = OperatorAccounts(sqlite_store)
    await accounts.create("admin", ADMIN_PASSWORD, OperatorRole.ADMIN, actor="setup")
    await accounts.create("reader", READER_PASSWORD, OperatorRole.READ_ONLY, actor="setup")
    return await service_factory(sqlite_store, operator_key, session_lifetime=timedelta(minutes=5))


@pytest.fixture
async def console(console_service: Any) -> AsyncIterator[Console]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield Console(console_service.url, http)


async def test_the_console_asks_for_a_login_and_refuses_a_wrong_password(console: Console) -> None:
    async with console.http.get(f"{console.url}/console", allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/console/login"
    response = await console.login("admin", "not the password")
    assert response.status == 401
    assert "wrong password" in await response.text()
    response = await console.login("nobody", ADMIN_PASSWORD)
    assert response.status == 401


async def test_repeated_wrong_passwords_lock_the_account_for_a_while(console: Console, clock: Clock) -> None:
    clock.freeze()
    for _ in range(5):
        assert (await console.login("admin", "guess")).status == 401
    locked = await console.login("admin", ADMIN_PASSWORD)
    assert locked.status == 429 and "Too many failed logins" in await locked.text()
    assert (await console.login("reader", READER_PASSWORD)).status == 200  # only that account

    clock.advance(timedelta(minutes=16))
    assert (await console.login("admin", ADMIN_PASSWORD)).status == 200


async def test_a_login_sets_an_httponly_strict_session_cookie(console: Console) -> None:
    async with console.http.get(f"{console.url}/console/login") as page:
        token = csrf_of(await page.text())
    async with console.http.post(f"{console.url}/console/login", allow_redirects=False,
                                 data={"csrf": token, "username": "admin", "password": ADMIN_PASSWORD}) as response:
        assert response.status == 303
        cookie = next(c for c in response.headers.getall("Set-Cookie") if c.startswith("edugate_console="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=300" in cookie
    assert "Uitgeverij Noord" in await console.page("/console")


async def test_over_https_the_session_cookie_is_secure_and_host_bound(
        sqlite_store: RegisterStore, operator_key: PrivateKey, server_tls: Any, client_ssl: Any,
        service_factory: Callable[..., Any]) -> None:
    await OperatorAccounts(sqlite_store).create("admin", ADMIN_PASSWORD, OperatorRole.ADMIN, actor="setup")
    service = await service_factory(sqlite_store, operator_key, tls=server_tls)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{service.url}/console/login", ssl=client_ssl) as page:
            token = csrf_of(await page.text())
            assert "Strict-Transport-Security" in page.headers
        async with http.post(f"{service.url}/console/login", ssl=client_ssl, allow_redirects=False,
                             data={"csrf": token, "username": "admin", "password": ADMIN_PASSWORD}) as response:
            cookie = next(c for c in response.headers.getall("Set-Cookie") if "edugate_console=" in c)
    assert cookie.startswith("__Host-edugate_console=") and "Secure" in cookie


async def test_a_login_without_the_forms_csrf_token_is_refused(console: Console) -> None:
    await console.page("/console/login")  # sets the login CSRF cookie
    response = await console.http.post(f"{console.url}/console/login",
                                       data={"csrf": "guessed", "username": "admin", "password": ADMIN_PASSWORD})
    assert response.status == 403
    async with console.http.get(f"{console.url}/console", allow_redirects=False) as after:
        assert after.status == 303  # still not logged in


async def test_a_change_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
        console: Console, sqlite_store: RegisterStore) -> None:
    await console.login("admin", ADMIN_PASSWORD)
    serial = await sqlite_store.serial()
    for token in ("", "forged-token"):
        response = await console.act("participant-status",
                                     {"oin": OIN_PUBLISHER, "status": "suspended", "reason": "x"}, csrf=token)
        assert response.status == 403
        assert "CSRF" in await response.text()
    assert await sqlite_store.serial() == serial


async def test_a_read_only_operator_can_look_but_not_change(console: Console, sqlite_store: RegisterStore) -> None:
    await console.login("reader", READER_PASSWORD)
    participant_page = await console.page(f"/console/participants/{OIN_PUBLISHER}")
    assert "Uitgeverij Noord" in participant_page
    assert "/console/actions/participant-status" not in participant_page  # no forms to change anything
    serial = await sqlite_store.serial()

    response = await console.act("participant-status", {"oin": OIN_PUBLISHER, "status": "suspended", "reason": "x"})
    assert response.status == 403
    assert "read-only" in await response.text()
    assert await sqlite_store.serial() == serial
    assert "reader" not in {entry.actor for entry in await sqlite_store.history()}


async def test_an_admins_change_is_saved_and_shown_in_the_audit_trail_with_before_and_after(
        console: Console, sqlite_store: RegisterStore) -> None:
    await console.login("admin", ADMIN_PASSWORD)
    response = await console.act("participant-status",
                                 {"oin": OIN_PUBLISHER, "status": "suspended", "reason": "datalek onderzoek"})
    assert response.status == 303
    serial = await sqlite_store.serial()
    assert response.headers["Location"] == f"/console/participants/{OIN_PUBLISHER}?saved={serial}"

    audit = await console.page("/console/audit")
    row = audit[audit.index('<td class="actor">admin</td>'):]
    row = row[:row.index("</tr>")]
    assert "set status suspended" in row and f"participant:{OIN_PUBLISHER}" in row
    assert '<code class="before">active</code> → <code class="after">suspended</code>' in row
    assert "datalek onderzoek" in row


async def test_every_cli_operation_is_in_the_console_too(console: Console, sqlite_store: RegisterStore,
                                                         publisher_pem: str, pki: Any) -> None:
    await console.login("admin", ADMIN_PASSWORD)
    steps: list[tuple[str, dict[str, str]]] = [
        ("participant-add", {"oin": "00000003333333330000", "name": "Toetsbureau West", "status": "intake"}),
        ("participant-update", {"oin": "00000003333333330000", "contact": "privacy@west.example"}),
        ("keurmerk-grant", {"oin": OIN_PUBLISHER, "data_service": "resultaten", "role": "verzender"}),
        ("keurmerk-status", {"oin": OIN_PUBLISHER, "keurmerk": "resultaten/verzender", "status": "revoked",
                             "reason": "breach"}),
        ("withdrawal-schedule", {"oin": OIN_PUBLISHER, "effective": "2031-01-01T00:00", "reason": "stopt"}),
        ("withdrawal-cancel", {"oin": OIN_PUBLISHER}),
        ("certificate-add", {"oin": OIN_PUBLISHER, "pem": publisher_pem}),
        ("client-add", {"oin": OIN_PUBLISHER, "client_id": "noord-lms", "jwks_uri": "https://noord.example/jwks"}),
        ("client-rotate", {"oin": OIN_PUBLISHER, "client_id": "noord-lms", "jwks_uri": "https://noord.example/k2"}),
        ("client-remove", {"oin": OIN_PUBLISHER, "client_id": "noord-lms"}),
        ("ca-add", {"pem": pki.cert_pem().decode()}),
        ("ca-remove", {"fingerprint": pki.thumbprint}),
        ("catalogue-version", {"version": "2026.2"}),
        ("operator-create", {"username": "carol", "password": "another long password", "role": "read-only"}),
    ]
    for action, fields in steps:
        response = await console.act(action, fields)
        assert response.status == 303, f"{action}: {await response.text()}"

    document = await sqlite_store.register()
    assert document.catalogue_version == "2026.2"
    west = next(p for p in document.participants if p.oin == "00000003333333330000")
    assert west.contact == "privacy@west.example"
    actions = [entry.action for entry in await sqlite_store.history(limit=len(steps))]
    assert actions[0] == "create operator" and "rotate client keys" in actions
    assert {entry.actor for entry in await sqlite_store.history(limit=len(steps))} == {"admin"}

    export = await console.http.get(f"{console.url}/console/export")
    exported = await export.json(content_type=None)
    data_page = await console.page("/console/data")
    assert "BEGIN PUBLIC KEY" in data_page  # the key nodes pin
    form = aiohttp.FormData()
    form.add_field("csrf", csrf_of(data_page))
    form.add_field("file", __import__("json").dumps(exported).encode(), filename="register.json",
                   content_type="application/json")
    response = await console.http.post(f"{console.url}/console/actions/import", data=form, allow_redirects=False)
    assert response.status == 303
    assert (await sqlite_store.register()).participants == document.participants


async def test_a_refused_change_shows_why(console: Console) -> None:
    await console.login("admin", ADMIN_PASSWORD)
    response = await console.act("withdrawal-schedule",
                                 {"oin": OIN_PUBLISHER, "effective": "2001-01-01T00:00", "reason": "x"})
    assert response.status == 400
    assert "future effective date" in await response.text()


async def test_a_session_ends_when_it_expires(console: Console, clock: Clock) -> None:
    await console.login("admin", ADMIN_PASSWORD)
    assert "Uitgeverij Noord" in await console.page("/console")
    clock.freeze()
    clock.advance(timedelta(minutes=6))
    async with console.http.get(f"{console.url}/console", allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/console/login"


async def test_logging_out_ends_the_session(console: Console) -> None:
    await console.login("admin", ADMIN_PASSWORD)
    token = csrf_of(await console.page("/console"))
    await console.http.post(f"{console.url}/console/logout", data={"csrf": token})
    async with console.http.get(f"{console.url}/console", allow_redirects=False) as response:
        assert response.status == 303


async def test_a_form_that_stops_arriving_is_refused_with_408(console_service: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("trust.register_service.console.FORM_TIMEOUT", 0.3)
    url = URL(console_service.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(b"POST /console/login HTTP/1.1\r\nHost: register\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 400\r\n\r\ncsrf=abc&username=")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize("effective", ["0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00"])
async def test_a_date_its_offset_moves_out_of_the_calendar_is_a_refused_change(console: Console,
                                                                                effective: str) -> None:
    await console.login("admin", ADMIN_PASSWORD)
    response = await console.act("withdrawal-schedule", {"oin": OIN_PUBLISHER, "effective": effective, "reason": "x"})
    assert response.status == 400  # was 500: OverflowError converting to UTC
    assert "is not a date and time" in await response.text()


async def test_a_jwks_nested_past_the_recursion_limit_is_a_refused_change(console: Console) -> None:
    await console.login("admin", ADMIN_PASSWORD)
    response = await console.act("client-add", {"oin": OIN_PUBLISHER, "client_id": "noord-lms", "jwks": "[" * 100_000})
    assert response.status == 400  # was 500: RecursionError
    assert "the JWKS is not valid JSON" in await response.text()


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded", b"oin=00000003111111110000&name=%ff&reason=\xff\xfe"),
    ("application/x-www-form-urlencoded; charset=no-such-charset", b"oin=00000003111111110000"),
])
async def test_a_form_that_cannot_be_decoded_is_refused_with_400(console: Console, content_type: str,
                                                                 body: bytes) -> None:
    await console.login("admin", ADMIN_PASSWORD)
    csrf = csrf_of(await console.page("/console")).encode()
    async with console.http.post(f"{console.url}/console/actions/participant-update",
                                 data=b"csrf=" + csrf + b"&" + body, headers={"Content-Type": content_type},
                                 allow_redirects=False) as response:
        assert response.status == 400  # was 500: UnicodeDecodeError, LookupError in aiohttp's post()
        assert "the form cannot be read" in await response.text()


EXPORT = {"format": "edugate-register-export/1", "serial": 5, "register": {"serial": 5, "participants": []}}


@pytest.mark.parametrize(("export", "named"), [
    ({k: v for k, v in EXPORT.items() if k != "register"}, "register"),
    ({**EXPORT, "register": [["serial", 1]]}, "register"),
    ({**EXPORT, "register": {"serial": None}}, "register.serial"),
    ({**EXPORT, "register": {"serial": []}}, "register.serial"),
    ({**EXPORT, "serial": 10**30}, "serial"),
    ({**EXPORT, "serial": "5"}, "serial"),
    ({**EXPORT, "certificates": None}, "certificates"),
    ({**EXPORT, "certificates": 1}, "certificates"),
    ({**EXPORT, "keurmerk_reasons": [{}]}, "keurmerk_reasons.0.oin"),
    ({**EXPORT, "keurmerk_reasons": None}, "keurmerk_reasons"),
])
async def test_an_import_of_a_malformed_export_is_refused_naming_the_field_and_changes_nothing(
        console: Console, sqlite_store: RegisterStore, export: dict[str, Any], named: str) -> None:
    await console.login("admin", ADMIN_PASSWORD)
    before = await sqlite_store.serial()
    form = aiohttp.FormData()
    form.add_field("csrf", csrf_of(await console.page("/console/data")))
    form.add_field("file", json.dumps(export).encode(), filename="register.json", content_type="application/json")
    async with console.http.post(f"{console.url}/console/actions/import", data=form,
                                 allow_redirects=False) as response:
        assert response.status == 400  # was 500: KeyError, TypeError, or the database's integer overflow
        assert f"{named}: " in await response.text()
    assert await sqlite_store.serial() == before
