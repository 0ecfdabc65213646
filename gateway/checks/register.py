"""The node decides against a live register, or not at all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.denials import ServiceUnavailable
from gateway.exchange import Exchange

if TYPE_CHECKING:
    from gateway.node import Node


def register_fresh(node: Node, x: Exchange) -> None:
    """Fail closed when the register was never loaded or its last good contact is older than allowed."""
    holder = node.registers
    if holder.register is None:
        raise ServiceUnavailable("the node has no verified register yet; try again shortly", step="register")
    if not holder.fresh():
        raise ServiceUnavailable(
            f"the node's register is {holder.age():.0f} s old, more than the allowed {holder.max_staleness:.0f} s",
            step="register",
        )
    x.register = holder.register
