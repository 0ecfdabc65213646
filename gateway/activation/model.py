"""Activation: a school's decision that a data service may run between it and one counterparty.

Edu-V records it at the source side; each node holds the activations for the exchanges it takes part in, keyed
by (school, data service, counterparty OIN). An activation is requested (by the counterparty, or the school's
application administrator), confirmed by the school, and ends at its end date or when the school revokes it.
For class IV data it must name the processing agreement (verwerkersovereenkomst) between the school and the
receiving participant, in force at the moment of the exchange.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trust.oin import parse_oin
from trust.register import aware_utc

ORG_MASTER_ID = r"^[0-9A-Za-z]{2,16}$"  # RIO OnderwijsaanbiederId, e.g. 104A158


class ActivationStatus(StrEnum):
    REQUESTED = "requested"  # asked for, not yet confirmed by the school
    ACTIVE = "active"  # confirmed (in force between valid_from and valid_until)
    REVOKED = "revoked"  # withdrawn by the school: refused from that moment on


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProcessingAgreement(_Model):
    """The verwerkersovereenkomst between the school and the receiving participant."""

    reference: str = Field(min_length=1, max_length=200)
    valid_from: datetime
    valid_until: datetime | None = None

    _aware_times = field_validator("valid_from", "valid_until")(aware_utc)

    def in_force(self, now: datetime) -> bool:
        return self.valid_from <= now and (self.valid_until is None or now < self.valid_until)


class Activation(_Model):
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    school: str = Field(pattern=ORG_MASTER_ID)  # organisationMasterIdentifier
    data_service: str = Field(min_length=1)
    counterparty: str  # the OIN of the other participant
    purposes: tuple[str, ...] = Field(min_length=1)  # covenant art. 5.2 codes the school allows
    status: ActivationStatus = ActivationStatus.REQUESTED
    valid_from: datetime
    valid_until: datetime | None = None
    processing_agreement: ProcessingAgreement | None = None
    requested_at: datetime
    updated_at: datetime
    revoked_at: datetime | None = None
    revoked_reason: str | None = None

    _oin = field_validator("counterparty")(parse_oin)
    _aware_times = field_validator("valid_from", "valid_until", "requested_at", "updated_at", "revoked_at")(aware_utc)

    @model_validator(mode="after")
    def _period(self) -> Activation:
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self

    def state(self, now: datetime) -> str:
        """The status as a reader sees it now: requested, pending (not yet started), active, ended, revoked."""
        if self.status is ActivationStatus.ACTIVE:
            if now < self.valid_from:
                return "pending"
            if self.valid_until is not None and now >= self.valid_until:
                return "ended"
        return self.status.value

    def refusal(self, now: datetime, *, data_class: str) -> str | None:
        """Why this activation does not admit an exchange now, or None if it does."""
        state = self.state(now)
        if state == "active" and data_class != "IV":  # the common answer, before any text is made
            return None
        what = f"data service {self.data_service!r} between school {self.school} and {self.counterparty}"
        if state == "revoked":
            return f"the school revoked the activation of {what} at {_rfc3339(self.revoked_at)}"
        if state == "requested":
            return f"the activation of {what} was requested but the school has not confirmed it"
        if state == "pending":
            return f"the activation of {what} starts at {_rfc3339(self.valid_from)}"
        if state == "ended":
            return f"the activation of {what} ended at {_rfc3339(self.valid_until)}"
        if data_class == "IV":
            agreement = self.processing_agreement
            if agreement is None:
                return f"class IV data: the activation of {what} names no processing agreement (verwerkersovereenkomst)"
            if not agreement.in_force(now):
                return (
                    f"class IV data: processing agreement {agreement.reference!r} is not in force "
                    f"({_rfc3339(agreement.valid_from)} to {_rfc3339(agreement.valid_until)})"
                )
        return None


def decide(activations: Iterable[Activation], now: datetime, *, data_class: str) -> tuple[Activation | None, str]:
    """The activation that admits an exchange now, or (None, why not). With several, any one in force admits;
    otherwise the reason given is that of the most recently changed one."""
    latest: Activation | None = None
    for activation in activations:
        if activation.refusal(now, data_class=data_class) is None:
            return activation, ""
        if latest is None or activation.updated_at > latest.updated_at:
            latest = activation
    if latest is None:
        return None, "no activation"
    reason = latest.refusal(now, data_class=data_class)
    assert reason is not None
    return None, reason


def _rfc3339(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else "(open)"
