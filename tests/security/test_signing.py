"""Signed webhooks: the hybrid Ed25519 + ML-DSA-65 signature, its headers, the key files, and
a rollout webhook received by a real HTTP server that verifies with the published keys."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.core.settings import Environment, Settings
from nexus.experiments.background import DecisionWorker, post_webhook
from nexus.security.signing import (
    HybridPrivateKey,
    HybridPublicKey,
    HybridSignature,
    SignatureError,
    sign,
    signed_message,
    verify,
)
from nexus.security.webhooks import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSigner,
    WebhookVerificationError,
    public_keys_from_document,
    verify_webhook,
)
from tests.security.conftest import Received

NOW = 1_767_225_600
BODY = b'{"type":"rollout.rolled_back","rollout_id":"ro_1","reason":"errors regressed"}'
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> WebhookSigner:
    return WebhookSigner.from_directory(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def keys(signer: WebhookSigner) -> dict[str, HybridPublicKey]:
    # Through JSON, as a receiver gets them.
    return public_keys_from_document(json.loads(json.dumps(signer.public_keys_document())))


@pytest.fixture(scope="module")
def headers(signer: WebhookSigner) -> dict[str, str]:
    return signer.signed_headers(BODY, message_id="whk_test-1", timestamp=NOW)


def refused(
    headers: dict[str, str],
    body: bytes,
    keys: dict[str, HybridPublicKey],
    *,
    now: float = NOW,
    tolerance_seconds: int = 300,
) -> str:
    """The reason a request is refused (fails the test if it is accepted)."""
    with pytest.raises(WebhookVerificationError) as caught:
        verify_webhook(headers, body, keys, now=now, tolerance_seconds=tolerance_seconds)
    assert caught.value.detail
    return caught.value.reason


def with_signature(headers: dict[str, str], **parts: str) -> dict[str, str]:
    """``headers`` with some ``name=value`` parts of the signature header replaced."""
    version, *items = headers[SIGNATURE_HEADER].split(",")
    current = dict(item.split("=", 1) for item in items)
    current.update(parts)
    value = ",".join([version, *(f"{k}={v}" for k, v in current.items())])
    return {**headers, SIGNATURE_HEADER: value}


# -- round trip ---------------------------------------------------------------------------------


def test_signed_headers_verify_with_the_published_keys(
    headers: dict[str, str], keys: dict[str, HybridPublicKey], signer: WebhookSigner
) -> None:
    result = verify_webhook(headers, BODY, keys, now=NOW)
    assert (result.message_id, result.timestamp, result.kid) == (
        "whk_test-1",
        NOW,
        signer.current.kid,
    )
    assert re.fullmatch(
        r"v1,kid=[0-9a-f]{16},ed25519=[A-Za-z0-9+/=]+,mldsa65=[A-Za-z0-9+/=]+",
        headers[SIGNATURE_HEADER],
    )


def test_header_names_match_without_regard_to_case(
    headers: dict[str, str], keys: dict[str, HybridPublicKey]
) -> None:
    lowered = {name.lower(): value for name, value in headers.items()}
    assert verify_webhook(lowered, BODY, keys, now=NOW).message_id == "whk_test-1"


def test_default_headers_have_a_fresh_id_and_the_current_time(
    signer: WebhookSigner, keys: dict[str, HybridPublicKey]
) -> None:
    first, second = signer.signed_headers(BODY), signer.signed_headers(BODY)
    assert first[ID_HEADER] != second[ID_HEADER]
    assert verify_webhook(first, BODY, keys).message_id == first[ID_HEADER]  # the real clock


# -- tampering ----------------------------------------------------------------------------------


def test_every_single_byte_change_of_the_body_is_refused(
    headers: dict[str, str], keys: dict[str, HybridPublicKey]
) -> None:
    for position in range(len(BODY)):
        changed = bytearray(BODY)
        changed[position] ^= 0x01
        assert refused(headers, bytes(changed), keys) == "bad-ed25519-signature"
    assert refused(headers, BODY + b" ", keys) == "bad-ed25519-signature"
    assert refused(headers, BODY[:-1], keys) == "bad-ed25519-signature"


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_byte_value_change_anywhere_in_the_body_is_refused(
    data: st.DataObject, headers: dict[str, str], keys: dict[str, HybridPublicKey]
) -> None:
    position = data.draw(st.integers(0, len(BODY) - 1))
    changed = bytearray(BODY)
    changed[position] ^= data.draw(st.integers(1, 255))
    assert refused(headers, bytes(changed), keys) == "bad-ed25519-signature"


def test_every_single_digit_change_of_the_timestamp_is_refused(
    headers: dict[str, str], keys: dict[str, HybridPublicKey]
) -> None:
    stamp = headers[TIMESTAMP_HEADER]
    for position, digit in enumerate(stamp):
        other = stamp[:position] + str((int(digit) + 1) % 10) + stamp[position + 1 :]
        # ``now`` follows the forged timestamp, so only the signature can refuse it.
        reason = refused({**headers, TIMESTAMP_HEADER: other}, BODY, keys, now=int(other))
        assert reason == "bad-ed25519-signature"


def test_every_single_character_change_of_the_id_is_refused(
    headers: dict[str, str], keys: dict[str, HybridPublicKey]
) -> None:
    message_id = headers[ID_HEADER]
    for position, char in enumerate(message_id):
        other = message_id[:position] + ("a" if char != "a" else "b") + message_id[position + 1 :]
        assert refused({**headers, ID_HEADER: other}, BODY, keys) == "bad-ed25519-signature"


def test_a_bad_ed25519_signature_is_refused_even_with_a_good_ml_dsa_one(
    headers: dict[str, str], keys: dict[str, HybridPublicKey], signer: WebhookSigner
) -> None:
    other = sign(signer.current, signed_message("whk_other", str(NOW), BODY))
    forged = with_signature(headers, ed25519=other.to_header().split("ed25519=")[1].split(",")[0])
    assert refused(forged, BODY, keys) == "bad-ed25519-signature"


def test_a_bad_ml_dsa_signature_is_refused_even_with_a_good_ed25519_one(
    headers: dict[str, str], keys: dict[str, HybridPublicKey], signer: WebhookSigner
) -> None:
    other = sign(signer.current, signed_message("whk_other", str(NOW), BODY))
    forged = with_signature(headers, mldsa65=other.to_header().split("mldsa65=")[1])
    assert refused(forged, BODY, keys) == "bad-mldsa65-signature"


def test_signatures_by_another_key_under_a_trusted_key_id_are_refused(
    headers: dict[str, str], keys: dict[str, HybridPublicKey]
) -> None:
    stranger = HybridPrivateKey.generate()
    theirs = sign(stranger, signed_message("whk_test-1", str(NOW), BODY))
    kid = headers[SIGNATURE_HEADER].split("kid=")[1].split(",")[0]
    forged = {**headers, SIGNATURE_HEADER: replace(theirs, kid=kid).to_header()}
    assert refused(forged, BODY, keys) == "bad-ed25519-signature"


def test_a_signature_for_one_key_does_not_verify_under_another() -> None:
    mine, theirs = HybridPrivateKey.generate(), HybridPrivateKey.generate()
    signature = sign(mine, b"message")
    verify(mine.public_key(), b"message", signature)
    with pytest.raises(SignatureError) as caught:
        verify(theirs.public_key(), b"message", signature)
    assert caught.value.reason == "key-mismatch"


# -- time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(301, "stale-timestamp"), (86_400, "stale-timestamp"), (-301, "future-timestamp")],
)
def test_timestamps_beyond_the_tolerance_are_refused(
    offset: int, reason: str, headers: dict[str, str], keys: dict[str, HybridPublicKey]
) -> None:
    assert refused(headers, BODY, keys, now=NOW + offset) == reason


@pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
def test_timestamps_within_the_tolerance_are_accepted(
    offset: int, headers: dict[str, str], keys: dict[str, HybridPublicKey]
) -> None:
    verify_webhook(headers, BODY, keys, now=NOW + offset)


def test_the_tolerance_is_the_receivers_to_choose(
    headers: dict[str, str], keys: dict[str, HybridPublicKey]
) -> None:
    assert refused(headers, BODY, keys, now=NOW + 31, tolerance_seconds=30) == "stale-timestamp"
    verify_webhook(headers, BODY, keys, now=NOW + 31, tolerance_seconds=60)


# -- keys and malformed input --------------------------------------------------------------------


def test_an_unknown_key_id_is_refused(headers: dict[str, str]) -> None:
    strangers = WebhookSigner([(1, HybridPrivateKey.generate())]).public_keys()
    assert refused(headers, BODY, strangers) == "unknown-key"


GOOD = "GOOD"  # stands for the valid header value in the cases below


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        (ID_HEADER, None, "missing-header"),
        (TIMESTAMP_HEADER, None, "missing-header"),
        (SIGNATURE_HEADER, None, "missing-header"),
        (SIGNATURE_HEADER, "", "missing-header"),
        (TIMESTAMP_HEADER, "soon", "malformed-timestamp"),
        (TIMESTAMP_HEADER, "-1767225600", "malformed-timestamp"),
        (TIMESTAMP_HEADER, "1767225600.5", "malformed-timestamp"),
        (TIMESTAMP_HEADER, "1_767_225_600", "malformed-timestamp"),
        (ID_HEADER, "whk.1", "malformed-message"),
        (ID_HEADER, "whk 1", "malformed-message"),
        (SIGNATURE_HEADER, "v2," + GOOD, "unsupported-version"),
        (SIGNATURE_HEADER, "kid=0011223344556677", "unsupported-version"),
        (SIGNATURE_HEADER, "v1,kid=0011223344556677", "malformed-signature"),
        (SIGNATURE_HEADER, GOOD + ",extra=1", "malformed-signature"),
        (SIGNATURE_HEADER, GOOD + ",kid=0011223344556677", "malformed-signature"),
        (SIGNATURE_HEADER, GOOD + ",junk", "malformed-signature"),
        (SIGNATURE_HEADER, "v1,kid=NOT-HEX,ed25519=AA==,mldsa65=AA==", "malformed-signature"),
        (
            SIGNATURE_HEADER,
            "v1,kid=0011223344556677,ed25519=!!,mldsa65=AA==",
            "malformed-signature",
        ),
        (
            SIGNATURE_HEADER,
            "v1,kid=0011223344556677,ed25519=AA==,mldsa65=AA==",
            "malformed-signature",
        ),
    ],
)
def test_malformed_headers_are_refused_with_a_reason(
    header: str,
    value: str | None,
    reason: str,
    headers: dict[str, str],
    keys: dict[str, HybridPublicKey],
) -> None:
    bad = dict(headers)
    if value is None:
        del bad[header]
    else:
        good = headers[SIGNATURE_HEADER].removeprefix("v1,")
        bad[header] = value.replace(GOOD, "v1," + good)
    assert refused(bad, BODY, keys) == reason


def test_a_repeated_header_is_refused(
    headers: dict[str, str], keys: dict[str, HybridPublicKey]
) -> None:
    doubled = {**headers, ID_HEADER.lower(): "whk_other"}
    assert refused(doubled, BODY, keys) == "malformed-header"


def test_the_signature_header_round_trips(headers: dict[str, str]) -> None:
    value = headers[SIGNATURE_HEADER]
    assert HybridSignature.from_header(value).to_header() == value


def test_a_published_key_whose_id_does_not_match_its_keys_is_refused(
    signer: WebhookSigner,
) -> None:
    document = signer.public_keys_document()
    document["keys"][0]["kid"] = "0011223344556677"
    with pytest.raises(SignatureError) as caught:
        public_keys_from_document(document)
    assert caught.value.reason == "key-mismatch"


@pytest.mark.parametrize(
    "change",
    [
        lambda entry: entry.pop("mldsa65"),
        lambda entry: entry.update(ed25519="AA=="),
        lambda entry: entry.update(mldsa65="not base64!"),
        lambda entry: entry.update(alg="rsa"),
    ],
)
def test_a_malformed_published_key_is_refused(
    change: Callable[[dict[str, Any]], object], signer: WebhookSigner
) -> None:
    document = signer.public_keys_document()
    change(document["keys"][0])
    with pytest.raises(SignatureError) as caught:
        public_keys_from_document(document)
    assert caught.value.reason == "malformed-key"


# -- key files ----------------------------------------------------------------------------------


def test_keys_persist_across_loads_in_owner_only_files(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "keys"
    first = WebhookSigner.from_directory(directory)
    second = WebhookSigner.from_directory(directory)
    assert first.current.seeds() == second.current.seeds()
    assert first.public_keys_document() == second.public_keys_document()
    files = list(directory.iterdir())
    assert [f.name for f in files] == [f"webhook-{first.current.kid}.json"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    # A signature made by one load verifies under the keys another load publishes.
    headers = first.signed_headers(BODY, timestamp=NOW)
    verify_webhook(headers, BODY, second.public_keys(), now=NOW)


def test_rotation_signs_with_the_new_key_and_keeps_publishing_the_old(tmp_path: Path) -> None:
    signer = WebhookSigner.from_directory(tmp_path)
    old_headers = signer.signed_headers(BODY, timestamp=NOW)
    old_kid = signer.current.kid
    new = signer.rotate()
    reloaded = WebhookSigner.from_directory(tmp_path)
    assert reloaded.current.kid == new.kid != old_kid
    document = reloaded.public_keys_document()
    assert document["current"] == new.kid
    assert [k["kid"] for k in document["keys"]] == [new.kid, old_kid]
    trusted = public_keys_from_document(document)
    assert verify_webhook(old_headers, BODY, trusted, now=NOW).kid == old_kid
    new_headers = reloaded.signed_headers(BODY, timestamp=NOW)
    assert verify_webhook(new_headers, BODY, trusted, now=NOW).kid == new.kid
    # A receiver that dropped the old key refuses what it signed.
    only_new = {new.kid: trusted[new.kid]}
    assert refused(old_headers, BODY, only_new) == "unknown-key"
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_corrupt_key_file_fails_loudly(tmp_path: Path) -> None:
    WebhookSigner.from_directory(tmp_path)
    (path,) = tmp_path.iterdir()
    path.write_text('{"kid": "x"}')
    with pytest.raises(SignatureError) as caught:
        WebhookSigner.from_directory(tmp_path)
    assert caught.value.reason == "malformed-key"


# -- the documented recipe ----------------------------------------------------------------------


def test_the_recipe_in_the_docs_verifies_and_refuses(
    headers: dict[str, str], signer: WebhookSigner
) -> None:
    text = (REPO / "docs" / "webhooks.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    recipe: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), recipe)  # our own docs, verbatim
    keys = recipe["load_keys"](json.loads(json.dumps(signer.public_keys_document())))
    lowered = {name.lower(): value for name, value in headers.items()}
    assert recipe["verify_nexus_webhook"](lowered, BODY, keys, now=NOW) == "whk_test-1"
    for bad_body, now in [(BODY + b" ", NOW), (BODY, NOW + 301)]:
        with pytest.raises(ValueError, match=r"bad signature|tolerance"):
            recipe["verify_nexus_webhook"](lowered, bad_body, keys, now=now)
    forged = with_signature(headers, mldsa65=headers[SIGNATURE_HEADER][-20:])
    with pytest.raises(ValueError, match="bad signature"):
        recipe["verify_nexus_webhook"](
            {k.lower(): v for k, v in forged.items()}, BODY, keys, now=NOW
        )


# -- end to end: the rollout webhook ------------------------------------------------------------


def test_the_rollout_webhook_verifies_with_the_published_keys(
    tmp_path: Path, receiver: tuple[str, Received]
) -> None:
    url, received = receiver
    settings_ = Settings(
        env=Environment.TEST,
        data_dir=tmp_path / "data",
        log_level="warning",
        webhook_allow_private=True,  # the receiver listens on 127.0.0.1
    )
    # The worker's own webhook function, as wired to the deployment's data_dir.
    nothing = cast(Any, None)
    worker = DecisionWorker(
        runtime=nothing, events_runtime=nothing, database=nothing, settings=settings_
    )
    notice = {"type": "rollout.rolled_back", "rollout_id": "ro_1", "reason": "errors regressed"}
    worker._post(url, notice)

    (headers, body) = received[0]
    published = WebhookSigner.from_directory(tmp_path / "data" / "keys").public_keys_document()
    keys = public_keys_from_document(json.loads(json.dumps(published)))
    verified = verify_webhook(headers, body, keys)
    assert verified.kid == published["current"]
    assert json.loads(body) == notice
    assert headers["Content-Type"] == "application/json"
    assert refused(headers, body.replace(b"ro_1", b"ro_2"), keys, now=verified.timestamp) == (
        "bad-ed25519-signature"
    )


def test_no_webhook_is_sent_unsigned(tmp_path: Path, receiver: tuple[str, Received]) -> None:
    url, received = receiver
    keys_dir = tmp_path / "keys"
    WebhookSigner.from_directory(keys_dir)
    for path in keys_dir.iterdir():
        path.write_text("not json")
    # Allowed to reach the receiver: only the unusable key may stop the notice.
    post_webhook(url, {"type": "rollout.rolled_back"}, keys_dir=keys_dir, allow_private=True)
    assert received == []
