"""The one exception hierarchy of carrierwatch.

Partner problems (a bad payload, an unknown code) are *data*: they become dead-letter records and
codebook-gap counts, never exceptions. Exceptions are for infrastructure faults and configuration
errors, and they carry what the caller needs to react.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carrierwatch.core.codebook import CodebookProblem

__all__ = [
    "CarrierwatchError",
    "CodebookError",
    "ConfigurationError",
    "PartnerLoadError",
    "StorageError",
    "StoreBusyError",
    "UnknownPartnerError",
]


class CarrierwatchError(Exception):
    """Root of every exception carrierwatch raises on purpose."""


class ConfigurationError(CarrierwatchError):
    """Settings or configuration files are wrong."""


class CodebookError(ConfigurationError):
    """A codebook failed validation; ``problems`` locate every error by file and line."""

    def __init__(self, source: str, problems: Sequence[CodebookProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems) or "  (no detail)"
        super().__init__(f"invalid codebook {source}:\n{lines}")


class UnknownPartnerError(CarrierwatchError):
    """No partner is registered under this id."""

    def __init__(self, partner_id: str, known: Sequence[str]) -> None:
        self.partner_id = partner_id
        self.known = list(known)
        super().__init__(f"unknown partner {partner_id!r}; known partners: {', '.join(known)}")


class PartnerLoadError(ConfigurationError):
    """A partner's metadata, codebook or transformer failed to load."""


class StorageError(CarrierwatchError):
    """The store failed; ``retry_after`` (seconds) says when trying again makes sense."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class StoreBusyError(StorageError):
    """The embedded store's data path is owned by another process."""
