"""Webhook verification: each partner's declared ``auth.scheme`` (no I/O, no HTTP server).

:class:`Verifier` holds every served partner's :class:`~carrierwatch.core.partner.AuthSpec` and
active secrets (one, or two during a key rotation) and answers, for one request, a
:class:`Verdict`: verified, or refused with an HTTP status and a stable ``code``:

=======  ============================  =====================================================
status   code                          when
=======  ============================  =====================================================
401      ``missing_credentials``       no signature / token where the scheme expects one
401      ``bad_signature``             a signature or token that none of the partner's
                                       secrets produces
403      ``wrong_partner``             valid for *another* partner (that partner's header
                                       and secret, or this scheme keyed with its secret)
400      ``malformed_auth_header``     a signature header that cannot be parsed (not hex,
                                       not base64, incomplete Standard Webhooks headers)
408      ``stale_timestamp``           Standard Webhooks: ``webhook-timestamp`` farther
                                       from now than the partner's tolerance
=======  ============================  =====================================================

The signature is checked before the timestamp, so a caller without a secret only ever learns
401/400. Every comparison is constant-time (:func:`hmac.compare_digest`), against each active
secret. The replay check of ``webhook-id`` is the gateway's (it needs the persisted cache).

Standard Webhooks signatures are computed by the ``standardwebhooks`` package
(:meth:`standardwebhooks.Webhook.sign`); its ``verify`` is not used because its timestamp
tolerance is fixed at five minutes and its one exception type does not tell a stale timestamp
(408) from a wrong signature (401).

Examples
--------
>>> import hashlib, hmac as _hmac
>>> from pydantic import SecretStr
>>> from carrierwatch.core.partner import AuthSpec
>>> spec = AuthSpec(scheme="hmac_sha256_hex", header="X-Hmac-Signature", prefix="hmac-sha256-hex=")
>>> verifier = Verifier({"easypost": spec}, {"easypost": (SecretStr("s3cret"),)})
>>> body = b'{"id": 1}'
>>> good = "hmac-sha256-hex=" + _hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
>>> verifier.verify("easypost", {"x-hmac-signature": good}, {}, body).code
'verified'
>>> verifier.verify("easypost", {"x-hmac-signature": good[:-2] + "00"}, {}, body).status
401
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import SecretStr

from carrierwatch.core.errors import ConfigurationError
from carrierwatch.core.partner import AuthSpec

__all__ = ["SCHEMES", "Verdict", "Verifier", "sign_request"]

#: the schemes a webhook partner may declare
SCHEMES = ("hmac_sha256_hex", "hmac_sha256_base64", "standard_webhooks", "token", "api_key",
           "basic")

_SW_ID, _SW_TIMESTAMP, _SW_SIGNATURE = "webhook-id", "webhook-timestamp", "webhook-signature"


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one request."""

    status: int
    code: str
    message: str
    #: which active secret matched (0: current, 1: previous) when verified
    key_index: int | None = None
    #: Standard Webhooks: the message id and timestamp (epoch s) the signature covers
    webhook_id: str | None = None
    webhook_timestamp: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == 0

    def describe(self, scheme: str) -> str:
        """The verification result as stored with the raw message."""
        return f"{scheme};key={self.key_index}" if self.ok else f"{scheme};{self.code}"


_VERIFIED = "verified"


def _ok(key_index: int, webhook_id: str | None = None,
        webhook_timestamp: int | None = None) -> Verdict:
    return Verdict(0, _VERIFIED, "verified", key_index, webhook_id, webhook_timestamp)


def _missing(what: str) -> Verdict:
    return Verdict(401, "missing_credentials", f"missing {what}")


_BAD = Verdict(401, "bad_signature", "signature or credential does not verify")


def _malformed(what: str) -> Verdict:
    return Verdict(400, "malformed_auth_header", f"malformed {what}")


def _hmac_key(secret: SecretStr) -> bytes:
    return unicodedata.normalize("NFKD", secret.get_secret_value()).encode("utf-8")


def _standard_webhook(secret: SecretStr) -> object:
    from standardwebhooks import Webhook

    return Webhook(secret.get_secret_value())


