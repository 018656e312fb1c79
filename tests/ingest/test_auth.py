"""Verification of every webhook auth scheme, without a server (the gateway tests use a real one)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from carrierwatch.core.errors import ConfigurationError
from carrierwatch.core.partner import AuthSpec
from carrierwatch.ingest.auth import Verifier, sign_request

EASYPOST = AuthSpec(scheme="hmac_sha256_hex", header="X-Hmac-Signature", prefix="hmac-sha256-hex=")
AFTERSHIP = AuthSpec(scheme="hmac_sha256_base64", header="aftership-hmac-sha256")
FEDEX = AuthSpec(scheme="hmac_sha256_base64", header="fdx-signature")
METRO = AuthSpec(scheme="api_key", header="X-Metro-Api-Key")
SHIPPO = AuthSpec(scheme="token", header="Authorization", prefix="ShippoToken ", query="token")
ACME = AuthSpec(scheme="standard_webhooks")
SPECS = {"easypost": EASYPOST, "aftership": AFTERSHIP, "fedex": FEDEX, "metro_courier": METRO,
         "shippo": SHIPPO, "acme": ACME}
SW_SECRET = "whsec_" + base64.b64encode(b"acme-key-0123456789abcdef").decode()
SW_SECRET_OLD = "whsec_" + base64.b64encode(b"acme-old-key-0123456789").decode()
SECRETS = {"easypost": "ep-secret", "aftership": "as-secret", "fedex": "fx-secret",
           "metro_courier": "mc-api-key", "shippo": "sh-token", "acme": SW_SECRET}
BODY = b'{"result": {"tracking_code": "EZ1000000001", "status": "in_transit"}}'


@pytest.fixture
def verifier() -> Verifier:
    secrets = {p: (SecretStr(s),) for p, s in SECRETS.items()}
    secrets["acme"] = (SecretStr(SW_SECRET), SecretStr(SW_SECRET_OLD))
    return Verifier(SPECS, secrets)


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@pytest.mark.parametrize("partner", sorted(SPECS))
def test_each_scheme_accepts_its_own_signature_and_refuses_hostile_ones(
        verifier: Verifier, partner: str) -> None:
    spec = SPECS[partner]
    headers, query = sign_request(spec, SECRETS[partner], BODY)
    verdict = verifier.verify(partner, _lower(headers), query, BODY)
    assert (verdict.status, verdict.code, verdict.key_index) == (0, "verified", 0)

    # unsigned
    assert verifier.verify(partner, {}, {}, BODY).status == 401
    assert verifier.verify(partner, {}, {}, BODY).code == "missing_credentials"
    # signed with a wrong secret of the right shape
    wrong_secret = "whsec_" + base64.b64encode(b"not-the-key-at-all").decode() \
        if partner == "acme" else "not-the-secret"
    headers, query = sign_request(spec, wrong_secret, BODY)
    assert verifier.verify(partner, _lower(headers), query, BODY).code == "bad_signature"
    # the body changed after signing (not for tokens, which do not cover the body)
    if spec.scheme not in ("token", "api_key"):
        headers, query = sign_request(spec, SECRETS[partner], BODY)
        tampered = BODY.replace(b"in_transit", b"delivered")
        assert verifier.verify(partner, _lower(headers), query, tampered).status == 401


@pytest.mark.parametrize("partner", sorted(SPECS))
@pytest.mark.parametrize("other", sorted(SPECS))
def test_another_partners_credentials_get_403(verifier: Verifier, partner: str,
                                              other: str) -> None:
    if partner == other:
        return
    # the other partner's own request, posted to this partner's endpoint
    headers, query = sign_request(SPECS[other], SECRETS[other], BODY)
    assert verifier.verify(partner, _lower(headers), query, BODY).status == 403
    # this partner's scheme, keyed with the other partner's secret
    if SPECS[partner].scheme == "standard_webhooks" and not SECRETS[other].startswith("whsec_"):
        return  # a plain secret cannot key a Standard Webhooks signature
    headers, query = sign_request(SPECS[partner], SECRETS[other], BODY)
    verdict = verifier.verify(partner, _lower(headers), query, BODY)
    assert (verdict.status, verdict.code) == (403, "wrong_partner")


def test_rotation_accepts_the_previous_secret_and_says_which(verifier: Verifier) -> None:
    headers, _ = sign_request(ACME, SW_SECRET_OLD, BODY)
    verdict = verifier.verify("acme", _lower(headers), {}, BODY)
    assert (verdict.ok, verdict.key_index, verdict.describe("standard_webhooks")) == \
        (True, 1, "standard_webhooks;key=1")
    rotating = Verifier({"easypost": EASYPOST},
                        {"easypost": (SecretStr("new-one"), SecretStr("ep-secret"))})
    headers, _ = sign_request(EASYPOST, "ep-secret", BODY)
    assert rotating.verify("easypost", _lower(headers), {}, BODY).key_index == 1
    headers, _ = sign_request(EASYPOST, "new-one", BODY)
    assert rotating.verify("easypost", _lower(headers), {}, BODY).key_index == 0


def test_standard_webhooks_timestamp_tolerance(verifier: Verifier) -> None:
    now = int(time.time())
    for offset, status in ((-299, 0), (299, 0), (-301, 408), (3600, 408), (-86400, 408)):
        headers, _ = sign_request(ACME, SW_SECRET, BODY, webhook_id="msg_1",
                                  timestamp=now + offset)
        verdict = verifier.verify("acme", headers, {}, BODY, now=now)
        assert verdict.status == status, offset
    tight = Verifier({"acme": ACME}, {"acme": (SecretStr(SW_SECRET),)}, {"acme": 10})
    headers, _ = sign_request(ACME, SW_SECRET, BODY, timestamp=now - 11)
    assert tight.verify("acme", headers, {}, BODY, now=now).code == "stale_timestamp"
    # a stale request with a wrong signature learns nothing about the timestamp
    headers, _ = sign_request(ACME, "whsec_" + base64.b64encode(b"zz" * 9).decode(), BODY,
                              timestamp=now - 9999)
    assert verifier.verify("acme", headers, {}, BODY, now=now).status == 401


def test_standard_webhooks_signature_is_the_libraries(verifier: Verifier) -> None:
    from datetime import UTC, datetime

    from standardwebhooks import Webhook

    now = int(time.time())
    signature = Webhook(SW_SECRET).sign("msg_9", datetime.fromtimestamp(now, tz=UTC), BODY)
    headers = {"webhook-id": "msg_9", "webhook-timestamp": str(now),
               # several signatures, space-separated, the valid one last
               "webhook-signature": "v1,AAAA " + signature}
    verdict = verifier.verify("acme", headers, {}, BODY)
    assert (verdict.ok, verdict.webhook_id, verdict.webhook_timestamp) == (True, "msg_9", now)
    # the id is signed: the same signature under another id fails
    assert verifier.verify("acme", {**headers, "webhook-id": "msg_10"}, {}, BODY).status == 401


@pytest.mark.parametrize(("partner", "headers", "code"), [
    ("easypost", {"x-hmac-signature": "sha1=abcd"}, "malformed_auth_header"),
    ("easypost", {"x-hmac-signature": "hmac-sha256-hex=zz-not-hex"}, "malformed_auth_header"),
    ("aftership", {"aftership-hmac-sha256": "***not base64***"}, "malformed_auth_header"),
    ("acme", {"webhook-id": "msg_1"}, "malformed_auth_header"),
    ("acme", {"webhook-id": "m", "webhook-timestamp": "yesterday", "webhook-signature": "v1,x"},
     "malformed_auth_header"),
    ("shippo", {"authorization": "Bearer sh-token"}, "malformed_auth_header"),
])
def test_malformed_headers_are_400(verifier: Verifier, partner: str, headers: dict[str, str],
                                   code: str) -> None:
    verdict = verifier.verify(partner, headers, {}, BODY)
    assert (verdict.status, verdict.code) == (400, code)


def test_shippo_token_in_the_url_or_the_header(verifier: Verifier) -> None:
    assert verifier.verify("shippo", {}, {"token": "sh-token"}, BODY).ok
    assert verifier.verify("shippo", {"authorization": "ShippoToken sh-token"}, {}, BODY).ok
    assert verifier.verify("shippo", {}, {"token": "sh-token-"}, BODY).code == "bad_signature"


def test_easypost_key_is_nfkd_normalized() -> None:
    # EasyPost keys its HMAC with the NFKD form of the webhook secret
    secret = "ﬁsecret"  # the "fi" ligature decomposes to "fi" under NFKD
    verifier = Verifier({"easypost": EASYPOST}, {"easypost": (SecretStr(secret),)})
    digest = hmac.new(b"fisecret", BODY, hashlib.sha256).hexdigest()
    assert verifier.verify("easypost", {"x-hmac-signature": f"hmac-sha256-hex={digest}"}, {},
                           BODY).ok


def test_a_bad_standard_webhooks_secret_is_a_configuration_error_without_the_secret() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Verifier({"acme": ACME}, {"acme": (SecretStr("whsec_%%%not-base64%%%"),)})
    assert "not-base64" not in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300),
       headers=st.dictionaries(
           st.sampled_from(["x-hmac-signature", "aftership-hmac-sha256", "fdx-signature",
                            "x-metro-api-key", "authorization", "webhook-id",
                            "webhook-timestamp", "webhook-signature"]),
           st.text(max_size=80)),
       query=st.dictionaries(st.sampled_from(["token", "x"]), st.text(max_size=20)),
       partner=st.sampled_from(sorted(SPECS)))
def test_arbitrary_requests_never_raise_and_never_verify(body: bytes, headers: dict[str, str],
                                                         query: dict[str, str],
                                                         partner: str) -> None:
    secrets = {p: (SecretStr(s),) for p, s in SECRETS.items()}
    verdict = Verifier(SPECS, secrets).verify(partner, headers, query, body)
    assert not verdict.ok
    assert verdict.status in (400, 401)
