"""Field encryption at rest: per-subject data keys wrapped under a hybrid post-quantum KEM.

Why: personal fields (email, name, phone, free text) must stay unreadable to whoever gets the
database or a backup, erasure must be possible without rewriting every row that holds them,
and data recorded today must survive a quantum adversary who stores it and decrypts later
("harvest now, decrypt later"). Three layers do it:

1. **Workspace key** (:class:`WorkspaceKey`), one per workspace and version: an ML-KEM-768
   decapsulation key (FIPS 203) and an X25519 private key (RFC 7748). Its public half
   (:class:`WorkspacePublicKey`) is serialisable and is all that wrapping needs.
2. **Data key** (:class:`DataKey`), one AES-256 key per subject (visitor or person), stored
   only wrapped (:class:`WrappedDataKey`) under the workspace's current public key.
3. **Field ciphertext** (:class:`FieldCiphertext`): AES-256-GCM under the subject's data key
   with a random 96-bit nonce and associated data binding workspace, table, column and row
   (:class:`FieldContext`), so a ciphertext copied to another cell fails to decrypt.

Crypto-shredding follows: delete a subject's wrapped data key and every field encrypted under
it is noise. Rotation follows too: a new workspace key version only re-wraps the small data
keys (:func:`rewrap`); field ciphertexts are never touched, and a wrapped key names the
version it was wrapped under, so old versions stay readable until re-wrapped.

The hybrid KEM ("X-Wing-like", after Barbosa et al., *X-Wing: The Hybrid KEM You've Been
Looking For*, IACR ePrint 2024/039, and the combiner of draft-connolly-cfrg-xwing-kem) works
as an HPKE-style single-shot seal (RFC 9180 §5, base mode):

* ``ss_M, ct_M = ML-KEM-768.Encaps(pk_M)``;
* ``e`` a fresh X25519 key, ``ct_X = e·G`` and ``ss_X = X25519(e, pk_X)`` (ephemeral-static);
* ``salt = SHA-256(LABEL ‖ ct_M ‖ ct_X ‖ pk_M ‖ pk_X)`` binds both ciphertexts and both public
  keys (X-Wing binds ``ct_X`` and ``pk_X``; ML-KEM's own ciphertext binding makes ``ct_M``
  redundant there, it costs nothing to add here);
* ``KEK ‖ nonce = HKDF-SHA256(IKM = ss_M ‖ ss_X, salt, info = LABEL ‖ header)`` (RFC 5869),
  32 + 12 bytes, where ``header`` names workspace, subject, data key id and key version;
* ``sealed = AES-256-GCM(KEK, nonce, data key, AAD = header)``.

The KEK is fresh for every seal, so a derived (rather than random) nonce is safe, as in HPKE.
The result stays secret while either ML-KEM-768 or X25519 holds.

Everything here is pure: bytes in, bytes out, no file or network I/O (see
:mod:`nexus.privacy.keystore` for where keys live).

>>> workspace_key = WorkspaceKey.generate("ws-1", version=1)
>>> data_key = DataKey.generate()
>>> wrapped = wrap_data_key(data_key, workspace_key.public_key(), subject_id="visitor-7")
>>> unwrap_data_key(wrapped, workspace_key) == data_key
True
>>> where = FieldContext("ws-1", "people", "email", "row-42")
>>> token = encrypt_text(data_key, "ada@example.com", where)
>>> token.startswith("nxf1.")
True
>>> decrypt_text(data_key, token, where)
'ada@example.com'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nexus.core.errors import NexusError

FORMAT_VERSION = 1
"""The one version of every encoding below; the first byte of each says which it is."""

FIELD_TEXT_PREFIX = "nxf"
"""Text form of a field ciphertext: ``nxf<version>.`` then base64url (no padding) of its bytes."""

KEM_LABEL = b"nexus/hybrid-kem/mlkem768-x25519/v1"
FIELD_LABEL = b"nexus/field/aes256gcm/v1"

KEY_ID_BYTES = 16
DATA_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
MLKEM_SEED_BYTES = 64
MLKEM_PUBLIC_BYTES = 1184
MLKEM_CIPHERTEXT_BYTES = 1088
X25519_BYTES = 32
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


class InvalidCiphertext(NexusError):
    """A ciphertext, wrapped key or key encoding is malformed, tampered with or under another key.

    Deliberately one error for all of these: telling a caller *which* check failed helps an
    attacker more than an operator.
    """

    status = 422
    code = "invalid-ciphertext"
    title = "Invalid ciphertext"


class UnsupportedFormat(InvalidCiphertext):
    """An encoding names a format version this release cannot read (newer, or not ours)."""

    code = "unsupported-ciphertext-format"
    title = "Unsupported ciphertext format"


# --- encoding helpers ------------------------------------------------------------------------


def _lp(text: str) -> bytes:
    """Length-prefixed UTF-8, so that concatenated fields can never be read two ways."""
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("identifier longer than 65535 bytes")
    return _U16.pack(len(raw)) + raw


class _Reader:
    """Reads an encoding front to back; running short is an :class:`InvalidCiphertext`."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._at = 0
        self._what = what

    def take(self, n: int) -> bytes:
        if self._at + n > len(self._data):
            raise InvalidCiphertext(f"{self._what} is truncated")
        chunk = self._data[self._at : self._at + n]
        self._at += n
        return chunk

    def text(self) -> str:
        (n,) = _U16.unpack(self.take(2))
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidCiphertext(f"{self._what} holds an invalid identifier") from exc

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def rest(self) -> bytes:
        chunk = self._data[self._at :]
        self._at = len(self._data)
        return chunk

    def done(self) -> None:
        if self._at != len(self._data):
            raise InvalidCiphertext(f"{self._what} has trailing bytes")

    @property
    def offset(self) -> int:
        return self._at