class _Scheme:
    """One partner's scheme bound to its secrets (the secrets' derived keys precomputed)."""

    def __init__(self, spec: AuthSpec, secrets: tuple[SecretStr, ...]) -> None:
        if spec.scheme not in SCHEMES:
            raise ConfigurationError(f"auth scheme {spec.scheme!r} cannot authenticate webhooks")
        if spec.scheme not in ("standard_webhooks", "basic") and not spec.header \
                and not spec.query:
            raise ConfigurationError(f"auth scheme {spec.scheme!r} needs a header")
        self.spec = spec
        self.scheme = spec.scheme
        self.header = (spec.header or ("authorization" if spec.scheme == "basic" else "")).lower()
        self._keys = [_hmac_key(s) for s in secrets]
        self._tokens = [s.get_secret_value().encode("utf-8") for s in secrets]
        self._webhooks: list[object] = []
        if spec.scheme == "standard_webhooks":
            try:
                self._webhooks = [_standard_webhook(s) for s in secrets]
            except Exception:  # never echo the secret: say what is wrong with it
                raise ConfigurationError("a standard_webhooks secret must be whsec_<base64> "
                                         "(or plain base64)") from None

    # -- one check per scheme; each returns a Verdict -------------------------------------------

    def check(self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes,
              *, check_time: bool = True, now: float | None = None,
              tolerance: int = 300) -> Verdict:
        if self.scheme == "hmac_sha256_hex":
            return self._hmac(headers, body, hexadecimal=True)
        if self.scheme == "hmac_sha256_base64":
            return self._hmac(headers, body, hexadecimal=False)
        if self.scheme == "standard_webhooks":
            return self._standard(headers, body, check_time=check_time, now=now,
                                  tolerance=tolerance)
        if self.scheme == "basic":
            return self._basic(headers)
        return self._token(headers, query)

    def _hmac(self, headers: Mapping[str, str], body: bytes, *, hexadecimal: bool) -> Verdict:
        value = headers.get(self.header)
        if not value:
            return _missing(f"{self.spec.header} header")
        prefix = self.spec.prefix
        if prefix and value[:len(prefix)].lower() != prefix.lower():
            return _malformed(f"{self.spec.header} header (expected {prefix}…)")
        value = value[len(prefix):]
        try:
            given = bytes.fromhex(value.strip()) if hexadecimal \
                else base64.b64decode(value.strip(), validate=True)
        except (ValueError, binascii.Error):
            return _malformed(f"{self.spec.header} header "
                              f"({'hex' if hexadecimal else 'base64'} expected)")
        matched = None
        for index, key in enumerate(self._keys):
            expected = hmac.new(key, body, hashlib.sha256).digest()
            if hmac.compare_digest(expected, given) and matched is None:
                matched = index
        return _BAD if matched is None else _ok(matched)

    def _token(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Verdict:
        given: str | None = None
        if self.header and headers.get(self.header):
            value = headers[self.header]
            prefix = self.spec.prefix
            if prefix and value[:len(prefix)].lower() != prefix.lower():
                return _malformed(f"{self.spec.header} header (expected {prefix.strip()} …)")
            given = value[len(prefix):].strip()
        elif self.spec.query and query.get(self.spec.query):
            given = query[self.spec.query]
        if not given:
            where = " or ".join(x for x in (self.spec.header and f"{self.spec.header} header",
                                            self.spec.query and f"{self.spec.query!r} query "
                                                                "parameter") if x)
            return _missing(where)
        return self._match_token(given.encode("utf-8"))

    def _match_token(self, given: bytes) -> Verdict:
        matched = None
        for index, token in enumerate(self._tokens):
            if hmac.compare_digest(token, given) and matched is None:
                matched = index
        return _BAD if matched is None else _ok(matched)

    def _basic(self, headers: Mapping[str, str]) -> Verdict:
        value = headers.get(self.header)
        if not value:
            return _missing("Authorization header")
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            return _malformed("Authorization header (Basic expected)")
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (ValueError, binascii.Error):
            return _malformed("Authorization header (base64 expected)")
        return self._match_token(given)

    def _standard(self, headers: Mapping[str, str], body: bytes, *, check_time: bool,
                  now: float | None, tolerance: int) -> Verdict:
        msg_id = headers.get(_SW_ID)
        stamp = headers.get(_SW_TIMESTAMP)
        signature = headers.get(_SW_SIGNATURE)
        if not (msg_id or stamp or signature):
            return _missing("webhook-id, webhook-timestamp and webhook-signature headers")
        if not (msg_id and stamp and signature):
            return _malformed("Standard Webhooks headers (webhook-id, webhook-timestamp and "
                              "webhook-signature are all required)")
        try:
            seconds = int(stamp)
            moment = datetime.fromtimestamp(seconds, tz=UTC)
        except (ValueError, OverflowError, OSError):
            return _malformed("webhook-timestamp header (epoch seconds expected)")
        passed = [part.encode() for part in signature.split(" ") if part]
        matched = None
        for index, webhook in enumerate(self._webhooks):
            expected = webhook.sign(msg_id, moment, body).encode()  # type: ignore[attr-defined]
            if any(hmac.compare_digest(expected, given) for given in passed) and matched is None:
                matched = index
        if matched is None:
            return _BAD
        if check_time:
            current = time.time() if now is None else now
            if abs(current - seconds) > tolerance:
                return Verdict(408, "stale_timestamp",
                               f"webhook-timestamp is more than {tolerance} s from now",
                               webhook_id=msg_id, webhook_timestamp=seconds)
        return _ok(matched, msg_id, seconds)


class Verifier:
    """Verifies requests for every partner it was given secrets for."""

    def __init__(self, specs: Mapping[str, AuthSpec],
                 secrets: Mapping[str, tuple[SecretStr, ...]],
                 tolerances: Mapping[str, int] | None = None) -> None:
        self._schemes = {partner: _Scheme(specs[partner], secrets[partner])
                         for partner in specs if partner in secrets}
        self._tolerances = dict(tolerances or {})
        # partner -> (other partner, the other's own scheme, this scheme keyed with its secrets)
        self._others: dict[str, list[tuple[str, _Scheme, _Scheme | None]]] = {}
        for partner in self._schemes:
            others = []
            for other, scheme in self._schemes.items():
                if other == partner:
                    continue
                try:
                    rekeyed: _Scheme | None = _Scheme(specs[partner], secrets[other])
                except ConfigurationError:  # e.g. a plain secret is no Standard Webhooks key
                    rekeyed = None
                others.append((other, scheme, rekeyed))
            self._others[partner] = others

    def serves(self, partner: str) -> bool:
        return partner in self._schemes

    def scheme_of(self, partner: str) -> str:
        return self._schemes[partner].scheme

    def verify(self, partner: str, headers: Mapping[str, str], query: Mapping[str, str],
               body: bytes, *, now: float | None = None) -> Verdict:
        """Verify one request for ``partner`` (``headers`` with lower-case names).

        A request that fails with ``partner``'s secrets is tried with every other partner's:
        its own scheme and header, then ``partner``'s scheme keyed with its secret. A match
        means a partner posting as another: 403 ``wrong_partner``.
        """
        own = self._schemes[partner]
        verdict = own.check(headers, query, body, now=now,
                            tolerance=self._tolerances.get(partner, 300))
        if verdict.ok or verdict.code not in ("bad_signature", "missing_credentials"):
            return verdict
        for _other, scheme, rekeyed in self._others[partner]:
            if scheme.check(headers, query, body, check_time=False).ok or (
                    rekeyed is not None
                    and rekeyed.check(headers, query, body, check_time=False).ok):
                return Verdict(403, "wrong_partner",
                               "these credentials belong to another partner")
        return verdict


def sign_request(spec: AuthSpec, secret: str, body: bytes, *, webhook_id: str | None = None,
                 timestamp: int | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """The headers and query parameters a partner would send with ``body`` under ``spec``.

    Used by tests, the benchmark and (later) the heartbeat producers, so that they sign exactly
    as the partners do.

    >>> spec = AuthSpec(scheme="hmac_sha256_base64", header="aftership-hmac-sha256")
    >>> sign_request(spec, "key", b"{}")
    ({'aftership-hmac-sha256': 'p3dyTZQ+tI3Gm8qKSm1XoE2z+ex+HeTlgehgJlvfMDI='}, {})
    """
    headers: dict[str, str] = {}
    query: dict[str, str] = {}
    header = spec.header or ""
    if spec.scheme in ("hmac_sha256_hex", "hmac_sha256_base64"):
        digest = hmac.new(_hmac_key(SecretStr(secret)), body, hashlib.sha256)
        value = digest.hexdigest() if spec.scheme == "hmac_sha256_hex" \
            else base64.b64encode(digest.digest()).decode()
        headers[header] = spec.prefix + value
    elif spec.scheme == "standard_webhooks":
        from standardwebhooks import Webhook

        msg_id = webhook_id or f"msg_{time.time_ns()}"
        stamp = int(time.time()) if timestamp is None else timestamp
        signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(stamp, tz=UTC), body)
        headers.update({_SW_ID: msg_id, _SW_TIMESTAMP: str(stamp), _SW_SIGNATURE: signature})
    elif spec.scheme == "basic":
        headers[header or "Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
    elif spec.scheme in ("token", "api_key"):
        if header:
            headers[header] = spec.prefix + secret
        else:
            query[spec.query or "token"] = secret
    else:
        raise ConfigurationError(f"auth scheme {spec.scheme!r} signs nothing")
    return headers, query

