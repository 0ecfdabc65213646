"""The school activated this data service for this counterparty: recorded here, in force now."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.activation.model import Activation, decide
from gateway.denials import ConsentRequired
from gateway.exchange import Exchange

if TYPE_CHECKING:
    from gateway.node import Node


async def activation(node: Node, x: Exchange) -> None:
    """403 0022 when there is no activation for (school, data service, caller), or it is requested but not
    confirmed, not yet started, ended, revoked, or (class IV) names no processing agreement in force."""
    assert x.peer is not None
    x.activation = await admitting(node, x, x.peer.oin)


async def admitting(node: Node, x: Exchange, counterparty: str) -> Activation:
    """The activation that admits this exchange with `counterparty` (the caller inbound, the receiver outbound)."""
    assert x.service is not None and x.school is not None
    found = await node.activations.lookup(x.school, x.service.name, counterparty, read=x.activations_read)
    admitted, reason = decide(found, x.now, data_class=x.service.data_class)
    if admitted is None:
        if not found:
            reason = (
                f"school {x.school} has not activated data service {x.service.name!r} for participant {counterparty}"
            )
        raise ConsentRequired(reason, step="activation")
    return admitted
