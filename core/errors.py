"""Domain errors: what went wrong, named by a stable `code`, with no HTTP status.

Services raise these; the API alone decides how each kind reads on the wire (api/errors.py),
so the same service can serve a router, a worker or a script.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A request the domain refuses. `details` travel with the error to the client."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


class Missing(DomainError):
    """A required input is absent or empty."""


class Invalid(DomainError):
    """An input is present but unusable."""


class TooLarge(DomainError):
    """An input is larger than this service takes (an upload, a material sheet)."""


class NotFound(DomainError):
    """No such thing, or none this caller may see."""


class Forbidden(DomainError):
    """The thing exists and is visible, but this change to it is not allowed (e.g. read-only)."""


class Conflict(DomainError):
    """The thing is not in a state that allows this yet (e.g. an avatar still preparing)."""


class Failed(DomainError):
    """The work behind the request failed (e.g. a render whose job failed)."""


class Unavailable(DomainError):
    """Something the request needs is not configured here (e.g. no LLM for generated questions)."""


class UpstreamFailed(DomainError):
    """A service outside this one, which the request needs, did not answer usably."""


class NotReady(DomainError):
    """What the request waits for is still being made after the wait allowed."""
