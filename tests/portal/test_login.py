"""Logging in to the school portal: local accounts with Argon2 and lockout, sessions, CSRF, language."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio
from click.testing import CliRunner

from connectors.samples.federation import OTHER_SCHOOL, SCHOOL, Federation
from gateway.cli import main
from gateway.portal.accounts import AccountError, AccountLocked, SchoolAccounts
from gateway.portal.sessions import InProcessStore, RedisStore, Sessions
from gateway.portal.web import SESSION_COOKIE
from tests.portal.client import PortalClient
from tests.portal.conftest import PASSWORD, USER


async def test_a_school_user_logs_in_with_email_and_password_and_lands_on_its_exchanges(fed: Federation, users):
    client = PortalClient(fed)
    try:
        page = await client.login(USER, PASSWORD)
        assert page.status == 200 and page.url.endswith("/portal/exchanges")
        assert f'id="school">{SCHOOL}<' in page.text
    finally:
        await client.close()


async def test_the_session_cookie_is_secure_httponly_and_samesite_lax(fed: Federation, users):
    client = PortalClient(fed)
    try:
        form = await client.get("/portal/login")
        page = await client.post("/portal/login", {"csrf": form.csrf(), "email": USER, "password": PASSWORD},
                                 follow=False)
        assert page.status == 303
        (cookie,) = [c for c in page.set_cookies if c.startswith(SESSION_COOKIE + "=")]
        attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite", "path"} <= attributes.keys()
        assert attributes["samesite"] == "SameSite=Lax" and attributes["path"] == "Path=/"
    finally:
        await client.close()


async def test_a_wrong_password_is_refused_without_saying_whether_the_address_exists(fed: Federation, users):
    client = PortalClient(fed)
    try:
        wrong = await client.login(USER, "not the password at all")
        unknown = await client.login("nobody@nowhere.nl", PASSWORD)
        assert wrong.status == unknown.status == 401
        assert 'id="login-error"' in wrong.text
        assert wrong.text.count("login-error") == unknown.text.count("login-error")
        assert (await client.get("/portal/exchanges")).url.endswith("/portal/login")
    finally:
        await client.close()


async def test_repeated_failures_lock_the_account_even_against_the_right_password(tmp_path: Path):
    accounts = SchoolAccounts(tmp_path / "a.sqlite", max_failed=3)
    await accounts.add(school=SCHOOL, email=USER, password=PASSWORD)
    assert await accounts.authenticate(USER, "wrong-1-xxxxxxxx") is None
    assert await accounts.authenticate(USER, "wrong-2-xxxxxxxx") is None
    with pytest.raises(AccountLocked):
        await accounts.authenticate(USER, "wrong-3-xxxxxxxx")
    with pytest.raises(AccountLocked):
        await accounts.authenticate(USER, PASSWORD)
    await accounts.unlock(USER)
    assert (await accounts.authenticate(USER, PASSWORD)).school == SCHOOL


async def test_a_lockout_ends_after_its_period(tmp_path: Path):
    from datetime import timedelta

    accounts = SchoolAccounts(tmp_path / "a.sqlite", max_failed=1, lockout=timedelta(seconds=0.3))
    await accounts.add(school=SCHOOL, email=USER, password=PASSWORD)
    with pytest.raises(AccountLocked):
        await accounts.authenticate(USER, "wrong-password-x")
    await asyncio.sleep(0.4)
    assert (await accounts.authenticate(USER, PASSWORD)) is not None


async def test_the_portal_answers_a_locked_account_with_429_and_the_time_it_ends(fed: Federation, users):
    client = PortalClient(fed)
    try:
        for _ in range(fed.node.config.portal.max_failed_logins - 1):
            assert (await client.login(USER, "wrong password here")).status == 401
        locked = await client.login(USER, "wrong password here")
        assert locked.status == 429 and "geblokkeerd tot" in locked.text
        assert (await client.login(USER, PASSWORD)).status == 429
    finally:
        await client.close()


async def test_passwords_are_stored_as_argon2id_hashes_only(tmp_path: Path):
    import sqlite3

    accounts = SchoolAccounts(tmp_path / "a.sqlite")
    await accounts.add(school=SCHOOL, email=USER, password=PASSWORD)
    (stored,) = sqlite3.connect(tmp_path / "a.sqlite").execute("SELECT password_hash FROM accounts").fetchone()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


async def test_accounts_refuse_short_passwords_bad_schools_and_duplicates(tmp_path: Path):
    accounts = SchoolAccounts(tmp_path / "a.sqlite")
    with pytest.raises(AccountError, match="at least"):
        await accounts.add(school=SCHOOL, email=USER, password="short")
    with pytest.raises(AccountError, match="organisationMasterIdentifier"):
        await accounts.add(school="104A158; DROP", email=USER, password=PASSWORD)
    await accounts.add(school=SCHOOL, email=USER, password=PASSWORD)
    with pytest.raises(AccountError, match="exists"):
        await accounts.add(school=OTHER_SCHOOL, email=USER.upper(), password=PASSWORD)


async def test_the_cli_creates_an_account_from_a_password_file_that_can_log_in(fed: Federation, tmp_path: Path):
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    result = await asyncio.to_thread(
        CliRunner().invoke, main,
        ["portal", "add-user", "--config", str(fed.directory / "node.toml"), "--school", SCHOOL,
         "--email", "cli@school-a.nl", "--password-file", str(secret)],
    )
    assert result.exit_code == 0, result.output
    assert "created for school 104A158" in result.output
    listed = await asyncio.to_thread(
        CliRunner().invoke, main, ["portal", "list-users", "--config", str(fed.directory / "node.toml")]
    )
    assert "cli@school-a.nl" in listed.output
    client = PortalClient(fed)
    try:
        assert f'id="school">{SCHOOL}<' in (await client.login("cli@school-a.nl", PASSWORD)).text
    finally:
        await client.close()


async def test_a_login_post_without_the_forms_csrf_token_is_refused(fed: Federation, users):
    client = PortalClient(fed)
    try:
        await client.get("/portal/login")
        page = await client.post("/portal/login", {"csrf": "forged", "email": USER, "password": PASSWORD})
        assert page.status == 403
        assert (await client.get("/portal/exchanges")).url.endswith("/portal/login")
    finally:
        await client.close()


async def test_every_state_changing_form_needs_the_sessions_csrf_token(fed: Federation, school_a: PortalClient):
    activation = (await fed.node.activations.find(school=SCHOOL))[0]
    for path, data in [
        ("/portal/logout", {}),
        ("/portal/student", {"eck_id": "x"}),
        ("/portal/activations", {"counterparty": fed.parties["reader"].oin, "data_service": "resultaten",
                                 "purposes": "a"}),
        (f"/portal/activations/{activation.id}/revoke", {}),
        (f"/portal/activations/{activation.id}/confirm", {}),
        (f"/portal/activations/{activation.id}/end", {"valid_until": "2030-01-01"}),
    ]:
        for token in (None, "not-the-token"):
            form = dict(data, **({"csrf": token} if token else {}))
            page = await school_a.post(path, form)
            assert page.status == 403, (path, token)
    assert (await fed.node.activations.get(activation.id)).state(fed.node.clock()) == "active"
    assert (await school_a.get("/portal/exchanges")).status == 200  # still logged in: logout was refused


async def test_logging_out_ends_the_session_on_the_server_not_just_in_the_browser(fed: Federation,
                                                                                  school_a: PortalClient):
    cookie = school_a.cookie(SESSION_COOKIE)
    page = await school_a.post("/portal/logout", {"csrf": await school_a.csrf()})
    assert page.url.endswith("/portal/login")
    replay = PortalClient(fed)
    try:
        replay.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie}, response_url=_url(fed))
        assert (await replay.get("/portal/exchanges")).url.endswith("/portal/login")
    finally:
        await replay.close()


def _url(fed: Federation):
    from yarl import URL

    return URL(fed.base_url + "/portal/")


async def test_a_session_expires_after_its_lifetime():
    sessions = Sessions(InProcessStore(), lifetime=0.3)
    session_id, session = await sessions.start(school=SCHOOL, user=USER, method="password")
    assert await sessions.get(session_id) == session
    await asyncio.sleep(0.4)
    assert await sessions.get(session_id) is None


async def test_login_state_for_oidc_can_be_taken_only_once():
    sessions = Sessions(InProcessStore(), lifetime=60)
    await sessions.put_login_state("s1", {"nonce": "n"})
    assert await sessions.take_login_state("s1") == {"nonce": "n"}
    assert await sessions.take_login_state("s1") is None


@pytest.mark.redis
async def test_sessions_in_redis_are_shared_by_nodes_and_end_everywhere_at_logout():
    prefix = f"edugate-test-{secrets.token_hex(6)}"
    first, second = redis_asyncio.from_url("redis://127.0.0.1:6379/0"), redis_asyncio.from_url("redis://127.0.0.1:6379/0")
    try:
        node_a = Sessions(RedisStore(first, prefix), lifetime=60)
        node_b = Sessions(RedisStore(second, prefix), lifetime=60)
        session_id, session = await node_a.start(school=SCHOOL, user=USER, method="password")
        assert await node_b.get(session_id) == session
        keys = [k.decode() async for k in first.scan_iter(f"{prefix}:portal:*")]
        assert keys and all(session_id not in k for k in keys)  # stored under a hash of the id, not the id
        await node_b.end(session_id)
        assert await node_a.get(session_id) is None
        await node_a.put_login_state("state", {"nonce": "n"}, ttl=60)
        assert await node_b.take_login_state("state") == {"nonce": "n"}
        assert await node_a.take_login_state("state") is None
    finally:
        async for key in first.scan_iter(f"{prefix}:*"):
            await first.delete(key)
        await first.aclose()
        await second.aclose()


async def test_the_portal_speaks_dutch_by_default_and_english_on_request_and_remembers_it(fed: Federation,
                                                                                          users):
    client = PortalClient(fed)
    try:
        dutch = await client.get("/portal/login")
        assert '<html lang="nl">' in dutch.text and "Wachtwoord" in dutch.text
        english = await client.get("/portal/login", lang="en")
        assert '<html lang="en">' in english.text and "Password" in english.text
        again = await client.get("/portal/login")
        assert '<html lang="en">' in again.text
    finally:
        await client.close()


def test_every_message_has_a_dutch_and_an_english_text():
    from gateway.portal.i18n import MESSAGES

    assert all(nl.strip() and en.strip() for nl, en in MESSAGES.values())


def test_every_message_key_a_template_uses_exists():
    import re

    from gateway.portal.i18n import MESSAGES
    from gateway.portal.web import HERE

    used = set()
    for template in (HERE / "templates").glob("*.html"):
        used |= set(re.findall(r"""\bt\(["']([a-z_]+)["']\)""", template.read_text()))
    assert used and used <= MESSAGES.keys(), used - MESSAGES.keys()


@pytest.mark.redis
async def test_a_node_with_redis_keeps_portal_sessions_in_redis(tmp_path: Path):
    from tests.portal.conftest import PASSWORD as PW

    fed = Federation(tmp_path / "fed", redis_url="redis://127.0.0.1:6379/0")  # a key prefix of its own
    await fed.start()
    client = PortalClient(fed)
    try:
        portal = PortalClient.portal_of(fed)
        assert isinstance(portal.sessions.store, RedisStore)
        await portal.accounts.add(school=SCHOOL, email=USER, password=PW)
        assert f'id="school">{SCHOOL}<' in (await client.login(USER, PW)).text
        keys = [k async for k in fed.node.redis.scan_iter(f"{fed.redis_prefix}:portal:session:*")]
        assert len(keys) == 1
    finally:
        await client.close()
        async for key in fed.node.redis.scan_iter(f"{fed.redis_prefix}:*"):
            await fed.node.redis.delete(key)
        await fed.close()


async def test_unknown_addresses_lock_like_real_ones_so_a_lockout_reveals_no_account(tmp_path: Path):
    accounts = SchoolAccounts(tmp_path / "a.sqlite", max_failed=2)
    await accounts.add(school=SCHOOL, email=USER, password=PASSWORD)
    outcomes = {}
    for email in (USER, "nobody@nowhere.nl"):
        first = await accounts.authenticate(email, "wrong-password-x")
        with pytest.raises(AccountLocked) as locked:
            await accounts.authenticate(email, "wrong-password-x")
        outcomes[email] = (first, type(locked.value))
    assert outcomes[USER] == outcomes["nobody@nowhere.nl"] == (None, AccountLocked)