def _check_version(data: bytes, what: str) -> None:
    if not data:
        raise InvalidCiphertext(f"{what} is empty")
    if data[0] != FORMAT_VERSION:
        raise UnsupportedFormat(
            f"{what} has format version {data[0]}; this release reads version {FORMAT_VERSION}"
        )


def _key_id_bytes(key_id: str) -> bytes:
    try:
        raw = bytes.fromhex(key_id)
    except ValueError:
        raw = b""
    if len(raw) != KEY_ID_BYTES:
        raise ValueError(f"a key id is {KEY_ID_BYTES * 2} hex digits, not {key_id!r}")
    return raw


# --- data keys and field encryption ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldContext:
    """Where a field value lives; bound into its ciphertext as associated data."""

    workspace_id: str
    table: str
    column: str
    row_id: str

    def associated_data(self, key_id: bytes) -> bytes:
        return b"".join(
            (
                FIELD_LABEL,
                bytes([FORMAT_VERSION]),
                key_id,
                _lp(self.workspace_id),
                _lp(self.table),
                _lp(self.column),
                _lp(self.row_id),
            )
        )


@dataclass(frozen=True, slots=True)
class DataKey:
    """One subject's AES-256 key and its id (32 hex digits), which every ciphertext carries."""

    key_id: str
    secret: bytes = field(repr=False)
    _aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _key_id_bytes(self.key_id)
        if len(self.secret) != DATA_KEY_BYTES:
            raise ValueError(f"a data key is {DATA_KEY_BYTES} bytes")
        # One AESGCM per key, not per field: building it is a measurable share of a field.
        object.__setattr__(self, "_aead", AESGCM(self.secret))

    @classmethod
    def generate(cls) -> DataKey:
        return cls(os.urandom(KEY_ID_BYTES).hex(), AESGCM.generate_key(bit_length=256))


@dataclass(frozen=True, slots=True)
class FieldCiphertext:
    """An encrypted field: ``version ‖ key id (16) ‖ nonce (12) ‖ AES-GCM ciphertext+tag``.

    45 bytes over the plaintext. :meth:`to_text` gives the form for text columns.
    """

    key_id: str
    nonce: bytes
    sealed: bytes
    version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        return bytes([self.version]) + _key_id_bytes(self.key_id) + self.nonce + self.sealed

    def to_text(self) -> str:
        encoded = base64.urlsafe_b64encode(self.to_bytes()).rstrip(b"=").decode("ascii")
        return f"{FIELD_TEXT_PREFIX}{self.version}.{encoded}"

    @classmethod
    def from_bytes(cls, data: bytes) -> FieldCiphertext:
        _check_version(data, "field ciphertext")
        reader = _Reader(data, "field ciphertext")
        reader.take(1)
        key_id = reader.take(KEY_ID_BYTES).hex()
        nonce = reader.take(NONCE_BYTES)
        sealed = reader.rest()
        if len(sealed) < TAG_BYTES:
            raise InvalidCiphertext("field ciphertext is truncated")
        return cls(key_id, nonce, sealed)

    @classmethod
    def from_text(cls, text: str) -> FieldCiphertext:
        prefix, dot, encoded = text.partition(".")
        if not dot or not prefix.startswith(FIELD_TEXT_PREFIX):
            raise InvalidCiphertext("not an encrypted field (expected 'nxf<version>.<data>')")
        if prefix != f"{FIELD_TEXT_PREFIX}{FORMAT_VERSION}":
            raise UnsupportedFormat(
                f"encrypted field has format {prefix!r}; this release reads "
                f"'{FIELD_TEXT_PREFIX}{FORMAT_VERSION}'"
            )
        try:
            data = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError) as exc:
            raise InvalidCiphertext("encrypted field is not valid base64url") from exc
        return cls.from_bytes(data)


