"""The partner registry: one entry per partner id, loaded from ``partners/`` and ``codebooks/``.

A partner = metadata (``partners/<id>.yaml``) + a pure transformer (the module named by its
``transformer`` key, exposing ``transform(raw, ctx)``) + a codebook (``codebooks/<id>.yaml``).
Duplicate ids are an error; a partner that fails to load is reported with its traceback in
:attr:`PartnerRegistry.failures` (the test suite asserts there are none).
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from carrierwatch.core.codebook import Codebook, load_codebook
from carrierwatch.core.errors import PartnerLoadError, UnknownPartnerError
from carrierwatch.core.limits import EventLimits
from carrierwatch.core.partner import PartnerSpec
from carrierwatch.transformers.base import (
    TransformContext,
    Transformer,
    TransformResult,
    run_transform,
)

__all__ = ["Partner", "PartnerRegistry", "load_registry"]


@dataclass(frozen=True)
class Partner:
    """A loaded partner: metadata, codebook and transformer."""

    spec: PartnerSpec
    codebook: Codebook
    transformer: Transformer
    spec_path: Path
    limits: EventLimits = field(default_factory=EventLimits)

    @property
    def id(self) -> str:
        return self.spec.id

    def context(self, received_time: int, headers: Mapping[str, str] | None = None
                ) -> TransformContext:
        return TransformContext(self.spec, self.codebook, received_time, headers or {},
                                self.limits)

    def transform(self, raw: bytes, received_time: int,
                  headers: Mapping[str, str] | None = None) -> TransformResult:
        """Normalize one payload; never raises for partner input."""
        return run_transform(self.transformer, raw, self.context(received_time, headers))


@dataclass
class PartnerRegistry:
    partners: dict[str, Partner] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Partner]:
        return iter(self.partners[k] for k in sorted(self.partners))

    def __len__(self) -> int:
        return len(self.partners)

    def __contains__(self, partner_id: object) -> bool:
        return partner_id in self.partners

    def ids(self) -> list[str]:
        return sorted(self.partners)

    def get(self, partner_id: str) -> Partner:
        try:
            return self.partners[partner_id]
        except KeyError:
            raise UnknownPartnerError(partner_id, self.ids()) from None

    def add(self, partner: Partner) -> None:
        if partner.id in self.partners:
            raise PartnerLoadError(
                f"duplicate partner id {partner.id!r} in {partner.spec_path} and "
                f"{self.partners[partner.id].spec_path}")
        self.partners[partner.id] = partner


def load_partner(spec_path: Path, codebooks_dir: Path, limits: EventLimits | None = None
                 ) -> Partner:
    """Load one partner from its metadata file; raise on any problem."""
    data = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise PartnerLoadError(f"{spec_path}: expected a mapping")
    spec = PartnerSpec.model_validate(data)
    if spec.id != spec_path.stem:
        raise PartnerLoadError(f"{spec_path}: id {spec.id!r} does not match the file name")
    codebook = load_codebook(codebooks_dir / f"{spec.id}.yaml", partner=spec.id)
    module_name = spec.transformer
    if "." not in module_name:
        module_name = f"carrierwatch.transformers.{module_name}"
    module = importlib.import_module(module_name)
    transform = getattr(module, "transform", None)
    if not callable(transform):
        raise PartnerLoadError(f"{module_name} has no transform(raw, ctx) function")
    checker = getattr(module, "check_spec", None)
    if callable(checker):
        checker(spec)
    return Partner(spec=spec, codebook=codebook, transformer=transform, spec_path=spec_path,
                   limits=limits or EventLimits())


def load_registry(home: Path | None = None, limits: EventLimits | None = None
                  ) -> PartnerRegistry:
    """Load every partner under ``home`` (the project root by default).

    ``limits``: the plausible range of event times its transformers accept (default: the
    settings', ``CARRIERWATCH_EARLIEST_EVENT_TIME`` and ``CARRIERWATCH_MAX_FUTURE_SKEW_DAYS``).
    """
    if home is None or limits is None:
        from carrierwatch.settings import get_settings

        home = home or get_settings().home
        limits = limits or get_settings().event_limits
    registry = PartnerRegistry()
    for spec_path in sorted((home / "partners").glob("*.yaml")):
        try:
            partner = load_partner(spec_path, home / "codebooks", limits)
            registry.add(partner)
        except Exception:
            registry.failures[spec_path.stem] = traceback.format_exc()
    return registry
