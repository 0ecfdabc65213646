"""Whatever the JSON shape, no field outside the allowlist reaches the upstream (push) or the caller (pull):
property tests through the attribute check and the response filter themselves."""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.catalogue import load_catalogue
from gateway.checks.attributes import allowlist_for, attributes, filter_response
from gateway.denials import Denial
from gateway.exchange import Exchange
from gateway.minimisation import value_paths
from gateway.pseudonyms import Pseudonyms
from gateway.purposes import load_purposes
from tests.school.conftest import DASHBOARD, ECK_ID, PUBLISHER, ROOT, SCHOOL, CheckNode, node_config, progress
from trust.certificates import PeerIdentity
from trust.tokens import AccessToken

CATALOGUE = load_catalogue(ROOT / "config" / "catalogue.toml")
PURPOSES = load_purposes(ROOT / "config" / "purposes.toml")

KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF_", min_size=1, max_size=10)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=20,
)
EXTRA = st.dictionaries(KEYS, JSON, max_size=5)


def exchange(service_name: str, caller: str, body: bytes = b"") -> Exchange:
    service = CATALOGUE.services[service_name]
    if service_name == "leermateriaalgebruik":
        service = service.model_copy(update={"extra_fields": "remove"})  # cut rather than refuse: more to check
    reader = StreamReader(BaseProtocol(asyncio.get_running_loop()), 2**16, loop=asyncio.get_running_loop())
    reader.feed_data(body)
    reader.feed_eof()
    route = service.routes[0]
    request = make_mocked_request(route.method, route.path.replace("{id}", "p-1"), payload=reader,
                                  headers={"Content-Length": str(len(body))})  # fmt: skip
    now = datetime.now(UTC)
    x = Exchange(request=request, now=now)
    x.service = service
    x.peer = PeerIdentity(oin=caller, thumbprint="t", subject="s", not_before=now, not_after=now)
    x.token = AccessToken(client_id="c", oin=caller, scopes=frozenset({service.scope}), purposes=frozenset({"a"}),
                          thumbprint="t", jti=secrets.token_hex(4), issued_at=0, expires_at=0)  # fmt: skip
    return x


def assert_only_allowed(x: Exchange, payload: Any) -> None:
    assert x.service is not None and x.token is not None
    allowlist = allowlist_for(x.service, x.token.scopes)
    assert allowlist is not None
    containers, scalars = value_paths(payload)
    for path in scalars:
        assert allowlist.allows(path), path
    for path in containers:
        assert allowlist.allows(path) or allowlist.on_the_way(path), path


# The attribute check reads the node's config, catalogue and pseudonyms only; it never opens activations.
NODE = CheckNode(node_config(Path(tempfile.gettempdir())), CATALOGUE, None, PURPOSES, Pseudonyms(b"p" * 32))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(top=EXTRA, inside=EXTRA, records=st.lists(EXTRA, max_size=3))
def test_no_field_outside_the_allowlist_reaches_the_caller_of_a_pull(
    top: dict[str, Any], inside: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    answer = {
        **top,
        "school": SCHOOL,
        "records": [{**extra, "student": {**inside, "id": ECK_ID}, "status": "started"} for extra in records],
    }

    async def run() -> None:
        x = exchange("gebruiksoverzicht", DASHBOARD)
        try:
            filtered = await filter_response(NODE, x, json.dumps(answer).encode())
        except Denial:
            return  # refused: nothing reached the caller
        assert_only_allowed(x, json.loads(filtered))

    asyncio.run(run())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(top=EXTRA, student=EXTRA, school=EXTRA)
def test_no_field_outside_the_allowlist_reaches_the_upstream_of_a_push(
    top: dict[str, Any], student: dict[str, Any], school: dict[str, Any]
) -> None:
    body = {**top, **progress(), "student": {**student, "id": ECK_ID},
            "school": {**school, "organisationMasterIdentifier": SCHOOL}}  # fmt: skip

    async def run() -> None:
        x = exchange("leermateriaalgebruik", PUBLISHER, json.dumps(body).encode())
        try:
            await attributes(NODE, x)
        except Denial:
            return  # refused: nothing is forwarded
        forwarded = json.loads(x.body or b"")
        assert_only_allowed(x, forwarded)
        assert forwarded["student"]["id"] == ECK_ID and forwarded["status"] == "completed"  # what is allowed stays

    asyncio.run(run())
