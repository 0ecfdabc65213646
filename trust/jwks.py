"""JSON Web Keys: the public keys a client registers, how the node finds one, and fetching a `jwks_uri`.

A key decides its algorithm, never the token: an EC P-256 key verifies only ES256, an Ed25519 key only
EdDSA, an RSA key (>= 2048 bits) only PS256 or RS256. HMAC and `none` have no key here at all.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from connectors.bodies import read_within
from trust.register import Client

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

MIN_RSA_BITS = 2048


class KeyNotUsable(ValueError):
    """No registered key fits the token: none with its kid, a key of another type, private material, ..."""


class JwksUnavailable(Exception):
    """A registered jwks_uri could not be fetched or did not hold a JWKS."""


def _public(key: PrivateKey | PublicKey) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        return key.public_key()
    return key


def algorithms_for(key: PrivateKey | PublicKey) -> tuple[str, ...]:
    """The JWS algorithms a key may verify (or sign) with; the first is the one to sign with."""
    key = _public(key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise KeyNotUsable(f"EC keys must be on P-256 (ES256), not {key.curve.name}")
        return ("ES256",)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ("EdDSA",)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyNotUsable(f"RSA keys need at least {MIN_RSA_BITS} bits, this one has {key.key_size}")
        return ("PS256", "RS256")
    raise KeyNotUsable(f"unsupported key type {type(key).__name__}")


# Header parameters that would let a JWS choose its own key, or demand processing we do not do.
FORBIDDEN_HEADERS = ("crit", "jku", "x5u", "jwk", "x5c")


def signing_algorithm(key: PrivateKey | PublicKey) -> str:
    """The one algorithm the node's and the operator's own keys sign and verify with: ES256 (P-256) or EdDSA."""
    algorithm = algorithms_for(key)[0]
    if algorithm not in ("ES256", "EdDSA"):
        raise KeyNotUsable("signing keys must be EC P-256 (ES256) or Ed25519 (EdDSA)")
    return algorithm


def pinned_header(token: str | bytes, typ: str) -> dict[str, Any]:
    """The header of a compact JWS checked against a pinned key: its `typ` must be `typ`, and it may neither
    name nor carry a key, nor demand a critical extension. Raises ValueError saying which."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise ValueError(f"not a JWS: {exc}") from exc
    if header.get("typ") != typ:
        raise ValueError(f"typ must be {typ!r}, got {header.get('typ')!r}")
    for name in FORBIDDEN_HEADERS:
        if name in header:
            raise ValueError(f"header parameter {name!r} is not accepted")
    return header


def public_jwk(key: PrivateKey | PublicKey, kid: str) -> dict[str, Any]:
    """The public JWK of `key` with `kid` and `use: sig` (and `alg` where the key type has only one)."""
    key = _public(key)
    algorithms = algorithms_for(key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
    elif isinstance(key, ed25519.Ed25519PublicKey):
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(key, as_dict=True)
    else:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True)
    jwk.update(kid=kid, use="sig")
    if len(algorithms) == 1:
        jwk["alg"] = algorithms[0]
    return dict(jwk)


_KTY_FOR_ALG = {"ES256": "EC", "EdDSA": "OKP", "PS256": "RSA", "RS256": "RSA"}


