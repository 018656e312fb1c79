"""The one exception hierarchy of carrierwatch.

Partner problems (a bad payload, an unknown code) are *data*: they become dead-letter records and
codebook-gap counts, never exceptions. Exceptions are for infrastructure faults and configuration
errors, and they carry what the caller needs to react, including the command line's exit code
(``exit_code``): the ``carrierwatch`` command prints ``carrierwatch: error: <message>`` and exits
with it.

Exit codes of every ``carrierwatch`` command (each command's help adds its own: ``normalize``
and ``replay`` exit 3 when they completed with dead letters, ``replay`` 4 when too many events
came too late, ``kafka status`` 1 when the broker does not answer and 3 when it is stopped):

====  =========================================================================================
0     success
1     error: the command could not do its job (invalid configuration or codebook, a partner
      that failed to load, unreadable input, an output that cannot be written)
2     usage error: unknown option or partner, bad option value, missing file
69    unavailable: a component the command needs did not answer or is busy (the Kafka broker,
      the schema registry, a ClickHouse server, an embedded store owned by another process);
      trying again later may help
70    internal error: a bug in carrierwatch (one line, the traceback saved to a file;
      ``CARRIERWATCH_DEBUG=1`` prints it)
130   interrupted (Ctrl-C)
====  =========================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carrierwatch.core.codebook import CodebookProblem

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "BrokerUnavailableError",
    "CarrierwatchError",
    "CodebookError",
    "ConfigurationError",
    "PartnerLoadError",
    "StorageError",
    "StoreBusyError",
    "UnavailableError",
    "UnknownPartnerError",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE
EXIT_INTERRUPTED = 130


class CarrierwatchError(Exception):
    """Root of every exception carrierwatch raises on purpose."""

    exit_code: int = EXIT_ERROR


class UnavailableError(CarrierwatchError):
    """A component the caller needs (broker, registry, store) does not answer or is busy."""

    exit_code = EXIT_UNAVAILABLE


class BrokerUnavailableError(UnavailableError):
    """No Kafka broker answers at ``bootstrap``; the message says how to start one."""

    def __init__(self, bootstrap: str, reason: str) -> None:
        self.bootstrap = bootstrap
        self.reason = reason
        super().__init__(
            f"no Kafka broker answers at {bootstrap} ({reason}); start the development broker "
            f"with `carrierwatch kafka start` or point CARRIERWATCH_KAFKA_BOOTSTRAP at yours")


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

    exit_code = EXIT_USAGE

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
        if retry_after is not None:  # transient: the store is unavailable for now
            self.exit_code = EXIT_UNAVAILABLE
        super().__init__(message)


class StoreBusyError(StorageError, UnavailableError):
    """The embedded store's data path is owned by another process."""

    exit_code = EXIT_UNAVAILABLE
