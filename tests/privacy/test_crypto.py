"""Field encryption and the hybrid KEM: round trips, bindings, tampering, formats, rotation."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.privacy.crypto import (
    DataKey,
    FieldCiphertext,
    FieldContext,
    InvalidCiphertext,
    UnsupportedFormat,
    WorkspaceKey,
    WorkspacePublicKey,
    WrappedDataKey,
    decrypt_field,
    decrypt_text,
    encrypt_field,
    encrypt_text,
    rewrap,
    unwrap_data_key,
    wrap_data_key,
)

WHERE = FieldContext("ws-1", "people", "email", "row-1")

# Key generation is the slow part; a few module-level keys keep the suite quick.
WORKSPACE_KEY = WorkspaceKey.generate("ws-1", version=1)
DATA_KEY = DataKey.generate()


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- field encryption ------------------------------------------------------------------------


def test_field_round_trips_in_bytes_and_text_form() -> None:
    ciphertext = encrypt_field(DATA_KEY, b"ada@example.com", WHERE)
    assert decrypt_field(DATA_KEY, ciphertext, WHERE) == b"ada@example.com"
    assert decrypt_field(DATA_KEY, ciphertext.to_bytes(), WHERE) == b"ada@example.com"
    assert decrypt_field(DATA_KEY, ciphertext.to_text(), WHERE) == b"ada@example.com"


def test_same_value_encrypts_differently_each_time() -> None:
    first = encrypt_field(DATA_KEY, b"same", WHERE)
    second = encrypt_field(DATA_KEY, b"same", WHERE)
    assert first.nonce != second.nonce
    assert first.to_bytes() != second.to_bytes()


def test_encoding_carries_version_and_key_id_and_adds_45_bytes() -> None:
    data = encrypt_field(DATA_KEY, b"x" * 10, WHERE).to_bytes()
    assert data[0] == 1
    assert data[1:17].hex() == DATA_KEY.key_id
    assert len(data) == 10 + 45


def test_text_form_has_a_version_prefix_and_is_url_safe() -> None:
    token = encrypt_text(DATA_KEY, "Ada Lovelace", WHERE)
    prefix, _, body = token.partition(".")
    assert prefix == "nxf1"
    assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    "other",
    [
        dataclasses.replace(WHERE, row_id="row-2"),
        dataclasses.replace(WHERE, column="phone"),
        dataclasses.replace(WHERE, table="visitors"),
        dataclasses.replace(WHERE, workspace_id="ws-2"),
    ],
    ids=["row", "column", "table", "workspace"],
)
def test_ciphertext_moved_to_another_cell_does_not_decrypt(other: FieldContext) -> None:
    ciphertext = encrypt_field(DATA_KEY, b"ada@example.com", WHERE)
    with pytest.raises(InvalidCiphertext, match="moved from another"):
        decrypt_field(DATA_KEY, ciphertext, other)


def test_context_fields_cannot_shift_into_each_other() -> None:
    """Length prefixes: ("ab", "c") and ("a", "bc") are different cells."""
    ciphertext = encrypt_field(DATA_KEY, b"v", FieldContext("ws", "ab", "c", "1"))
    with pytest.raises(InvalidCiphertext):
        decrypt_field(DATA_KEY, ciphertext, FieldContext("ws", "a", "bc", "1"))


def test_every_tampered_byte_is_refused() -> None:
    data = encrypt_field(DATA_KEY, b"secret value", WHERE).to_bytes()
    for index in range(len(data)):
        with pytest.raises(InvalidCiphertext):
            decrypt_field(DATA_KEY, flip(data, index), WHERE)


def test_truncated_ciphertext_is_refused() -> None:
    data = encrypt_field(DATA_KEY, b"secret value", WHERE).to_bytes()
    for length in (0, 1, 17, 29, 29 + 15, len(data) - 1):
        with pytest.raises(InvalidCiphertext):
            decrypt_field(DATA_KEY, data[:length], WHERE)


def test_another_data_key_is_refused_by_key_id() -> None:
    ciphertext = encrypt_field(DATA_KEY, b"v", WHERE)
    with pytest.raises(InvalidCiphertext, match="encrypted under data key"):
        decrypt_field(DataKey.generate(), ciphertext, WHERE)


def test_another_secret_under_the_same_key_id_is_refused() -> None:
    ciphertext = encrypt_field(DATA_KEY, b"v", WHERE)
    impostor = DataKey(DATA_KEY.key_id, bytes(32))
    with pytest.raises(InvalidCiphertext):
        decrypt_field(impostor, ciphertext, WHERE)


def test_unknown_binary_version_is_refused_clearly() -> None:
    data = encrypt_field(DATA_KEY, b"v", WHERE).to_bytes()
    with pytest.raises(UnsupportedFormat, match="format version 2"):
        decrypt_field(DATA_KEY, b"\x02" + data[1:], WHERE)


def test_unknown_text_version_is_refused_clearly() -> None:
    token = encrypt_text(DATA_KEY, "v", WHERE)
    with pytest.raises(UnsupportedFormat, match="'nxf9'"):
        decrypt_text(DATA_KEY, "nxf9." + token.partition(".")[2], WHERE)


@pytest.mark.parametrize("token", ["", "plain text", "nxf1", "xyz1.AAAA", "nxf1.!!!!"])
def test_text_that_is_not_an_encrypted_field_is_refused(token: str) -> None:
    with pytest.raises(InvalidCiphertext):
        FieldCiphertext.from_text(token)


def test_text_and_binary_versions_must_agree() -> None:
    data = encrypt_field(DATA_KEY, b"v", WHERE).to_bytes()
    forged = "nxf1." + base64.urlsafe_b64encode(b"\x07" + data[1:]).decode().rstrip("=")
    with pytest.raises(UnsupportedFormat):
        FieldCiphertext.from_text(forged)


def test_secrets_stay_out_of_reprs() -> None:
    assert DATA_KEY.secret.hex() not in repr(DATA_KEY)
    assert WORKSPACE_KEY.mlkem_seed.hex() not in repr(WORKSPACE_KEY)


@settings(max_examples=60, deadline=None)
@given(plaintext=st.binary(max_size=512), row_id=st.text(max_size=40))
def test_any_bytes_round_trip(plaintext: bytes, row_id: str) -> None:
    where = dataclasses.replace(WHERE, row_id=row_id)
    data = encrypt_field(DATA_KEY, plaintext, where).to_bytes()
    assert decrypt_field(DATA_KEY, data, where) == plaintext


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=300), column=st.text(min_size=1, max_size=20))
def test_any_text_round_trips(text: str, column: str) -> None:
    where = dataclasses.replace(WHERE, column=column)
    assert decrypt_text(DATA_KEY, encrypt_text(DATA_KEY, text, where), where) == text


# --- the hybrid KEM and wrapped data keys ----------------------------------------------------


def test_data_key_wraps_and_unwraps() -> None:
    wrapped = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="visitor-1")
    assert unwrap_data_key(wrapped, WORKSPACE_KEY) == DATA_KEY
    assert (wrapped.workspace_id, wrapped.subject_id, wrapped.key_version) == (
        "ws-1",
        "visitor-1",
        1,
    )


def test_wrapping_is_randomised() -> None:
    first = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="s")
    second = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="s")
    assert first.mlkem_ciphertext != second.mlkem_ciphertext
    assert first.x25519_ciphertext != second.x25519_ciphertext
    assert first.sealed != second.sealed


def test_wrapped_key_survives_its_encoding() -> None:
    wrapped = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="visitor-1")
    decoded = WrappedDataKey.from_bytes(wrapped.to_bytes())
    assert decoded == wrapped
    assert unwrap_data_key(decoded, WORKSPACE_KEY) == DATA_KEY


def test_wrong_workspace_key_of_the_same_version_is_refused() -> None:
    wrapped = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="s")
    impostor = WorkspaceKey.generate("ws-1", version=1)
    with pytest.raises(InvalidCiphertext, match="does not open"):
        unwrap_data_key(wrapped, impostor)


def test_key_of_another_workspace_or_version_is_refused_by_name() -> None:
    wrapped = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="s")
    with pytest.raises(InvalidCiphertext, match="workspace 'ws-1'"):
        unwrap_data_key(wrapped, WorkspaceKey.generate("ws-2", version=1))
    with pytest.raises(InvalidCiphertext, match="version 1, not 2"):
        unwrap_data_key(wrapped, WorkspaceKey.generate("ws-1", version=2))


def test_relabelled_wrapped_key_is_refused() -> None:
    """Header fields are bound: a key wrapped for one subject cannot be claimed by another."""
    wrapped = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="visitor-1")
    stolen = dataclasses.replace(wrapped, subject_id="visitor-2")
    with pytest.raises(InvalidCiphertext):
        unwrap_data_key(stolen, WORKSPACE_KEY)


@pytest.mark.parametrize("part", ["x25519_ciphertext", "mlkem_ciphertext", "sealed"])
def test_tampered_wrapped_key_is_refused(part: str) -> None:
    wrapped = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="s")
    tampered = dataclasses.replace(wrapped, **{part: flip(getattr(wrapped, part), 5)})
    with pytest.raises(InvalidCiphertext):
        unwrap_data_key(tampered, WORKSPACE_KEY)


def test_low_order_x25519_share_is_refused() -> None:
    wrapped = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="s")
    with pytest.raises(InvalidCiphertext):
        unwrap_data_key(dataclasses.replace(wrapped, x25519_ciphertext=bytes(32)), WORKSPACE_KEY)


def test_wrapped_key_with_unknown_version_or_truncated_is_refused() -> None:
    data = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="s").to_bytes()
    with pytest.raises(UnsupportedFormat):
        WrappedDataKey.from_bytes(b"\x02" + data[1:])
    with pytest.raises(InvalidCiphertext, match="truncated"):
        WrappedDataKey.from_bytes(data[:-1])
    with pytest.raises(InvalidCiphertext, match="trailing"):
        WrappedDataKey.from_bytes(data + b"\x00")


def test_public_key_serialises_and_still_wraps() -> None:
    public = WorkspacePublicKey.from_bytes(WORKSPACE_KEY.public_key().to_bytes())
    assert public == WORKSPACE_KEY.public_key()
    wrapped = wrap_data_key(DATA_KEY, public, subject_id="s")
    assert unwrap_data_key(wrapped, WORKSPACE_KEY) == DATA_KEY


def test_workspace_key_serialises() -> None:
    restored = WorkspaceKey.from_bytes(WORKSPACE_KEY.to_bytes())
    assert restored == WORKSPACE_KEY
    wrapped = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="s")
    assert unwrap_data_key(wrapped, restored) == DATA_KEY


def test_rewrap_moves_a_data_key_to_a_new_version_without_touching_fields() -> None:
    field_value = encrypt_field(DATA_KEY, b"ada@example.com", WHERE).to_bytes()
    old_wrapped = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="s")
    new_key = WorkspaceKey.generate("ws-1", version=2)

    new_wrapped = rewrap(old_wrapped, WORKSPACE_KEY, new_key.public_key())

    assert new_wrapped.key_version == 2
    assert new_wrapped.key_id == old_wrapped.key_id
    recovered = unwrap_data_key(new_wrapped, new_key)
    assert decrypt_field(recovered, field_value, WHERE) == b"ada@example.com"
    # The old wrapping still opens with the old version until it is replaced.
    assert unwrap_data_key(old_wrapped, WORKSPACE_KEY) == DATA_KEY
    with pytest.raises(InvalidCiphertext):
        unwrap_data_key(new_wrapped, WORKSPACE_KEY)


def test_rewrap_refuses_to_move_between_workspaces() -> None:
    wrapped = wrap_data_key(DATA_KEY, WORKSPACE_KEY.public_key(), subject_id="s")
    other = WorkspaceKey.generate("ws-2", version=2)
    with pytest.raises(ValueError, match="between workspaces"):
        rewrap(wrapped, WORKSPACE_KEY, other.public_key())


def test_malformed_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="key id"):
        DataKey("not-hex", bytes(32))
    with pytest.raises(ValueError, match="32 bytes"):
        DataKey(DATA_KEY.key_id, bytes(16))
    with pytest.raises(InvalidCiphertext, match="wrong length"):
        WorkspacePublicKey("ws", 1, bytes(10), bytes(32))
    with pytest.raises(ValueError, match="version"):
        WorkspaceKey.generate("ws", version=0)
