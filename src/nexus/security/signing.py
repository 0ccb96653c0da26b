"""Hybrid signatures: Ed25519 and ML-DSA-65 over the same message, both required.

Why two: Ed25519 (RFC 8032) is small, fast and well understood but falls to a large quantum
computer; ML-DSA-65 (FIPS 204, security category 3) is built to resist one but is young. A
signature that verifies only when *both* parts verify stays unforgeable while either primitive
holds — the "hybrid" composition of draft-ietf-lamps-pq-composite-sigs, without its ASN.1.

Pure: keys, bytes and dataclasses in, bytes and dataclasses out; no files, clock or network.
:mod:`nexus.security.webhooks` does the I/O (key files, headers, the clock).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey

from nexus.core.errors import NexusError

SIGNATURE_VERSION = "v1"
ALGORITHM = "ed25519+ml-dsa-65"
ED25519_SIGNATURE_BYTES = 64
MLDSA65_SIGNATURE_BYTES = 3309  # FIPS 204, table 2
ED25519_PUBLIC_BYTES = 32
MLDSA65_PUBLIC_BYTES = 1952
SEED_BYTES = 32  # both private keys are stored as their 32-byte seeds

# What may appear in the signed message's text parts. Neither may contain ".", so the message
# ``{id}.{timestamp}.{body}`` splits one way only (see ``signed_message``).
MESSAGE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
TIMESTAMP_RE = re.compile(r"^[0-9]{1,15}$")
KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")


@dataclass
class SignatureError(NexusError):
    """A signature or its encoding was refused; ``reason`` says which check, in a stable code.

    Reasons: ``malformed-signature``, ``unsupported-version``, ``malformed-message``,
    ``malformed-key``, ``key-mismatch``, ``bad-ed25519-signature``, ``bad-mldsa65-signature``.
    """

    reason: str = field(default="invalid-signature", kw_only=True)

    status = 401
    code = "signature-invalid"
    title = "Signature invalid"


@dataclass(frozen=True, slots=True)
class HybridPublicKey:
    """The public half of a signing key pair, named by ``kid``."""

    kid: str
    ed25519: Ed25519PublicKey
    mldsa65: MLDSA65PublicKey

    @classmethod
    def from_raw(cls, ed25519: bytes, mldsa65: bytes) -> HybridPublicKey:
        """Both raw public keys (32 and 1952 bytes); the key id is derived from them."""
        if len(ed25519) != ED25519_PUBLIC_BYTES or len(mldsa65) != MLDSA65_PUBLIC_BYTES:
            raise SignatureError("public keys have the wrong length", reason="malformed-key")
        try:
            ed = Ed25519PublicKey.from_public_bytes(ed25519)
            ml = MLDSA65PublicKey.from_public_bytes(mldsa65)
        except ValueError as exc:
            raise SignatureError(f"invalid public key: {exc}", reason="malformed-key") from exc
        return cls(kid=key_id(ed25519, mldsa65), ed25519=ed, mldsa65=ml)

    def to_json(self) -> dict[str, Any]:
        """The JSON form receivers store: raw public keys in standard base64 (RFC 4648 §4)."""
        return {
            "kid": self.kid,
            "alg": ALGORITHM,
            "ed25519": to_base64(self.ed25519.public_bytes_raw()),
            "mldsa65": to_base64(self.mldsa65.public_bytes_raw()),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> HybridPublicKey:
        """Read :meth:`to_json`'s form back; the stated ``kid`` must match the keys."""
        try:
            if document.get("alg", ALGORITHM) != ALGORITHM:
                raise SignatureError(
                    f"unsupported algorithm {document['alg']!r}", reason="malformed-key"
                )
            key = cls.from_raw(from_base64(document["ed25519"]), from_base64(document["mldsa65"]))
        except KeyError as exc:
            raise SignatureError(
                f"public key document lacks {exc}", reason="malformed-key"
            ) from exc
        except (AttributeError, TypeError, ValueError) as exc:
            raise SignatureError(
                "public key document is not base64 text", reason="malformed-key"
            ) from exc
        if document.get("kid", key.kid) != key.kid:
            raise SignatureError(
                f"key id {document['kid']!r} does not match its keys", reason="key-mismatch"
            )
        return key


@dataclass(frozen=True, slots=True)
class HybridPrivateKey:
    """A signing key pair. Kept as two 32-byte seeds; the key id is that of the public half."""

    ed25519: Ed25519PrivateKey
    mldsa65: MLDSA65PrivateKey

    @classmethod
    def generate(cls) -> HybridPrivateKey:
        return cls(ed25519=Ed25519PrivateKey.generate(), mldsa65=MLDSA65PrivateKey.generate())

    @classmethod
    def from_seeds(cls, ed25519: bytes, mldsa65: bytes) -> HybridPrivateKey:
        if len(ed25519) != SEED_BYTES or len(mldsa65) != SEED_BYTES:
            raise SignatureError("private key seeds must be 32 bytes", reason="malformed-key")
        return cls(
            ed25519=Ed25519PrivateKey.from_private_bytes(ed25519),
            mldsa65=MLDSA65PrivateKey.from_seed_bytes(mldsa65),
        )

    def seeds(self) -> tuple[bytes, bytes]:
        """The two 32-byte seeds, Ed25519 first: everything needed to rebuild the pair."""
        return self.ed25519.private_bytes_raw(), self.mldsa65.private_bytes_raw()

    def public_key(self) -> HybridPublicKey:
        ed, ml = self.ed25519.public_key(), self.mldsa65.public_key()
        return HybridPublicKey(
            kid=key_id(ed.public_bytes_raw(), ml.public_bytes_raw()), ed25519=ed, mldsa65=ml
        )

    @property
    def kid(self) -> str:
        return self.public_key().kid


