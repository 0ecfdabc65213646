"""OpenID Connect login against a real provider on loopback (discovery, JWKS, code flow with PKCE, signed ID
tokens): the school comes from a configured claim, mapped by configuration, and only for the schools the
provider may speak for. Anything wrong with the ID token refuses the login."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from joserfc.jwk import ECKey, OctKey

from connectors.samples.federation import OTHER_SCHOOL, SCHOOL, Federation
from gateway.config import ConfigError, load_config
from gateway.portal.web import SESSION_COOKIE
from tests.portal.client import Page, PortalClient
from tests.portal.idp import CLIENT_ID, IdentityProvider, use_provider


@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    provider = IdentityProvider()
    await provider.start()
    try:
        yield provider
    finally:
        await provider.close()


async def oidc_login(fed: Federation) -> tuple[PortalClient, Page]:
    client = PortalClient(fed)
    page = await client.get("/portal/oidc/school-idp/login")
    return client, page


async def assert_login_refused(fed: Federation, status: int, said: str = "") -> None:
    """The login ends on an error page with `status` that says `said`, and nobody is logged in."""
    client, page = await oidc_login(fed)
    try:
        assert page.status == status and said in page.text
        assert client.cookie(SESSION_COOKIE) is None
    finally:
        await client.close()


async def test_a_school_user_logs_in_with_the_schools_identity_provider(fed: Federation, idp: IdentityProvider):
    use_provider(fed, idp)
    idp.claims = {"email": "teacher@school-a.nl", "organisationMasterIdentifier": SCHOOL}
    client, page = await oidc_login(fed)
    try:
        assert page.status == 200 and page.url.endswith("/portal/exchanges")
        assert f'id="school">{SCHOOL}<' in page.text and "teacher@school-a.nl" in page.text
        assert (await client.get("/portal/totals")).status == 200
    finally:
        await client.close()


async def test_the_login_page_offers_the_configured_provider(fed: Federation, idp: IdentityProvider):
    use_provider(fed, idp)
    client = PortalClient(fed)
    try:
        page = await client.get("/portal/login")
        assert 'href="/portal/oidc/school-idp/login"' in page.text and "SchoolID" in page.text
    finally:
        await client.close()


async def test_a_mapping_table_turns_the_providers_claim_into_the_school(fed: Federation, idp: IdentityProvider):
    use_provider(fed, idp, school_claim="school_code", school_map={"LYCEUM-NOORD": SCHOOL})
    idp.claims = {"school_code": "LYCEUM-NOORD"}
    client, page = await oidc_login(fed)
    try:
        assert f'id="school">{SCHOOL}<' in page.text
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("claims", "settings"),
    [
        ({"organisationMasterIdentifier": OTHER_SCHOOL}, {}),  # a school the provider may not speak for
        ({}, {}),  # no school claim at all
        ({"organisationMasterIdentifier": [SCHOOL, OTHER_SCHOOL]}, {}),  # not one school
        ({"school_code": "UNKNOWN"}, {"school_claim": "school_code", "school_map": {"LYCEUM-NOORD": SCHOOL}}),
    ],
)
async def test_a_login_that_does_not_name_one_allowed_school_is_refused(fed: Federation, idp: IdentityProvider,
                                                                       claims, settings):
    use_provider(fed, idp, **settings)
    idp.claims = claims
    client, page = await oidc_login(fed)
    try:
        assert page.status == 403 and client.cookie(SESSION_COOKIE) is None
        assert (await client.get("/portal/exchanges")).url.endswith("/portal/login")
    finally:
        await client.close()


@pytest.mark.parametrize(
    "tamper",
    [
        {"aud": "another-client"},
        {"iss": "https://evil.example"},
        {"nonce": "replayed-nonce"},
        {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
        {"azp": "another-client", "aud": [CLIENT_ID, "another-client"]},
    ],
)
async def test_an_id_token_with_a_wrong_claim_is_refused(fed: Federation, idp: IdentityProvider, tamper):
    use_provider(fed, idp)
    idp.claims = {"organisationMasterIdentifier": SCHOOL}
    idp.tamper = tamper
    await assert_login_refused(fed, 403, "ID token")


async def test_an_id_token_signed_with_a_key_the_provider_does_not_publish_is_refused(fed: Federation,
                                                                                     idp: IdentityProvider):
    use_provider(fed, idp)
    idp.claims = {"organisationMasterIdentifier": SCHOOL}
    idp.published = idp.key  # the JWKS keeps showing this key ...
    idp.key = ECKey.generate_key("P-256", parameters={"kid": "idp-1"})  # ... while tokens are signed with another
    await assert_login_refused(fed, 403)


async def test_a_callback_cannot_be_replayed(fed: Federation, idp: IdentityProvider):
    use_provider(fed, idp)
    idp.claims = {"organisationMasterIdentifier": SCHOOL}
    client = PortalClient(fed)
    try:
        async with client.session.get(fed.base_url + "/portal/oidc/school-idp/login", allow_redirects=False) as r:
            to_idp = r.headers["Location"]
        async with client.session.get(to_idp, allow_redirects=False) as r:
            callback = r.headers["Location"]
        async with client.session.get(callback, allow_redirects=False) as r:
            assert r.status == 303
        attacker = PortalClient(fed)
        try:
            async with attacker.session.get(callback, allow_redirects=False) as r:
                assert r.status == 403
        finally:
            await attacker.close()
        forged = callback.split("state=")[0] + "state=made-up"
        async with client.session.get(forged, allow_redirects=False) as r:
            assert r.status == 403
    finally:
        await client.close()


async def test_an_unknown_provider_name_is_not_found(fed: Federation):
    client = PortalClient(fed)
    try:
        assert (await client.get("/portal/oidc/nobody/login")).status == 404
    finally:
        await client.close()


def test_oidc_providers_are_configured_per_school_and_validated(tmp_path: Path, fed: Federation):
    base = (fed.directory / "node.toml").read_text()
    path = tmp_path / "node.toml"
    path.write_text(base.replace(str(fed.directory / ""), str(fed.directory) + "/") + f"""
