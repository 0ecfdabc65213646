"""The school portal in a real browser (Debian's chromium through Playwright) against a real node with real
exchanges: a school logs in, filters, looks up a student, exports and verifies the export offline, and revokes
an activation, after which the publisher's next exchange is refused."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from connectors.samples.federation import SCHOOL, Federation
from connectors.samples.publisher import progress_record
from gateway.demo import eck_id
from tests.portal.conftest import PASSWORD, USER, fed, users  # noqa: F401 - fixtures
from tests.portal.idp import IdentityProvider, use_provider

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"]
EDUGATE = Path(sys.executable).parent / "edugate"


async def rows(page: Page) -> int:
    return await page.locator("table.records tbody tr").count()


async def test_a_school_works_through_the_portal_from_login_to_revocation(
    fed: Federation, users: None, tmp_path: Path  # noqa: F811
) -> None:
    base = fed.base_url
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(ignore_https_errors=True, accept_downloads=True, locale="nl-NL")
            page = await context.new_page()

            # log in (Dutch by default)
            await page.goto(f"{base}/portal/")
            await expect(page).to_have_url(f"{base}/portal/login")
            await page.get_by_label("E-mailadres").fill(USER)
            await page.get_by_label("Wachtwoord").fill(PASSWORD)
            await page.get_by_role("button", name="Inloggen").click()
            await expect(page).to_have_url(f"{base}/portal/exchanges")
            await expect(page.locator("#school")).to_have_text(SCHOOL)
            assert await rows(page) == 6  # three exchanges about this school, two records each

            # filter: by counterparty and decision; nothing was refused yet
            await page.get_by_label("Partij").select_option(label="Uitgeverij De Polder")
            await page.get_by_label("Besluit").select_option("denied")
            await page.get_by_role("button", name="Filteren").click()
            await expect(page.locator("#no-records")).to_be_visible()
            await page.get_by_label("Besluit").select_option("allowed")
            await page.get_by_role("button", name="Filteren").click()
            assert await rows(page) == 6

            # the language switch
            await page.get_by_role("link", name="English").click()
            await expect(page.get_by_role("heading", name="Exchanges")).to_be_visible()
            await page.get_by_role("link", name="Nederlands").click()

            # look up a student by ECK iD
            await page.get_by_role("link", name="Leerling opzoeken").click()
            await page.get_by_label("ECK iD van de leerling").fill(eck_id(2))
            await page.get_by_role("button", name="Opzoeken").click()
            await expect(page.locator("table.records tbody tr")).to_have_count(2)
            assert eck_id(2) not in page.url

            # totals with the chart
            await page.get_by_role("link", name="Totalen").click()
            await expect(page.locator("svg.chart")).to_be_visible()

            # export JSON with proofs, and verify it with the offline verifier
            await page.get_by_role("link", name="Exporteren").click()
            async with page.expect_download() as download_info:
                await page.locator("#export-json").click()
            export = tmp_path / "export.json"
            await (await download_info.value).save_as(export)
            key = tmp_path / "log-public.pem"
            key.write_bytes(await (await context.request.get(f"{base}/log/v1/public-key")).body())
            verified = await asyncio.to_thread(
                subprocess.run, [str(EDUGATE), "log", "verify", str(export), "--public-key", str(key)],
                capture_output=True, text=True, check=False,
            )
            assert verified.returncode == 0, verified.stderr
            assert re.search(r"OK .*: 6 records proven", verified.stdout)

            # revoke the publisher's activation; its next exchange is refused at once
            await page.get_by_role("link", name="Activeringen").click()
            row = page.locator("tr", has_text="leermateriaalgebruik").filter(has_text="Uitgeverij De Polder")
            await row.get_by_label("Reden (optioneel)").fill("overeenkomst beëindigd")
            await row.get_by_role("button", name="Intrekken").click()
            await expect(page.get_by_role("status")).to_have_text("Opgeslagen.")
            await expect(row.locator("td.state")).to_have_text("ingetrokken")

            record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(1), school=SCHOOL)
            answer = await fed.client("publisher").put_progress(record)
            assert answer.status == 403 and answer.body["status"] == "0022"

            # and the school sees the refusal in its log
            await page.goto(f"{base}/portal/exchanges?decision=denied")
            await expect(page.locator("table.records tbody tr")).to_have_count(1)
            await expect(page.locator("table.records tbody tr td.decision")).to_have_text("geweigerd")
        finally:
            await browser.close()


async def test_a_school_logs_in_with_its_own_identity_provider_in_the_browser(fed: Federation) -> None:  # noqa: F811
    idp = IdentityProvider(claims={"email": "mentor@school-a.nl", "organisationMasterIdentifier": SCHOOL})
    await idp.start()
    use_provider(fed, idp)
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(ignore_https_errors=True, locale="en-GB")
                page = await context.new_page()
                await page.goto(f"{fed.base_url}/portal/login?lang=en")
                await page.get_by_role("link", name="Log in with SchoolID").click()
                await expect(page).to_have_url(f"{fed.base_url}/portal/exchanges")
                await expect(page.locator("#school")).to_have_text(SCHOOL)
                assert await rows(page) == 6
                await page.get_by_role("button", name="Log out").click()
                await expect(page).to_have_url(f"{fed.base_url}/portal/login")
                await page.goto(f"{fed.base_url}/portal/exchanges")
                await expect(page).to_have_url(f"{fed.base_url}/portal/login")
            finally:
                await browser.close()
    finally:
        await idp.close()
