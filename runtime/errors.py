"""The exceptions adapters raise and the HTTP boundary renders as problem+json.

Code below the boundary raises these (never an HTTP framework's exception); one handler
in :mod:`runtime.http` turns each into the single error shape of both APIs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
