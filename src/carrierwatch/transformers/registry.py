"""The partner registry: one entry per partner id, loaded from ``partners/`` and ``codebooks/``.

A partner = metadata (``partners/<id>.yaml``) + a pure transformer (the module named by its
``transformer`` key, exposing ``transform(raw, ctx)``) + a codebook (``codebooks/<id>.yaml``).
Duplicate ids are an error; a partner that fails to load is reported with its traceback in
:attr:`PartnerRegistry.failures` (the test suite asserts there are none) and with a message for
users, ``file:line: problem`` where the file is known, in :attr:`PartnerRegistry.errors`.
:meth:`PartnerRegistry.require` turns those into a :class:`PartnerLoadError` for the partners a
command needs: a command that needs every partner (``replay``, ``demo``, ``worker``) stops when
any failed; one that needs a single partner (``normalize --partner X``) stops only if X failed.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from carrierwatch.core.codebook import Codebook, load_codebook
from carrierwatch.core.errors import (
    CarrierwatchError,
    CodebookError,
    ConfigurationError,
    PartnerLoadError,
    UnknownPartnerError,
)
from carrierwatch.core.limits import EventLimits
from carrierwatch.core.partner import PartnerSpec
from carrierwatch.transformers.base import (
    TransformContext,
    Transformer,
    TransformResult,
    run_transform,
)

__all__ = ["Partner", "PartnerRegistry", "load_error_message", "load_registry"]


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
    errors: dict[str, str] = field(default_factory=dict)

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

    def require(self, partner_ids: Iterable[str] | None = None) -> None:
        """Raise :class:`PartnerLoadError` if any of ``partner_ids`` (all when None) failed to
        load, naming each with its ``file:line: problem`` message."""
        failed = sorted(self.failures) if partner_ids is None \
            else sorted(set(partner_ids) & set(self.failures))
        if not failed:
            return
        lines = [f"partner {pid!r} failed to load: "
                 f"{self.errors.get(pid, 'see the traceback')}" for pid in failed]
        if len(lines) == 1:
            raise PartnerLoadError(lines[0])
        raise PartnerLoadError(f"{len(lines)} partners failed to load:\n"
                               + "\n".join(f"  {line}" for line in lines))

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
    if not (home / "partners").is_dir():
        raise ConfigurationError(
            f"no partners/ folder in {home}: set CARRIERWATCH_HOME to the folder that holds "
            f"partners/, codebooks/ and schemas/")
    registry = PartnerRegistry()
    for spec_path in sorted((home / "partners").glob("*.yaml")):
        try:
            partner = load_partner(spec_path, home / "codebooks", limits)
            registry.add(partner)
        except Exception as exc:
            registry.failures[spec_path.stem] = traceback.format_exc()
            registry.errors[spec_path.stem] = load_error_message(exc, spec_path)
    return registry


def load_error_message(exc: BaseException, spec_path: Path) -> str:
    """What a user needs to fix a partner that failed to load: ``file:line: problem``.

    >>> load_error_message(ValueError("boom"), Path("partners/acme.yaml"))
    'partners/acme.yaml: ValueError: boom'
    """
    if isinstance(exc, CodebookError):
        return "; ".join(str(problem) for problem in exc.problems) or str(exc)
    if isinstance(exc, CarrierwatchError):
        return str(exc)
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f"{spec_path}:{exc.problem_mark.line + 1}: invalid YAML: {exc.problem}"
    if isinstance(exc, ValidationError):
        details = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors())
        return f"{spec_path}: {details}"
    if isinstance(exc, OSError):
        return f"{exc.filename or spec_path}: {exc.strerror or exc}"
    if isinstance(exc, UnicodeDecodeError):
        return f"{spec_path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, ImportError):
        return f"{spec_path}: transformer module cannot be imported: {exc}"
    return f"{spec_path}: {type(exc).__name__}: {exc}"
