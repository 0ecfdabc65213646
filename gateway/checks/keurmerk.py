"""What the caller is certified for: a keurmerk for the data service in the caller's role, and the scope."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.denials import Forbidden, ScopeRequired, bearer_challenge
from gateway.exchange import Exchange

if TYPE_CHECKING:
    from gateway.node import Node


def keurmerk(node: Node, x: Exchange) -> None:
    """Afnemer for pull, Verzender for push; checked against the register as it is now, so a keurmerk revoked
    after the token was issued bites on the next request."""
    assert x.participant is not None and x.service is not None
    role = x.service.caller_role
    if not x.participant.holds(x.service.name, role, x.now):
        raise Forbidden(
            f"participant {x.participant.oin} holds no keurmerk in force for data service "
            f"{x.service.name!r} in role {role.value}",
            step="keurmerk",
        )


def scope(node: Node, x: Exchange) -> None:
    assert x.token is not None and x.service is not None
    if x.service.scope not in x.token.scopes:
        raise ScopeRequired(
            f"scope {x.service.scope!r} is required for data service {x.service.name!r}",
            step="scope",
            www_authenticate=bearer_challenge("insufficient_scope", scope=x.service.scope),
        )
