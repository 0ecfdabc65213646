"""The purpose an exchange is for: declared per request, within what the token, the service and the school allow.

The access token carries the purposes bound at the token request (`purposes`). A request declares one of them in
the `Edu-Purpose` header: it may narrow the token's purposes, never widen them. Without the header, a token bound
to exactly one purpose declares that one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.activation.model import Activation
from gateway.denials import ConsentRequired, Denial, Forbidden
from gateway.exchange import Exchange

if TYPE_CHECKING:
    from gateway.node import Node

PURPOSE_HEADER = "Edu-Purpose"


async def purpose(node: Node, x: Exchange) -> None:
    assert x.token is not None and x.service is not None
    bound = frozenset(x.token.purposes)
    declared = [value.strip() for value in x.request.headers.getall(PURPOSE_HEADER, [])]
    if len(declared) > 1 or any("," in value or " " in value for value in declared):
        raise Denial(f"declare exactly one purpose in {PURPOSE_HEADER}", step="purpose")
    if declared and declared[0]:
        code = declared[0]
    elif len(bound) == 1:
        (code,) = bound
    elif not bound:
        raise Forbidden("the access token is bound to no purpose; ask for one at the token request", step="purpose")
    else:
        raise Forbidden(
            f"declare the purpose of this exchange in {PURPOSE_HEADER}: the access token allows "
            f"{', '.join(sorted(bound))}",
            step="purpose",
        )
    # The purpose's description is only for a refusal's message: not made for an exchange that passes.
    if code not in node.purposes:
        raise Forbidden(f"purpose {node.purposes.describe(code)}", step="purpose")
    if code not in bound:
        raise Forbidden(
            f"purpose {node.purposes.describe(code)} is not bound into the access token "
            f"(bound: {', '.join(sorted(bound)) or 'none'}); "
            "a request may narrow the token's purposes, never widen them",
            step="purpose",
        )
    if code not in x.service.purposes:
        raise Forbidden(
            f"purpose {node.purposes.describe(code)} is not allowed for data service {x.service.name!r}", step="purpose"
        )
    if x.activation is not None:
        x.activation = await covering_activation(node, x, code)
    x.purpose = code


async def covering_activation(node: Node, x: Exchange, code: str) -> Activation:
    """The admitting activation if it covers purpose `code`, or another one in force for the same school, service
    and counterparty that does; else 403 0022 naming the purpose."""
    assert x.activation is not None and x.service is not None
    if code in x.activation.purposes:
        return x.activation
    found = await node.activations.lookup(
        x.activation.school, x.service.name, x.activation.counterparty, read=x.activations_read
    )
    for other in found:
        if code in other.purposes and other.refusal(x.now, data_class=x.service.data_class) is None:
            return other
    raise ConsentRequired(
        f"school {x.school}'s activation of data service {x.service.name!r} does not cover purpose "
        f"{node.purposes.describe(code)}",
        step="purpose",
    )
