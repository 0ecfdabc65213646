"""The operator console in a real browser (Debian's chromium through Playwright): an operator logs in,
suspends a participant, and sees the change in the audit trail and on the public register."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.async_api import async_playwright, expect

from trust.register import ParticipantStatus, Role
from trust.register_service.accounts import OperatorAccounts, OperatorRole
from trust.register_service.app import create_app
from trust.register_service.store import RegisterStore

pytestmark = pytest.mark.browser

OIN = "00000003111111110000"
PASSWORD = "correct horse battery staple"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"]


@pytest.fixture
async def register_url(tmp_path: Path) -> AsyncIterator[tuple[str, RegisterStore]]:
    store = await RegisterStore.open(tmp_path / "register.sqlite")
    await store.add_participant(OIN, "Uitgeverij Noord", status=ParticipantStatus.ACTIVE, actor="setup")
    await store.grant_keurmerk(OIN, "leermateriaalgebruik", Role.VERZENDER, actor="setup")
    await OperatorAccounts(store).create("beheerder", PASSWORD, OperatorRole.ADMIN, actor="setup")
    # Plain HTTP on loopback, as `serve --insecure-http` allows for tests: the browser would drop Secure cookies.
    app = create_app(store, ec.generate_private_key(ec.SECP256R1()), secure_cookies=False)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", store
    await runner.cleanup()
    await store.close()


async def test_an_operator_suspends_a_participant_and_sees_it_in_the_audit_trail_and_public_register(
        register_url: tuple[str, RegisterStore]) -> None:
    url, store = register_url
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(locale="nl-NL")
            await page.goto(f"{url}/console")
            await expect(page).to_have_url(f"{url}/console/login")
            await page.get_by_label("Username").fill("beheerder")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Log in").click()
            await expect(page).to_have_url(f"{url}/console")

            await page.get_by_role("link", name="Uitgeverij Noord").click()
            await page.locator("#status-select").select_option("suspended")
            await page.locator("#status-reason").fill("Datalek in onderzoek")
            await page.get_by_role("button", name="Set status").click()
            await expect(page.get_by_role("status")).to_contain_text("Saved")
            await expect(page.locator("#participant-status")).to_have_text("suspended: Datalek in onderzoek")

            await page.get_by_role("link", name="Audit trail").click()
            latest = page.locator("table.audit tbody tr").first
            await expect(latest.locator(".actor")).to_have_text("beheerder")
            await expect(latest.locator(".action")).to_have_text("set status suspended")
            await expect(latest).to_contain_text(f"participant:{OIN}")
            await expect(latest.locator("code.before").first).to_have_text("active")
            await expect(latest.locator("code.after").first).to_have_text("suspended")

            await page.get_by_role("link", name="Public register").click()
            row = page.locator(f'tr[data-oin="{OIN}"]').first
            await expect(row.locator(".participant-status")).to_contain_text("geschorst")
            await page.get_by_role("link", name="English").click()
            await expect(page.locator(f'tr[data-oin="{OIN}"] .participant-status').first).to_contain_text("suspended")
        finally:
            await browser.close()

    participant = await store.participant(OIN)
    assert participant is not None and participant.status is ParticipantStatus.SUSPENDED
    assert participant.status_reason == "Datalek in onderzoek"
