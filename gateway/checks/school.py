"""Which school the exchange is about: the school reference at the data service's request locations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.activation.store import VersionRead
from gateway.checks.payload import reference_values
from gateway.denials import EduOrgUnknown
from gateway.exchange import Exchange

if TYPE_CHECKING:
    from gateway.node import Node


async def school(node: Node, x: Exchange) -> None:
    """One `organisationMasterIdentifier`, found where the catalogue says, of a school known to this node (one
    with any activation here); otherwise 400 0023."""
    assert x.service is not None
    found: set[str] = set()
    for location in x.service.school.request:
        for value in await reference_values(node, x, location, step="school"):
            if not isinstance(value, str) or not value.strip():
                raise EduOrgUnknown(f"the school reference at {location} is not a non-empty string", step="school")
            found.add(value.strip())
    if not found:
        where = ", ".join(x.service.school.request) or "(the data service names no location)"
        raise EduOrgUnknown(f"the exchange names no school (looked at {where})", step="school")
    if len(found) > 1:
        raise EduOrgUnknown("the exchange names more than one school; an exchange is about one school", step="school")
    reference = found.pop()
    x.activations_read = VersionRead()  # read by this first lookup, used by the activation and purpose checks
    if not await node.activations.is_known_school(reference, read=x.activations_read):
        raise EduOrgUnknown(f"school {reference!r} is not known to this node", step="school")
    x.school = reference
