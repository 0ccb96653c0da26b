"""Signed outbound webhooks: the keys that sign them, the headers, and how to check them.

Every webhook NEXUS sends carries three headers (docs/webhooks.md is the receiver's recipe)::

    Nexus-Webhook-Id: whk_01J9...
    Nexus-Webhook-Timestamp: 1767225600
    Nexus-Webhook-Signature: v1,kid=<16 hex>,ed25519=<base64>,mldsa65=<base64>

and both signatures cover ``f"{id}.{timestamp}.".encode() + body``
(:func:`nexus.security.signing.signed_message`). A receiver accepts a request only when both
signatures verify under a published key and the timestamp is within its tolerance of now, and
drops an id it has already seen inside that window.

Keys live under ``<data_dir>/keys`` as ``webhook-<kid>.json`` (mode 0600): the two 32-byte
seeds of an Ed25519 + ML-DSA-65 pair. The newest file signs; older ones stay published until
their file is removed, which is how a key is rotated without receivers missing a beat.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nexus.core.ids import new_id
from nexus.core.settings import Settings
from nexus.security.signing import (
    ALGORITHM,
    SIGNATURE_VERSION,
    TIMESTAMP_RE,
    HybridPrivateKey,
    HybridPublicKey,
    HybridSignature,
    SignatureError,
    from_base64,
    sign,
    signed_message,
    to_base64,
    verify,
)

ID_HEADER = "Nexus-Webhook-Id"
TIMESTAMP_HEADER = "Nexus-Webhook-Timestamp"
SIGNATURE_HEADER = "Nexus-Webhook-Signature"
DEFAULT_TOLERANCE_SECONDS = 300
KEY_FILE_PREFIX = "webhook-"


@dataclass
class WebhookVerificationError(SignatureError):
    """A received webhook was refused. ``reason`` is a stable code, ``detail`` the sentence.

    Reasons, besides :class:`SignatureError`'s: ``missing-header``, ``malformed-header``,
    ``malformed-timestamp``, ``stale-timestamp``, ``future-timestamp``, ``unknown-key``.
    """

    code = "webhook-verification-failed"
    title = "Webhook verification failed"


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    """What a receiver learns from a good request; deduplicate on ``message_id``."""

    message_id: str
    timestamp: int
    kid: str


def keys_directory(settings: Settings) -> Path:
    """Where a deployment keeps its webhook signing keys."""
    return settings.data_dir / "keys"


class WebhookSigner:
    """The signing keys of one deployment: the newest signs, all of them are published."""

    def __init__(
        self, keys: list[tuple[int, HybridPrivateKey]], *, directory: Path | None = None
    ) -> None:
        """``keys`` as (created, key) pairs in nanoseconds since the epoch; see
        :meth:`from_directory` for the usual way in."""
        if not keys:
            raise ValueError("a webhook signer needs at least one key")
        # Newest first; ties (never in practice) broken by key id so every process agrees.
        self._keys = sorted(keys, key=lambda item: (item[0], item[1].kid), reverse=True)
        self.directory = directory

    @classmethod
    def from_directory(cls, directory: Path) -> WebhookSigner:
        """Load every key in ``directory``, creating the directory (0700) and a first key.

        Several processes starting at once on an empty directory may each create a key; all
        of them are published, so whichever one signs, receivers that hold the document verify.
        """
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = [_read_key(path) for path in sorted(directory.glob(f"{KEY_FILE_PREFIX}*.json"))]
        if not keys:
            keys = [_write_key(directory, HybridPrivateKey.generate(), time.time_ns())]
        return cls(keys, directory=directory)

    @property
    def current(self) -> HybridPrivateKey:
        return self._keys[0][1]

    def rotate(self) -> HybridPublicKey:
        """Create a new key that signs from now on; the old ones stay published.

        Publish the new document to receivers before rotating a second time, and delete an old
        ``webhook-<kid>.json`` once no receiver needs it (after the replay tolerance at least).
        """
        key = HybridPrivateKey.generate()
        created = max(time.time_ns(), self._keys[0][0] + 1)
        if self.directory is not None:
            _write_key(self.directory, key, created)
        self._keys.insert(0, (created, key))
        return key.public_key()

    def public_keys(self) -> dict[str, HybridPublicKey]:
        return {key.kid: key.public_key() for _, key in self._keys}

    def public_keys_document(self) -> dict[str, Any]:
        """The JSON document receivers fetch: every published key by id, the signing one first."""
        return {
            "algorithm": ALGORITHM,
            "signature_version": SIGNATURE_VERSION,
            "current": self.current.kid,
            "keys": [key.public_key().to_json() for _, key in self._keys],
        }

    def signed_headers(
        self, body: bytes, *, message_id: str | None = None, timestamp: int | None = None
    ) -> dict[str, str]:
        """The three headers for a POST of exactly ``body`` (send those bytes, unchanged)."""
        message_id = message_id or new_id("whk")
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = sign(self.current, signed_message(message_id, stamp, body))
        return {
            ID_HEADER: message_id,
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: signature.to_header(),
        }


def public_keys_from_document(document: Mapping[str, Any]) -> dict[str, HybridPublicKey]:
    """The keys of a :meth:`WebhookSigner.public_keys_document`, by id, ready to verify with."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise SignatureError("public key document has no 'keys' list", reason="malformed-key")
    keys = [HybridPublicKey.from_json(entry) for entry in entries]
    return {key.kid: key for key in keys}


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    public_keys: Mapping[str, HybridPublicKey],
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> VerifiedWebhook:
    """Check a received webhook: return what it is, or raise :class:`WebhookVerificationError`.

    ``headers`` are matched without regard to case; ``body`` must be the raw bytes received,
    before any JSON parsing. Accepts only if the timestamp is within ``tolerance_seconds`` of
    ``now`` (default: the clock) either way, the key id is one of ``public_keys``, and both
    the Ed25519 and the ML-DSA-65 signature verify. Replays inside the window are the
    receiver's to drop, by the returned ``message_id``.
    """
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() in lowered:
            raise WebhookVerificationError(
                f"header {name!r} is repeated", reason="malformed-header"
            )
        lowered[name.lower()] = value
    values: list[str] = []
    for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
        found = lowered.get(name.lower())
        if not found:
            raise WebhookVerificationError(f"header {name} is missing", reason="missing-header")
        values.append(found.strip())
    message_id, stamp, signature_header = values

    if not TIMESTAMP_RE.match(stamp):
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} {stamp!r} is not unix seconds", reason="malformed-timestamp"
        )
    age = (time.time() if now is None else now) - int(stamp)
    if age > tolerance_seconds:
        raise WebhookVerificationError(
            f"timestamp is {age:.0f} s old, more than the {tolerance_seconds} s allowed",
            reason="stale-timestamp",
        )
    if -age > tolerance_seconds:
        raise WebhookVerificationError(
            f"timestamp is {-age:.0f} s in the future, more than the {tolerance_seconds} s allowed",
            reason="future-timestamp",
        )

    try:
        signature = HybridSignature.from_header(signature_header)
        key = public_keys.get(signature.kid)
        if key is None:
            raise WebhookVerificationError(
                f"key {signature.kid!r} is not among the {len(public_keys)} trusted keys",
                reason="unknown-key",
            )
        verify(key, signed_message(message_id, stamp, body), signature)
    except WebhookVerificationError:
        raise
    except SignatureError as exc:
        raise WebhookVerificationError(exc.detail, reason=exc.reason) from exc
    return VerifiedWebhook(message_id=message_id, timestamp=int(stamp), kid=signature.kid)


