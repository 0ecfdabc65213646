"""Who is calling: the client certificate, and the participant it belongs to in the register."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.denials import Forbidden, Unauthenticated
from gateway.exchange import Exchange
from trust.certificates import CertificateRejected

if TYPE_CHECKING:
    from gateway.node import Node


def peer_certificate_der(x: Exchange) -> bytes | None:
    transport = x.request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    if ssl_object is None:
        return None
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    return der


def client_certificate(node: Node, x: Exchange) -> None:
    """A client certificate that chains to a CA in the register, fit for client auth, with an OIN."""
    der = peer_certificate_der(x)
    if der is None:
        raise Unauthenticated("a client certificate is required (mutual TLS)", step="certificate")
    assert x.register is not None
    try:
        x.peer = node.certificates.verify(der, x.register, x.now)
    except CertificateRejected as exc:
        raise Unauthenticated(f"client certificate refused: {exc}", step="certificate") from exc


def participant_admitted(node: Node, x: Exchange) -> None:
    """The certificate's OIN is an active participant (not suspended, not withdrawn), and the certificate is
    one it registered."""
    assert x.register is not None and x.peer is not None
    participant = x.register.participant(x.peer.oin)
    if participant is None:
        raise Forbidden(f"OIN {x.peer.oin} is not a participant in the register", step="participant")
    refusal = participant.refusal(x.now)
    if refusal:
        raise Forbidden(refusal, step="participant")
    if x.peer.thumbprint not in participant.certificates:
        raise Forbidden(f"this certificate is not registered for participant {participant.oin}", step="participant")
    x.participant = participant
