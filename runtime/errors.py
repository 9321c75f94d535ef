"""The exceptions adapters raise and the HTTP boundary renders as problem+json.

Code below the boundary raises these (never an HTTP framework's exception); one handler
in :mod:`runtime.problems` turns each into the single error shape of both APIs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid input: which field, where it came from, and what is wrong with it."""

    field: str
    message: str
    location: str = "body"
    code: str = "invalid"


@dataclass
class ProblemError(Exception):
    """An error that becomes an RFC 9457 problem response."""

    status: int
    title: str
    detail: str
    slug: str
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    #: Extension members of the problem body (RFC 9457 §3.2), e.g. ``outcome``.
    extensions: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.title}: {self.detail}"


class ValidationProblem(ProblemError):
    """The request is well-formed HTTP but its content breaks a rule (422)."""

    def __init__(self, detail: str, errors: list[FieldError]) -> None:
        super().__init__(422, "Validation failed", detail, "validation-error", errors)


class DependencyUnavailable(ProblemError):
    """A server this process depends on does not answer (503, retry later)."""

    def __init__(self, dependency: str, retry_after_s: int = 1) -> None:
        super().__init__(
            503,
            "Service unavailable",
            f"{dependency} is not answering; retry later",
            "dependency-unavailable",
            headers={"Retry-After": str(retry_after_s)},
        )
        self.dependency = dependency


class Outcome(StrEnum):
    """What a client may assume about its write when the database failed it (503)."""

    #: Nothing was stored: retrying cannot create a second application.
    NOT_STORED = "not_stored"
    #: The commit was sent and no answer came: the write may exist once the database is
    #: back. Retrying is safe only with the same Idempotency-Key.
    UNKNOWN = "unknown"


_OUTCOME_DETAIL = {
    Outcome.NOT_STORED: "the database is not answering; the application was not stored"
    " (retry later)",
    Outcome.UNKNOWN: "the database stopped answering after the application was sent;"
    " outcome unknown: it may be stored once the database is back. Retry with the same"
    " Idempotency-Key (a retry without one may create a second application)",
}


class WriteFailed(DependencyUnavailable):
    """The database failed a write (503), saying whether it may have been stored.

    The body carries ``outcome`` (:class:`Outcome`) so that a client knows whether a
    retry is safe without an Idempotency-Key.
    """

    def __init__(self, outcome: Outcome, retry_after_s: int = 1) -> None:
        super().__init__("database", retry_after_s)
        self.detail = _OUTCOME_DETAIL[outcome]
        self.extensions = {"outcome": outcome.value}
        self.outcome = outcome


class NotFound(ProblemError):
    """The resource does not exist (404)."""

    def __init__(self, detail: str) -> None:
        super().__init__(404, "Not found", detail, "not-found")


class Conflict(ProblemError):
    """The request conflicts with one still being processed (409)."""

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(
            409, "Conflict", detail, "conflict", headers={"Retry-After": str(retry_after_s)}
        )


class Unauthenticated(ProblemError):
    """No valid bearer token (401, RFC 6750 §3).

    ``invalid_token`` is set when a token was presented and refused; the body says no
    more than that (which check failed is for the log, never for the caller).
    """

    def __init__(self, invalid_token: bool) -> None:
        challenge = 'Bearer realm="prequal"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        super().__init__(
            401,
            "Unauthorized",
            (
                "A valid bearer token is required."
                if not invalid_token
                else "The bearer token is not valid."
            ),
            "unauthorized",
            headers={"WWW-Authenticate": challenge},
        )


class Forbidden(ProblemError):
    """The token is valid but lacks the scope the operation needs (403, RFC 6750 §3.1)."""

    def __init__(self, scope: str) -> None:
        super().__init__(
            403,
            "Forbidden",
            f"The token lacks the scope {scope}.",
            "forbidden",
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="prequal", error="insufficient_scope", scope="{scope}"'
                )
            },
        )


class TooManyRequests(ProblemError):
    """The client is over its rate (429, RFC 6585 §4); retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: int, headers: dict[str, str]) -> None:
        super().__init__(
            429,
            "Too many requests",
            f"This client is over its rate; retry after {retry_after_s} s.",
            "too-many-requests",
            headers={"Retry-After": str(retry_after_s), **headers},
        )