[[portal.oidc]]
name = "lyceum"
issuer = "https://login.lyceum.example"
client_id = "edugate"
client_secret = "s3cret"
school_claim = "brin"
school_map = {{ "LYC" = "{SCHOOL}" }}
schools = ["{SCHOOL}"]
""")
    # relative paths in the base config point into the federation's folder
    path.write_text(path.read_text().replace('"node-server', f'"{fed.directory}/node-server')
                    .replace('"node-client', f'"{fed.directory}/node-client')
                    .replace('"register.jws', f'"{fed.directory}/register.jws')
                    .replace('"operator.pub.pem', f'"{fed.directory}/operator.pub.pem'))
    config = load_config(path)
    (provider,) = config.portal.oidc
    assert provider.school_map == {"LYC": SCHOOL} and provider.schools == (SCHOOL,)
    path.write_text(path.read_text().replace(f'schools = ["{SCHOOL}"]\n', ""))
    with pytest.raises(ConfigError, match=r"portal\.oidc\.0\.schools"):
        load_config(path)


async def test_a_callback_planted_in_another_browser_logs_nobody_in(fed: Federation, idp: IdentityProvider):
    use_provider(fed, idp)
    idp.claims = {"organisationMasterIdentifier": SCHOOL}
    attacker, victim = PortalClient(fed), PortalClient(fed)
    try:
        async with attacker.session.get(fed.base_url + "/portal/oidc/school-idp/login", allow_redirects=False) as r:
            to_idp = r.headers["Location"]
        async with attacker.session.get(to_idp, allow_redirects=False) as r:
            callback = r.headers["Location"]  # the attacker stops here and sends this link to a school user
        async with victim.session.get(callback, allow_redirects=False) as r:
            assert r.status == 403
        assert victim.cookie(SESSION_COOKIE) is None
    finally:
        await attacker.close()
        await victim.close()


async def test_provider_metadata_past_a_megabyte_is_not_read_and_the_login_page_says_so(fed: Federation,
                                                                                      idp: IdentityProvider):
    use_provider(fed, idp)
    idp.discovery_extra = {"x-padding": "p" * (1024 * 1024)}
    await assert_login_refused(fed, 502, "answered more than 1048576 bytes")


async def test_a_provider_offering_only_hmac_id_tokens_logs_nobody_in(fed: Federation, idp: IdentityProvider):
    use_provider(fed, idp)
    idp.claims = {"organisationMasterIdentifier": SCHOOL}
    idp.discovery_extra = {"id_token_signing_alg_values_supported": ["HS256", "none"]}
    await assert_login_refused(fed, 403, "no public-key algorithm")


async def test_an_id_token_signed_hs256_with_a_key_from_the_jwks_is_refused_though_the_metadata_offers_it(
        fed: Federation, idp: IdentityProvider):
    # A symmetric key in a JWKS is public: anyone could sign with it. Only public-key algorithms are accepted.
    use_provider(fed, idp)
    idp.claims = {"organisationMasterIdentifier": SCHOOL}
    shared = OctKey.generate_key(256, parameters={"kid": "shared"})
    idp.discovery_extra = {"id_token_signing_alg_values_supported": ["HS256", "ES256"]}
    idp.extra_keys, idp.signing = [shared], ("HS256", shared)
    await assert_login_refused(fed, 403, "ID token")
