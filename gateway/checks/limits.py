"""Size limits that hold before any other work is done on a request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.denials import HeadersTooLarge, PayloadTooLarge
from gateway.exchange import Exchange

if TYPE_CHECKING:
    from gateway.node import Node


def request_limits(node: Node, x: Exchange) -> None:
    limits = node.config.limits
    size = sum(len(name) + len(value) + 4 for name, value in x.request.raw_headers)
    if size > limits.max_header_bytes:
        raise HeadersTooLarge(
            f"the request headers take {size} bytes, more than the allowed {limits.max_header_bytes}", step="limits"
        )
    declared = x.request.content_length
    if declared is not None and declared > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"the request body is {declared} bytes, more than the allowed {limits.max_body_bytes}", step="limits"
        )
