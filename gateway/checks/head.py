"""The request head says one thing: a field the node and the offered API must read alike appears once, an HTTP/1.1
request names its Host (RFC 9112 §3.2), and it expects nothing but what the node meets (100-continue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.denials import AmbiguousRequest, ExpectationFailed
from gateway.exchange import Exchange

if TYPE_CHECKING:
    from gateway.node import Node

# Two of any of these and the node's checks could read one while the offered API reads the other.
SINGLETONS = ("Host", "Content-Type", "Content-Length")


def request_head(node: Node, x: Exchange) -> None:
    headers = x.request.headers
    for name in SINGLETONS:
        if len(headers.getall(name, ())) > 1:
            raise AmbiguousRequest(f"the request has more than one {name} header", step="head")
    if x.request.version >= (1, 1) and "Host" not in headers:
        raise AmbiguousRequest("an HTTP/1.1 request must have a Host header", step="head")
    for expectation in headers.getall("Expect", ()):
        if expectation.strip().lower() != "100-continue":
            raise ExpectationFailed("this node meets no expectation but 100-continue", step="head")