def encrypt_field(key: DataKey, plaintext: bytes, context: FieldContext) -> FieldCiphertext:
    """Encrypt one field value for the cell ``context`` names."""
    raw_id = bytes.fromhex(key.key_id)
    nonce = os.urandom(NONCE_BYTES)
    sealed = key._aead.encrypt(nonce, plaintext, context.associated_data(raw_id))
    return FieldCiphertext(key.key_id, nonce, sealed)


def decrypt_field(
    key: DataKey, ciphertext: FieldCiphertext | bytes | str, context: FieldContext
) -> bytes:
    """Decrypt a field value; another key or cell, or a changed byte, is an error."""
    if isinstance(ciphertext, bytes):
        ciphertext = FieldCiphertext.from_bytes(ciphertext)
    elif isinstance(ciphertext, str):
        ciphertext = FieldCiphertext.from_text(ciphertext)
    if ciphertext.version != FORMAT_VERSION:
        raise UnsupportedFormat(f"field ciphertext has format version {ciphertext.version}")
    if not hmac.compare_digest(ciphertext.key_id, key.key_id):
        raise InvalidCiphertext(
            f"field was encrypted under data key {ciphertext.key_id}, not {key.key_id}"
        )
    aad = context.associated_data(bytes.fromhex(key.key_id))
    try:
        return key._aead.decrypt(ciphertext.nonce, ciphertext.sealed, aad)
    except InvalidTag as exc:
        raise InvalidCiphertext(
            "field does not decrypt: tampered with, or moved from another workspace, table, "
            "column or row"
        ) from exc


def encrypt_text(key: DataKey, text: str, context: FieldContext) -> str:
    """:func:`encrypt_field` of UTF-8 text, in text form (``nxf1.…``) for a text column."""
    return encrypt_field(key, text.encode("utf-8"), context).to_text()


def decrypt_text(key: DataKey, token: str, context: FieldContext) -> str:
    """Inverse of :func:`encrypt_text`."""
    plaintext = decrypt_field(key, FieldCiphertext.from_text(token), context)
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCiphertext("encrypted field does not hold UTF-8 text") from exc