def _usable(jwk: dict[str, Any], alg: str) -> PublicKey:
    label = f"key {jwk.get('kid')!r}" if "kid" in jwk else "the key"
    if "d" in jwk or "p" in jwk:
        raise KeyNotUsable(f"{label} in the registered JWKS contains private key material")
    if jwk.get("use", "sig") != "sig":
        raise KeyNotUsable(f"{label} is registered for use {jwk.get('use')!r}, not for signatures")
    if "key_ops" in jwk and "verify" not in jwk["key_ops"]:
        raise KeyNotUsable(f"{label} is registered without the verify key operation")
    if "alg" in jwk and jwk["alg"] != alg:
        raise KeyNotUsable(f"{label} is registered for alg {jwk['alg']!r}, the token uses {alg!r}")
    try:
        key = jwt.PyJWK(jwk).key
    except jwt.PyJWTError as exc:
        raise KeyNotUsable(f"{label} in the registered JWKS is not a usable public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise KeyNotUsable(f"{label} is not a supported public key")
    if alg not in algorithms_for(key):
        raise KeyNotUsable(f"alg {alg!r} does not fit {label} (a {jwk.get('kty')} key allows {algorithms_for(key)})")
    return key


def find_key(jwks: dict[str, Any], kid: str | None, alg: str) -> PublicKey:
    """The key in `jwks` that verifies a token with header `kid` and `alg`. Raises KeyNotUsable."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        raise KeyNotUsable("the registered JWKS has no keys list")
    entries = [k for k in keys if isinstance(k, dict)]
    if kid is not None:
        candidates = [k for k in entries if k.get("kid") == kid]
        if not candidates:
            raise KeyNotUsable(f"no key with kid {kid!r} in the client's registered JWKS")
    else:
        # Without a kid only an unambiguous choice is safe: one key, or one key of the algorithm's type.
        candidates = entries if len(entries) == 1 else [k for k in entries if k.get("kty") == _KTY_FOR_ALG.get(alg)]
        if len(candidates) != 1:
            raise KeyNotUsable(
                f"the token has no kid and the client's JWKS holds {len(candidates)} keys that could match"
            )
    if len(candidates) > 1:
        fitting = [k for k in candidates if k.get("kty") == _KTY_FOR_ALG.get(alg)]
        if len(fitting) != 1:
            raise KeyNotUsable(f"kid {kid!r} names {len(candidates)} keys in the client's JWKS")
        candidates = fitting
    return _usable(candidates[0], alg)


@dataclass(frozen=True)
class _Entry:
    jwks: dict[str, Any]
    fetched_at: float


class JwksFetcher:
    """Fetches clients' `jwks_uri` documents over HTTPS, with a TTL cache, a size limit and a timeout.

    It takes a register `Client`, not a URL: the only URLs it ever fetches are those the register lists,
    never one taken from a request. `ssl` is the context that verifies the servers (default: the system's
    trust store); certificate verification cannot be turned off.
    """

    def __init__(
        self,
        *,
        ssl: SSLContext | None = None,
        ttl: float = 300.0,
        timeout: float = 5.0,
        max_bytes: int = 64 * 1024,
        max_entries: int = 1024,
        min_refresh_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ssl = ssl
        self._ttl = ttl
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[_Entry]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> JwksFetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def jwks(self, client: Client, *, refresh: bool = False) -> dict[str, Any]:
        """The JWKS at `client.jwks_uri`. `refresh` asks for a new copy (a kid was not found: the client may
        have rotated its keys); it is honoured at most once per `min_refresh_interval` per URL, so unknown
        kids cannot make the node hammer a client's server. Raises JwksUnavailable."""
        url = client.jwks_uri
        if url is None:
            raise JwksUnavailable(f"client {client.client_id!r} has no jwks_uri")
        now = self._clock()
        entry = self._cache.get(url)
        if entry is not None:
            age = now - entry.fetched_at
            if age < self._ttl and not (refresh and age >= self._min_refresh_interval):
                self._cache.move_to_end(url)
                return entry.jwks
        future = self._inflight.get(url)
        if future is None:  # one fetch per URL at a time; concurrent callers share it
            future = asyncio.ensure_future(self._fetch(url))
            self._inflight[url] = future
            future.add_done_callback(lambda done: self._settled(url, done))
        return (await asyncio.shield(future)).jwks

    def _settled(self, url: str, done: asyncio.Future[_Entry]) -> None:
        self._inflight.pop(url, None)
        if not done.cancelled():
            done.exception()  # retrieved here, so a failure whose waiters were all cancelled is not reported as lost

    async def _fetch(self, url: str) -> _Entry:
        if not url.startswith("https://"):
            raise JwksUnavailable(f"jwks_uri {url!r} is not https")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(
                url, ssl=self._ssl if self._ssl is not None else True, allow_redirects=False
            ) as response:
                if response.status != 200:
                    raise JwksUnavailable(f"jwks_uri {url} answered HTTP {response.status}")
                if response.content_length is not None and response.content_length > self._max_bytes:
                    raise JwksUnavailable(f"jwks_uri {url} sent more than {self._max_bytes} bytes")
                body = await read_within(response.content, self._max_bytes)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JwksUnavailable(f"jwks_uri {url} could not be fetched: {exc or type(exc).__name__}") from exc
        if body is None:
            raise JwksUnavailable(f"jwks_uri {url} sent more than {self._max_bytes} bytes")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the interpreter follows
            raise JwksUnavailable(f"jwks_uri {url} did not return JSON: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise JwksUnavailable(f"jwks_uri {url} did not return a JWKS (an object with a keys list)")
        entry = _Entry(document, self._clock())
        self._cache[url] = entry
        self._cache.move_to_end(url)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return entry
