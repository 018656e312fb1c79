"""Webhook secrets: environment, secrets file, rotation; never printed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from carrierwatch.core.errors import ConfigurationError
from carrierwatch.ingest.secrets import load_secrets

PARTNERS = ["easypost", "aftership", "metro_courier"]


def _values(found: dict[str, tuple[object, ...]]) -> dict[str, list[str]]:
    return {p: [s.get_secret_value() for s in secrets]  # type: ignore[attr-defined]
            for p, secrets in found.items()}


def test_environment_with_rotation() -> None:
    found = load_secrets(PARTNERS, environ={
        "CARRIERWATCH_SECRET_EASYPOST": "ep-new", "CARRIERWATCH_SECRET_EASYPOST_PREVIOUS": "ep-old",
        "CARRIERWATCH_SECRET_METRO_COURIER": "mc", "CARRIERWATCH_SECRET_UPS": "not-a-webhook"})
    assert _values(found) == {"easypost": ["ep-new", "ep-old"], "metro_courier": ["mc"]}
    assert "ep-new" not in repr(found) and "ep-new" not in str(found)


def test_file_and_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text("easypost: from-file\naftership: [as-new, as-old]\n")
    path.chmod(0o600)
    found = load_secrets(PARTNERS, environ={"CARRIERWATCH_SECRET_EASYPOST": "from-env"},
                         secrets_file=path)
    assert _values(found) == {"easypost": ["from-env"], "aftership": ["as-new", "as-old"]}


@pytest.mark.parametrize(("text", "fragment"), [
    ("easypost: [a, b, c]\n", "1 or 2 allowed"),
    ("ups: secret-value-xyz\n", "not webhook partners here: ups"),
    ("- just\n- a list\n", "must map partner ids"),
    ("easypost: ''\n", "empty secret"),
    ("easypost: {nested: secret-value-xyz}\n", "must map partner ids"),
])
def test_bad_files_say_what_is_wrong_without_the_secret(tmp_path: Path, text: str,
                                                       fragment: str) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(ConfigurationError) as caught:
        load_secrets(PARTNERS, environ={}, secrets_file=path)
    assert fragment in str(caught.value)
    assert "secret-value-xyz" not in str(caught.value)


def test_missing_file_and_loose_permissions(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the secrets file"):
        load_secrets(PARTNERS, environ={}, secrets_file=tmp_path / "absent.yaml")
    path = tmp_path / "open.yaml"
    path.write_text("easypost: s\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert _values(load_secrets(PARTNERS, environ={}, secrets_file=path)) == \
            {"easypost": ["s"]}
    assert "readable by group or others" in caplog.text
