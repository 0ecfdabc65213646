"""The access token: issued by this node's authorisation server, bound to the presented certificate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.denials import Unauthenticated, bearer_challenge
from gateway.exchange import Exchange
from trust.tokens import TokenRejected

if TYPE_CHECKING:
    from gateway.node import Node


def access_token(node: Node, x: Exchange) -> None:
    """Exactly one Bearer token, in the Authorization header only (RFC 6750 §2.1)."""
    values = x.request.headers.getall("Authorization", [])
    if not values:
        raise Unauthenticated("an access token is required", step="token", www_authenticate=bearer_challenge())
    if len(values) > 1:
        raise _invalid("more than one Authorization header")
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or " " in token.strip():
        raise _invalid("the Authorization header must be 'Bearer <token>'")
    if "access_token" in x.request.query:
        raise _invalid("access tokens are accepted in the Authorization header only")
    try:
        x.token = node.tokens.verify(token.strip(), now=x.now.timestamp())
    except TokenRejected as exc:
        raise _invalid(str(exc)) from exc


def certificate_binding(node: Node, x: Exchange) -> None:
    """RFC 8705: the token's cnf.x5t#S256 must equal the thumbprint of the certificate on this connection,
    and the token's OIN the certificate's (a token lifted from another party is useless)."""
    assert x.token is not None and x.peer is not None
    if x.token.thumbprint != x.peer.thumbprint:
        raise _invalid("the token is bound to another certificate (cnf.x5t#S256 mismatch)", step="binding")
    if x.token.oin != x.peer.oin:
        raise _invalid("the token was issued to another participant", step="binding")


def _invalid(description: str, step: str = "token") -> Unauthenticated:
    return Unauthenticated(
        f"access token refused: {description}",
        step=step,
        www_authenticate=bearer_challenge("invalid_token", description),
    )
