"""Webhook secrets of the ingest gateway: from the environment or a secrets file, never the repo.

Each partner has one or two active secrets (two during a key rotation: the partner may sign with
either). Sources, the environment winning over the file for a partner:

* ``CARRIERWATCH_SECRET_<ID>`` (``<ID>`` = the partner id upper-cased, e.g.
  ``CARRIERWATCH_SECRET_EASYPOST``) and, during a rotation, ``CARRIERWATCH_SECRET_<ID>_PREVIOUS``;
* a YAML secrets file (``CARRIERWATCH_GATEWAY_SECRETS_FILE``): ``partner: secret`` or
  ``partner: [current, previous]``. A file readable by group or others is reported with a warning.

Secrets are held as :class:`~pydantic.SecretStr` (their ``repr`` and ``str`` print ``**********``)
and unwrapped only where a digest is computed.

Examples
--------
>>> found = load_secrets(["easypost", "shippo"], environ={
...     "CARRIERWATCH_SECRET_EASYPOST": "new", "CARRIERWATCH_SECRET_EASYPOST_PREVIOUS": "old"})
>>> found
{'easypost': (SecretStr('**********'), SecretStr('**********'))}
>>> [s.get_secret_value() for s in found["easypost"]]
['new', 'old']
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml
from pydantic import SecretStr, TypeAdapter, ValidationError

from carrierwatch.core.errors import ConfigurationError

__all__ = ["ENV_PREFIX", "MAX_ACTIVE_SECRETS", "PartnerSecrets", "env_name", "load_secrets"]

log = logging.getLogger(__name__)

ENV_PREFIX = "CARRIERWATCH_SECRET_"
#: a key rotation keeps the new and the previous secret active
MAX_ACTIVE_SECRETS = 2

#: partner id -> its active secrets, the current one first
PartnerSecrets = dict[str, tuple[SecretStr, ...]]

_FILE_SHAPE: TypeAdapter[dict[str, SecretStr | list[SecretStr]]] = TypeAdapter(
    dict[str, SecretStr | list[SecretStr]])


def env_name(partner_id: str, *, previous: bool = False) -> str:
    """The environment variable holding a partner's secret.

    >>> env_name("metro_courier"), env_name("fedex", previous=True)
    ('CARRIERWATCH_SECRET_METRO_COURIER', 'CARRIERWATCH_SECRET_FEDEX_PREVIOUS')
    """
    return f"{ENV_PREFIX}{partner_id.upper()}{'_PREVIOUS' if previous else ''}"


def _from_file(path: Path) -> dict[str, tuple[SecretStr, ...]]:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the secrets file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigurationError(f"the secrets file {path} is not UTF-8 text (a binary file?)"
                                 ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secrets file %s is readable by group or others (chmod 600 it)", path)
    try:
        data = yaml.safe_load(text) or {}
        parsed = _FILE_SHAPE.validate_python(data)
    except (yaml.YAMLError, ValidationError) as exc:
        # the message names the file and the shape, never a value
        raise ConfigurationError(
            f"secrets file {path} must map partner ids to a secret or a list of at most "
            f"{MAX_ACTIVE_SECRETS} secrets ({type(exc).__name__})") from None
    out: dict[str, tuple[SecretStr, ...]] = {}
    for partner, value in parsed.items():
        secrets = tuple(value) if isinstance(value, list) else (value,)
        if not 1 <= len(secrets) <= MAX_ACTIVE_SECRETS:
            raise ConfigurationError(f"secrets file {path}: partner {partner!r} has "
                                     f"{len(secrets)} secrets; 1 or {MAX_ACTIVE_SECRETS} allowed")
        out[partner] = secrets
    return out


def load_secrets(partner_ids: Iterable[str], *, environ: Mapping[str, str] | None = None,
                 secrets_file: Path | None = None) -> PartnerSecrets:
    """The active secrets of each partner in ``partner_ids`` that has any.

    Raises
    ------
    ConfigurationError
        The secrets file is unreadable or malformed, names an unknown partner, or a secret is
        empty (the message never contains a secret).
    """
    environ = os.environ if environ is None else environ
    wanted = list(partner_ids)
    found: PartnerSecrets = {}
    if secrets_file is not None:
        from_file = _from_file(Path(secrets_file).expanduser())
        unknown = sorted(set(from_file) - set(wanted))
        if unknown:
            raise ConfigurationError(f"secrets file {secrets_file} names partners that are not "
                                     f"webhook partners here: {', '.join(unknown)}")
        found.update(from_file)
    for partner in wanted:
        current = environ.get(env_name(partner))
        if current is None:
            continue
        active = [SecretStr(current)]
        previous = environ.get(env_name(partner, previous=True))
        if previous:
            active.append(SecretStr(previous))
        found[partner] = tuple(active)
    for partner, secrets in found.items():
        if any(not secret.get_secret_value() for secret in secrets):
            raise ConfigurationError(f"partner {partner!r} has an empty secret")
    return found