# --- workspace keys and the hybrid KEM -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkspacePublicKey:
    """The public half of a workspace key version: all that wrapping a data key needs."""

    workspace_id: str
    version: int
    mlkem_public: bytes
    x25519_public: bytes
    _mlkem: MLKEM768PublicKey = field(init=False, repr=False, compare=False)
    _x25519: X25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.mlkem_public) != MLKEM_PUBLIC_BYTES or len(self.x25519_public) != X25519_BYTES:
            raise InvalidCiphertext("workspace public key has the wrong length")
        try:
            object.__setattr__(
                self, "_mlkem", MLKEM768PublicKey.from_public_bytes(self.mlkem_public)
            )
        except ValueError as exc:
            raise InvalidCiphertext("workspace public key is not an ML-KEM-768 key") from exc
        object.__setattr__(self, "_x25519", X25519PublicKey.from_public_bytes(self.x25519_public))

    def to_bytes(self) -> bytes:
        return b"".join(
            (
                bytes([FORMAT_VERSION]),
                _lp(self.workspace_id),
                _U32.pack(self.version),
                self.mlkem_public,
                self.x25519_public,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> WorkspacePublicKey:
        _check_version(data, "workspace public key")
        reader = _Reader(data, "workspace public key")
        reader.take(1)
        workspace_id, version = reader.text(), reader.u32()
        mlkem_public, x25519_public = reader.take(MLKEM_PUBLIC_BYTES), reader.take(X25519_BYTES)
        reader.done()
        return cls(workspace_id, version, mlkem_public, x25519_public)


@dataclass(frozen=True, slots=True)
class WorkspaceKey:
    """One version of a workspace's key pair: ML-KEM-768 seed and X25519 private key.

    Keys are kept as their canonical secrets (the 64-byte ML-KEM seed of FIPS 203 §7.1 and the
    32-byte X25519 scalar); the parsed key objects are built once and reused.
    """

    workspace_id: str
    version: int
    mlkem_seed: bytes = field(repr=False)
    x25519_private: bytes = field(repr=False)
    _mlkem: MLKEM768PrivateKey = field(init=False, repr=False, compare=False)
    _x25519: X25519PrivateKey = field(init=False, repr=False, compare=False)
    _public: WorkspacePublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.version <= 0xFFFFFFFF:
            raise ValueError("a workspace key version is a positive 32-bit integer")
        if len(self.mlkem_seed) != MLKEM_SEED_BYTES or len(self.x25519_private) != X25519_BYTES:
            raise InvalidCiphertext("workspace key has the wrong length")
        mlkem = MLKEM768PrivateKey.from_seed_bytes(self.mlkem_seed)
        x25519 = X25519PrivateKey.from_private_bytes(self.x25519_private)
        object.__setattr__(self, "_mlkem", mlkem)
        object.__setattr__(self, "_x25519", x25519)
        public = WorkspacePublicKey(
            self.workspace_id,
            self.version,
            mlkem.public_key().public_bytes_raw(),
            x25519.public_key().public_bytes_raw(),
        )
        object.__setattr__(self, "_public", public)

    @classmethod
    def generate(cls, workspace_id: str, *, version: int) -> WorkspaceKey:
        return cls(
            workspace_id,
            version,
            MLKEM768PrivateKey.generate().private_bytes_raw(),
            X25519PrivateKey.generate().private_bytes_raw(),
        )

    def public_key(self) -> WorkspacePublicKey:
        return self._public

    def to_bytes(self) -> bytes:
        """The private key, for a key store to encrypt: never store this in the clear."""
        return b"".join(
            (
                bytes([FORMAT_VERSION]),
                _lp(self.workspace_id),
                _U32.pack(self.version),
                self.mlkem_seed,
                self.x25519_private,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> WorkspaceKey:
        _check_version(data, "workspace key")
        reader = _Reader(data, "workspace key")
        reader.take(1)
        workspace_id, version = reader.text(), reader.u32()
        seed, scalar = reader.take(MLKEM_SEED_BYTES), reader.take(X25519_BYTES)
        reader.done()
        return cls(workspace_id, version, seed, scalar)


@dataclass(frozen=True, slots=True)
class WrappedDataKey:
    """A subject's data key sealed under one workspace key version (1,193 bytes + its ids).

    Encoding: ``version ‖ lp(workspace) ‖ lp(subject) ‖ key id (16) ‖ key version (u32)`` (the
    header, also the AEAD's associated data) ``‖ ct_X (32) ‖ ct_M (1088) ‖ sealed key (48)``.
    """

    workspace_id: str
    subject_id: str
    key_id: str
    key_version: int
    x25519_ciphertext: bytes = field(repr=False)
    mlkem_ciphertext: bytes = field(repr=False)
    sealed: bytes = field(repr=False)

    def header(self) -> bytes:
        return b"".join(
            (
                bytes([FORMAT_VERSION]),
                _lp(self.workspace_id),
                _lp(self.subject_id),
                _key_id_bytes(self.key_id),
                _U32.pack(self.key_version),
            )
        )

    def to_bytes(self) -> bytes:
        return self.header() + self.x25519_ciphertext + self.mlkem_ciphertext + self.sealed

    @classmethod
    def from_bytes(cls, data: bytes) -> WrappedDataKey:
        _check_version(data, "wrapped data key")
        reader = _Reader(data, "wrapped data key")
        reader.take(1)
        workspace_id, subject_id = reader.text(), reader.text()
        key_id, key_version = reader.take(KEY_ID_BYTES).hex(), reader.u32()
        ct_x, ct_m = reader.take(X25519_BYTES), reader.take(MLKEM_CIPHERTEXT_BYTES)
        sealed = reader.take(DATA_KEY_BYTES + TAG_BYTES)
        reader.done()
        return cls(workspace_id, subject_id, key_id, key_version, ct_x, ct_m, sealed)


def _derive_kek(
    *,
    mlkem_secret: bytes,
    x25519_secret: bytes,
    mlkem_ciphertext: bytes,
    x25519_ciphertext: bytes,
    public: WorkspacePublicKey,
    header: bytes,
) -> tuple[bytes, bytes]:
    """The combiner of the module docstring: (KEK, nonce) from both shared secrets."""
    salt = hashlib.sha256(
        KEM_LABEL
        + mlkem_ciphertext
        + x25519_ciphertext
        + public.mlkem_public
        + public.x25519_public
    ).digest()
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=DATA_KEY_BYTES + NONCE_BYTES,
        salt=salt,
        info=KEM_LABEL + header,
    ).derive(mlkem_secret + x25519_secret)
    return okm[:DATA_KEY_BYTES], okm[DATA_KEY_BYTES:]


def wrap_data_key(
    data_key: DataKey, public_key: WorkspacePublicKey, *, subject_id: str
) -> WrappedDataKey:
    """Seal ``data_key`` for ``subject_id`` under one workspace key version (hybrid KEM + GCM)."""
    mlkem_secret, mlkem_ciphertext = public_key._mlkem.encapsulate()
    ephemeral = X25519PrivateKey.generate()
    x25519_ciphertext = ephemeral.public_key().public_bytes_raw()
    x25519_secret = ephemeral.exchange(public_key._x25519)
    unsealed = WrappedDataKey(
        public_key.workspace_id,
        subject_id,
        data_key.key_id,
        public_key.version,
        x25519_ciphertext,
        mlkem_ciphertext,
        b"",
    )
    header = unsealed.header()
    kek, nonce = _derive_kek(
        mlkem_secret=mlkem_secret,
        x25519_secret=x25519_secret,
        mlkem_ciphertext=mlkem_ciphertext,
        x25519_ciphertext=x25519_ciphertext,
        public=public_key,
        header=header,
    )
    sealed = AESGCM(kek).encrypt(nonce, data_key.secret, header)
    return WrappedDataKey(
        unsealed.workspace_id,
        subject_id,
        data_key.key_id,
        public_key.version,
        x25519_ciphertext,
        mlkem_ciphertext,
        sealed,
    )


def unwrap_data_key(wrapped: WrappedDataKey, workspace_key: WorkspaceKey) -> DataKey:
    """Open a wrapped data key; another workspace or key version is :class:`InvalidCiphertext`."""
    if wrapped.workspace_id != workspace_key.workspace_id:
        raise InvalidCiphertext(
            f"data key was wrapped for workspace {wrapped.workspace_id!r}, "
            f"not {workspace_key.workspace_id!r}"
        )
    if wrapped.key_version != workspace_key.version:
        raise InvalidCiphertext(
            f"data key was wrapped under workspace key version {wrapped.key_version}, "
            f"not {workspace_key.version}"
        )
    if (
        len(wrapped.mlkem_ciphertext) != MLKEM_CIPHERTEXT_BYTES
        or len(wrapped.x25519_ciphertext) != X25519_BYTES
    ):
        raise InvalidCiphertext("wrapped data key has the wrong length")
    # ML-KEM decapsulation never fails (implicit rejection, FIPS 203 §6.3): a wrong key or a
    # changed ciphertext yields a pseudo-random secret, and the GCM tag below catches it.
    mlkem_secret = workspace_key._mlkem.decapsulate(wrapped.mlkem_ciphertext)
    try:
        x25519_secret = workspace_key._x25519.exchange(
            X25519PublicKey.from_public_bytes(wrapped.x25519_ciphertext)
        )
    except ValueError as exc:  # a low-order point gives the all-zero secret, which is refused
        raise InvalidCiphertext("wrapped data key has an invalid X25519 share") from exc
    header = wrapped.header()
    kek, nonce = _derive_kek(
        mlkem_secret=mlkem_secret,
        x25519_secret=x25519_secret,
        mlkem_ciphertext=wrapped.mlkem_ciphertext,
        x25519_ciphertext=wrapped.x25519_ciphertext,
        public=workspace_key.public_key(),
        header=header,
    )
    try:
        secret = AESGCM(kek).decrypt(nonce, wrapped.sealed, header)
    except InvalidTag as exc:
        raise InvalidCiphertext(
            "wrapped data key does not open: tampered with, or under another workspace key"
        ) from exc
    return DataKey(wrapped.key_id, secret)


def rewrap(
    wrapped: WrappedDataKey, old_key: WorkspaceKey, new_public_key: WorkspacePublicKey
) -> WrappedDataKey:
    """The same data key (same id, so field ciphertexts stay valid) under another key version."""
    if new_public_key.workspace_id != wrapped.workspace_id:
        raise ValueError("rewrap moves a data key between versions, not between workspaces")
    data_key = unwrap_data_key(wrapped, old_key)
    return wrap_data_key(data_key, new_public_key, subject_id=wrapped.subject_id)
