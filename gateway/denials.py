"""Typed denials: every refusal on the request path is one of these, carrying its Edu-V status code.

A check raises a denial; the pipeline turns it into the Edu-V error body, a log record and a metric.
The `step` names which check refused, so that a school reading its log sees where an exchange stopped.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Denial(Exception):
    """A refused exchange. Subclasses fix the HTTP status and the Edu-V status code."""

    http_status: ClassVar[int] = 400
    edu_status: ClassVar[str] = "0099"

    def __init__(self, message: str, *, step: str = "", www_authenticate: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.step = step
        self.www_authenticate = www_authenticate

    def body(self) -> dict[str, Any]:
        """The Edu-V error body."""
        return {"status": self.edu_status, "statusMessage": self.message}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(step={self.step!r}, message={self.message!r})"


class SchemaIncorrect(Denial):
    """0011: the request does not match the data service's schema (malformed JSON, ECK iD, field)."""

    http_status = 400
    edu_status = "0011"


class SchemaVersionUnsupported(Denial):
    http_status = 400
    edu_status = "0012"


class ScopeRequired(Denial):
    """0021: the access token lacks the scope of the data service."""

    http_status = 401
    edu_status = "0021"


class ConsentRequired(Denial):
    """0022: the school has not activated this data service for this counterparty (or not for this purpose)."""

    http_status = 403
    edu_status = "0022"


class EduOrgUnknown(Denial):
    """0023: the school reference is missing or unknown."""

    http_status = 400
    edu_status = "0023"


class Unauthenticated(Denial):
    """No, or no acceptable, client certificate or access token."""

    http_status = 401


class Forbidden(Denial):
    """Authenticated, but not admitted: participant status, keurmerk, role, purpose."""

    http_status = 403


class NotFound(Denial):
    http_status = 404


class MethodNotAllowed(Denial):
    http_status = 405


class PayloadTooLarge(Denial):
    http_status = 413


class TooMuchAsked(Denial):
    """More than one answer carries (an export of more records than `[log] max_export_records`): ask for less."""

    http_status = 400
    edu_status = "0099"


class RequestTimeout(Denial):
    """0099: the request body stopped arriving (`limits.body_timeout`); the connection is closed after the answer."""

    http_status = 408


class AmbiguousRequest(Denial):
    """0099: a request head or body that does not say one thing: a singleton field repeated, no Host on HTTP/1.1,
    a body cut off before its declared end."""

    http_status = 400
    edu_status = "0099"


class ExpectationFailed(Denial):
    """0099: an `Expect` other than 100-continue, which is all this node meets (RFC 9110 §10.1.1)."""

    http_status = 417
    edu_status = "0099"


class HeadersTooLarge(Denial):
    http_status = 431


class TooManyRequests(Denial):
    http_status = 429


class LogUnavailable(Denial):
    """The exchange record could not be made durable, so the exchange is refused (never forwarded unlogged)."""

    http_status = 500


class NodeFailed(Denial):
    """The node itself failed while handling the request (its fault, not the request's)."""

    http_status = 500


class UpstreamUnavailable(Denial):
    http_status = 502


class ServiceUnavailable(Denial):
    """The node cannot decide safely (register too old, not yet loaded): it fails closed."""

    http_status = 503


class UpstreamTimeout(Denial):
    http_status = 504


# The reasons of the refusals both HTTP servers of the node make before any check (step "http").
UNPARSEABLE = "the request could not be parsed as HTTP/1.1"
NODE_FAILED = "the node failed to handle the request"


def with_detail(reason: str, detail: str | None) -> str:
    """`reason`, followed by the first line of a parser's `detail` (at most 200 characters) when there is one."""
    return f"{reason}: {detail.splitlines()[0][:200]}" if detail else reason


def bearer_challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    """An RFC 6750 `WWW-Authenticate` value. Quotes are stripped from the description to keep it one token."""
    parts = ['Bearer realm="edugate"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="{}"'.format(description.replace('"', "'")))
    if scope:
        parts.append(f'scope="{scope}"')
    return ", ".join(parts)
