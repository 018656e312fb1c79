"""Settings: ``CARRIERWATCH_*`` environment variables (and an optional ``carrierwatch.env`` file).

Secrets are :class:`~pydantic.SecretStr` and never printed.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from carrierwatch.core.limits import (
    DEFAULT_EARLIEST_EVENT_TIME,
    DEFAULT_MAX_FUTURE_SKEW_DAYS,
    EventLimits,
)

__all__ = ["Settings", "default_data_dir", "find_project_root", "get_settings"]


def find_project_root() -> Path:
    """The folder holding ``codebooks/``, ``partners/`` and ``schemas/``.

    ``CARRIERWATCH_HOME`` wins; otherwise the source checkout this package runs from; otherwise the
    current directory.
    """
    import os

    home = os.environ.get("CARRIERWATCH_HOME")
    if home:
        return Path(home).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "codebooks").is_dir() and (parent / "schemas").is_dir():
            return parent
    return Path.cwd()


def default_data_dir() -> Path:
    """The per-user data directory: the platform's (``~/.local/share/carrierwatch`` on Linux,
    ``$XDG_DATA_HOME/carrierwatch`` where that is set), through platformdirs."""
    import platformdirs

    return Path(platformdirs.user_data_dir("carrierwatch", appauthor=False))


class Settings(BaseSettings):
    """Runtime configuration."""

    model_config = SettingsConfigDict(env_prefix="CARRIERWATCH_", env_file="carrierwatch.env",
                                      extra="ignore")

    home: Path = Field(default_factory=find_project_root)
    #: the store and local state (``CARRIERWATCH_DATA_DIR`` or ``--data-dir`` override it)
    data_dir: Path = Field(default_factory=default_data_dir)
    schema_registry_url: str | None = None
    schema_registry_basic_auth: SecretStr | None = None
    clickhouse_url: str | None = None
    kafka_bootstrap: str = "127.0.0.1:9092"
    require_all: bool = False
    # The plausible range of a delivery event's times (event, promise, ETA): a time before
    # ``earliest_event_time`` or more than ``max_future_skew_days`` after the payload's received
    # time is a dead letter (carrierwatch.core.limits). A naive datetime is read as UTC.
    earliest_event_time: datetime = DEFAULT_EARLIEST_EVENT_TIME
    max_future_skew_days: float = Field(default=DEFAULT_MAX_FUTURE_SKEW_DAYS, ge=0, le=100_000)

    @property
    def event_limits(self) -> EventLimits:
        """The transformers' time limits from :attr:`earliest_event_time` and
        :attr:`max_future_skew_days`."""
        return EventLimits.from_settings(self.earliest_event_time, self.max_future_skew_days)

    @property
    def partners_dir(self) -> Path:
        return self.home / "partners"

    @property
    def codebooks_dir(self) -> Path:
        return self.home / "codebooks"

    @property
    def schemas_dir(self) -> Path:
        return self.home / "schemas"

    @property
    def samples_dir(self) -> Path:
        return self.home / "samples"

    @property
    def demo_data_dir(self) -> Path:
        """Where ``carrierwatch demo`` keeps its simulation and store, apart from the user's."""
        return Path(self.data_dir).expanduser() / "demo"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