# -- key files ----------------------------------------------------------------------------------


def _read_key(path: Path) -> tuple[int, HybridPrivateKey]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        key = HybridPrivateKey.from_seeds(
            from_base64(document["ed25519_seed"]), from_base64(document["mldsa65_seed"])
        )
        created = int(document["created_ns"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SignatureError(
            f"webhook key file {path} is unreadable: {exc!r}", reason="malformed-key"
        ) from exc
    if document.get("kid") != key.kid:
        raise SignatureError(
            f"webhook key file {path} names kid {document.get('kid')!r}, its keys {key.kid!r}",
            reason="key-mismatch",
        )
    return created, key


def _write_key(
    directory: Path, key: HybridPrivateKey, created_ns: int
) -> tuple[int, HybridPrivateKey]:
    """Write the key readable by its owner only from the first byte, then move it into place."""
    ed_seed, ml_seed = key.seeds()
    document = {
        "kid": key.kid,
        "alg": ALGORITHM,
        "created_ns": created_ns,
        "ed25519_seed": to_base64(ed_seed),
        "mldsa65_seed": to_base64(ml_seed),
    }
    final = directory / f"{KEY_FILE_PREFIX}{key.kid}.json"
    temporary = directory / f".{final.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)  # whatever the umask did
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return created_ns, key


# --- where webhooks may go ------------------------------------------------------------------


class WebhookTargetRefused(ValueError):
    """A webhook URL aimed at the server's own network (SSRF), refused."""


_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")


def _refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if address.is_private:
        return "a private-network address"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "a reserved address"
    return None


def check_webhook_url(url: str, *, allow_private: bool = False) -> None:
    """Refuse a webhook URL whose host names this server's own network: loopback, private,
    link-local (the cloud metadata service) or reserved addresses, and ``localhost``-like
    names. ``allow_private`` (``NEXUS_WEBHOOK_ALLOW_PRIVATE``) lets an operator send to
    receivers on an internal network. Names are resolved again when sending
    (:func:`resolve_webhook_target`), so a name that later resolves inward is refused then."""
    try:
        parsed = urlsplit(url)
        hostname = parsed.hostname
    except ValueError:  # such as an unbalanced "[" of an IPv6 literal
        raise WebhookTargetRefused("the webhook URL cannot be parsed") from None
    if parsed.scheme not in ("http", "https") or not hostname:
        raise WebhookTargetRefused("a webhook URL must be http(s) with a host")
    if allow_private:
        return
    host = hostname.rstrip(".").lower()
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        raise WebhookTargetRefused(f"the webhook host {host!r} names this machine's network")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: checked when it is resolved, at send time
    why = _refused_address(address)
    if why is not None:
        raise WebhookTargetRefused(
            f"the webhook host {host} is {why}; set NEXUS_WEBHOOK_ALLOW_PRIVATE=true to send "
            "to receivers on an internal network"
        )


def resolve_webhook_target(url: str, *, allow_private: bool = False) -> None:
    """At send time: refuse the URL if its host resolves to an address
    :func:`check_webhook_url` would refuse (DNS may point a public-looking name inward)."""
    check_webhook_url(url, allow_private=allow_private)
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise WebhookTargetRefused(f"the webhook host {host!r} does not resolve: {exc}") from None
    for info in infos:
        why = _refused_address(ipaddress.ip_address(info[4][0]))
        if why is not None:
            raise WebhookTargetRefused(f"the webhook host {host!r} resolves to {why}")