@dataclass(frozen=True, slots=True)
class HybridSignature:
    """Both signatures over one message, and the id of the key that made them."""

    kid: str
    ed25519: bytes
    mldsa65: bytes

    def to_header(self) -> str:
        """``v1,kid=<kid>,ed25519=<base64>,mldsa65=<base64>`` (standard base64, padded)."""
        return (
            f"{SIGNATURE_VERSION},kid={self.kid},"
            f"ed25519={to_base64(self.ed25519)},mldsa65={to_base64(self.mldsa65)}"
        )

    @classmethod
    def from_header(cls, value: str) -> HybridSignature:
        """Parse :meth:`to_header`'s form strictly: every part once, nothing else."""
        version, _, rest = value.strip().partition(",")
        if version != SIGNATURE_VERSION:
            raise SignatureError(
                f"signature version {version!r} is not supported (expected {SIGNATURE_VERSION!r})",
                reason="unsupported-version",
            )
        parts: dict[str, str] = {}
        for item in rest.split(","):
            name, equals, encoded = item.strip().partition("=")
            if not equals or name in parts:
                raise SignatureError(
                    f"signature part {item.strip()!r} is malformed or repeated",
                    reason="malformed-signature",
                )
            parts[name] = encoded
        expected = {"kid", "ed25519", "mldsa65"}
        if set(parts) != expected:
            missing, extra = expected - set(parts), set(parts) - expected
            raise SignatureError(
                f"signature parts missing {sorted(missing)}, unexpected {sorted(extra)}",
                reason="malformed-signature",
            )
        if not KEY_ID_RE.match(parts["kid"]):
            raise SignatureError(
                f"key id {parts['kid']!r} is malformed", reason="malformed-signature"
            )
        try:
            ed, ml = from_base64(parts["ed25519"]), from_base64(parts["mldsa65"])
        except (binascii.Error, ValueError) as exc:
            raise SignatureError(
                "signature is not valid base64", reason="malformed-signature"
            ) from exc
        if len(ed) != ED25519_SIGNATURE_BYTES or len(ml) != MLDSA65_SIGNATURE_BYTES:
            raise SignatureError(
                f"signatures must be {ED25519_SIGNATURE_BYTES} and {MLDSA65_SIGNATURE_BYTES} "
                f"bytes, got {len(ed)} and {len(ml)}",
                reason="malformed-signature",
            )
        return cls(kid=parts["kid"], ed25519=ed, mldsa65=ml)


def key_id(ed25519_public: bytes, mldsa65_public: bytes) -> str:
    """The first 8 bytes of SHA-256 over both raw public keys, in hex: a name, not a secret.

    Derived rather than random so a receiver can check that a published key and its id agree.
    """
    return hashlib.sha256(ed25519_public + mldsa65_public).hexdigest()[:16]


def signed_message(message_id: str, timestamp: str, body: bytes) -> bytes:
    """The exact bytes both signatures cover: ``{message_id}.{timestamp}.`` in ASCII + body.

    ``message_id`` is 1 to 128 of ``[A-Za-z0-9_-]`` and ``timestamp`` 1 to 15 decimal digits, so no
    other (id, timestamp, body) triple yields the same bytes.
    """
    if not MESSAGE_ID_RE.match(message_id):
        raise SignatureError(f"message id {message_id!r} is malformed", reason="malformed-message")
    if not TIMESTAMP_RE.match(timestamp):
        raise SignatureError(f"timestamp {timestamp!r} is malformed", reason="malformed-message")
    return f"{message_id}.{timestamp}.".encode("ascii") + body


def sign(key: HybridPrivateKey, message: bytes) -> HybridSignature:
    """Sign ``message`` with both halves (ML-DSA with an empty context, hedged signing)."""
    return HybridSignature(
        kid=key.kid, ed25519=key.ed25519.sign(message), mldsa65=key.mldsa65.sign(message)
    )


def verify(key: HybridPublicKey, message: bytes, signature: HybridSignature) -> None:
    """Return if both signatures are valid for ``message`` under ``key``; raise otherwise.

    Both are always checked, so the time taken says nothing about which part failed first.
    """
    if signature.kid != key.kid:
        raise SignatureError(
            f"signature is by key {signature.kid!r}, not {key.kid!r}", reason="key-mismatch"
        )
    ed_ok = ml_ok = True
    try:
        key.ed25519.verify(signature.ed25519, message)
    except InvalidSignature:
        ed_ok = False
    try:
        key.mldsa65.verify(signature.mldsa65, message)
    except InvalidSignature:
        ml_ok = False
    if not ed_ok:
        raise SignatureError("the Ed25519 signature is invalid", reason="bad-ed25519-signature")
    if not ml_ok:
        raise SignatureError("the ML-DSA-65 signature is invalid", reason="bad-mldsa65-signature")


def to_base64(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 section 4), as every header and document uses."""
    return base64.b64encode(data).decode("ascii")


def from_base64(text: str) -> bytes:
    """Strict inverse of :func:`to_base64`: other characters raise ``binascii.Error``."""
    return base64.b64decode(text.encode("ascii"), validate=True)
