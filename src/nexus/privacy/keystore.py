"""Where workspace keys and wrapped data keys live, and the key life cycle built on them.

:class:`KeyStore` is the interface: workspace key versions (and which is current) and one
wrapped data key per subject. :class:`MemoryKeyStore` keeps them in process (tests, one-off
tools); :class:`LocalKeyStore` adds a file for the single-node shape: a JSON document sealed
with AES-256-GCM under a master key (:func:`master_key_from_secret` or
:func:`master_key_from_file`), rewritten atomically (temporary file, ``fsync``, ``os.replace``,
``fsync`` of the directory) with mode ``0600`` after every change. One process writes a given
file; other processes see changes when they open the store again.

The functions at the bottom are the life cycle: :func:`ensure_subject_key` creates or opens a
subject's data key, :func:`rotate_workspace_key` adds a version, :func:`rewrap_subject_keys`
moves wrapped keys onto it while the older versions keep working, :func:`retire_workspace_key`
drops a version nothing uses any more, and :func:`shred_subject` deletes a subject's data key so
that every field encrypted under it becomes unreadable (crypto-shredding).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nexus.core.errors import NexusError, NotFound
from nexus.privacy.crypto import (
    DataKey,
    WorkspaceKey,
    WrappedDataKey,
    rewrap,
    unwrap_data_key,
    wrap_data_key,
)

MASTER_KEY_BYTES = 32
MIN_SECRET_BYTES = 32
FILE_MAGIC = b"NXKS"
FILE_VERSION = 1
_HEADER = FILE_MAGIC + bytes([FILE_VERSION])
_NONCE_BYTES = 12


class KeyNotFound(NotFound):
    """No such workspace key version, or no data key for the subject (never made, or shredded)."""

    code = "key-not-found"
    title = "Key not found"


class KeyStoreUnreadable(NexusError):
    """The key store file cannot be opened: wrong master key, corrupted, or not a key store."""

    status = 500
    code = "keystore-unreadable"
    title = "Key store unreadable"


class KeyStore(ABC):
    """Workspace key versions and per-subject wrapped data keys, by workspace."""

    @abstractmethod
    def put_workspace_key(self, key: WorkspaceKey, *, make_current: bool = True) -> None:
        """Store a key version (refusing to replace one); by default it becomes current."""

    @abstractmethod
    def get_workspace_key(self, workspace_id: str, version: int) -> WorkspaceKey:
        """One key version, or :class:`KeyNotFound`."""

    @abstractmethod
    def current_version(self, workspace_id: str) -> int | None:
        """The version new data keys are wrapped under; ``None`` before the first key."""

    @abstractmethod
    def workspace_versions(self, workspace_id: str) -> list[int]:
        """Every stored version, ascending."""

    @abstractmethod
    def delete_workspace_key(self, workspace_id: str, version: int) -> None:
        """Drop a version (see :func:`retire_workspace_key` for the safe way)."""

    @abstractmethod
    def put_wrapped_key(self, wrapped: WrappedDataKey) -> None:
        """Store (or replace) the subject's wrapped data key."""

    @abstractmethod
    def get_wrapped_key(self, workspace_id: str, subject_id: str) -> WrappedDataKey:
        """The subject's wrapped data key, or :class:`KeyNotFound`."""

    @abstractmethod
    def wrapped_keys(self, workspace_id: str) -> list[WrappedDataKey]:
        """Every wrapped data key of the workspace."""

    @abstractmethod
    def delete_subject_key(self, workspace_id: str, subject_id: str) -> bool:
        """Delete the subject's data key; ``True`` when there was one."""

    def current_workspace_key(self, workspace_id: str) -> WorkspaceKey:
        version = self.current_version(workspace_id)
        if version is None:
            raise KeyNotFound(f"workspace {workspace_id!r} has no key yet")
        return self.get_workspace_key(workspace_id, version)


@dataclass
class _Workspace:
    keys: dict[int, WorkspaceKey] = field(default_factory=dict)
    current: int | None = None
    subjects: dict[str, WrappedDataKey] = field(default_factory=dict)


class MemoryKeyStore(KeyStore):
    """Keys in process memory. Subclasses persist by overriding :meth:`_commit`."""

    def __init__(self) -> None:
        self._workspaces: dict[str, _Workspace] = {}
        self._lock = threading.RLock()

    def _commit(self) -> None:
        """Called, under the lock, after every change."""

    def _workspace(self, workspace_id: str) -> _Workspace:
        return self._workspaces.setdefault(workspace_id, _Workspace())

    def put_workspace_key(self, key: WorkspaceKey, *, make_current: bool = True) -> None:
        with self._lock:
            workspace = self._workspace(key.workspace_id)
            if key.version in workspace.keys:
                raise ValueError(
                    f"workspace {key.workspace_id!r} already has key version {key.version}"
                )
            workspace.keys[key.version] = key
            if make_current:
                workspace.current = key.version
            self._commit()

    def get_workspace_key(self, workspace_id: str, version: int) -> WorkspaceKey:
        with self._lock:
            workspace = self._workspaces.get(workspace_id)
            if workspace is None or version not in workspace.keys:
                raise KeyNotFound(f"workspace {workspace_id!r} has no key version {version}")
            return workspace.keys[version]

    def current_version(self, workspace_id: str) -> int | None:
        with self._lock:
            workspace = self._workspaces.get(workspace_id)
            return None if workspace is None else workspace.current

    def workspace_versions(self, workspace_id: str) -> list[int]:
        with self._lock:
            workspace = self._workspaces.get(workspace_id)
            return [] if workspace is None else sorted(workspace.keys)

    def delete_workspace_key(self, workspace_id: str, version: int) -> None:
        with self._lock:
            workspace = self._workspaces.get(workspace_id)
            if workspace is None or version not in workspace.keys:
                raise KeyNotFound(f"workspace {workspace_id!r} has no key version {version}")
            if workspace.current == version:
                raise ValueError(f"key version {version} is current; rotate before deleting it")
            del workspace.keys[version]
            self._commit()

    def put_wrapped_key(self, wrapped: WrappedDataKey) -> None:
        with self._lock:
            self._workspace(wrapped.workspace_id).subjects[wrapped.subject_id] = wrapped
            self._commit()

    def get_wrapped_key(self, workspace_id: str, subject_id: str) -> WrappedDataKey:
        with self._lock:
            workspace = self._workspaces.get(workspace_id)
            if workspace is None or subject_id not in workspace.subjects:
                raise KeyNotFound(
                    f"subject {subject_id!r} of workspace {workspace_id!r} has no data key"
                )
            return workspace.subjects[subject_id]

    def wrapped_keys(self, workspace_id: str) -> list[WrappedDataKey]:
        with self._lock:
            workspace = self._workspaces.get(workspace_id)
            return [] if workspace is None else list(workspace.subjects.values())

    def delete_subject_key(self, workspace_id: str, subject_id: str) -> bool:
        with self._lock:
            workspace = self._workspaces.get(workspace_id)
            if workspace is None or subject_id not in workspace.subjects:
                return False
            del workspace.subjects[subject_id]
            self._commit()
            return True


# --- the encrypted file ----------------------------------------------------------------------


def master_key_from_secret(secret: str | bytes) -> bytes:
    """The key store's master key, derived from a high-entropy secret (``NEXUS_SECRET_KEY``).

    HKDF-SHA256 (RFC 5869) is an extractor, not a password hash: the secret must already be
    random, so short ones are refused.
    """
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    if len(raw) < MIN_SECRET_BYTES:
        raise ValueError(f"the key store secret must be at least {MIN_SECRET_BYTES} bytes")
    return HKDF(
        algorithm=hashes.SHA256(),
        length=MASTER_KEY_BYTES,
        salt=b"nexus/keystore/v1",
        info=b"nexus/keystore/master-key",
    ).derive(raw)


def master_key_from_file(path: Path) -> bytes:
    """A master key kept in a file of exactly 32 raw bytes (see :func:`create_master_key_file`)."""
    raw = path.read_bytes()
    if len(raw) != MASTER_KEY_BYTES:
        raise ValueError(f"{path} does not hold a {MASTER_KEY_BYTES}-byte master key")
    return raw


def create_master_key_file(path: Path) -> bytes:
    """Write a new random master key to ``path`` (mode 0600), refusing to overwrite one."""
    key = AESGCM.generate_key(bit_length=256)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    return key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class LocalKeyStore(MemoryKeyStore):
    """A :class:`MemoryKeyStore` persisted to one encrypted file.

    File: ``b"NXKS" ‖ version (1) ‖ nonce (12) ‖ AES-256-GCM(JSON)`` with the first five bytes
    as associated data. Opening it with the wrong master key raises
    :class:`KeyStoreUnreadable`; a missing file is an empty store, created on first change.
    """

    def __init__(self, path: Path, master_key: bytes) -> None:
        super().__init__()
        if len(master_key) != MASTER_KEY_BYTES:
            raise ValueError(f"a master key is {MASTER_KEY_BYTES} bytes")
        self.path = path
        self._aead = AESGCM(master_key)
        if path.exists():
            self._workspaces = self._decode(self._open(path.read_bytes()))

    def _open(self, data: bytes) -> dict[str, Any]:
        if not data.startswith(FILE_MAGIC):
            raise KeyStoreUnreadable(f"{self.path} is not a NEXUS key store")
        if data[: len(_HEADER)] != _HEADER:
            raise KeyStoreUnreadable(
                f"{self.path} has key store format {data[len(FILE_MAGIC)]}; "
                f"this release reads {FILE_VERSION}"
            )
        nonce = data[len(_HEADER) : len(_HEADER) + _NONCE_BYTES]
        try:
            plaintext = self._aead.decrypt(nonce, data[len(_HEADER) + _NONCE_BYTES :], _HEADER)
        except (InvalidTag, ValueError) as exc:
            raise KeyStoreUnreadable(
                f"{self.path} does not open with this master key (wrong key, or corrupted)"
            ) from exc
        document: dict[str, Any] = json.loads(plaintext)
        return document

    @staticmethod
    def _decode(document: dict[str, Any]) -> dict[str, _Workspace]:
        workspaces: dict[str, _Workspace] = {}
        for workspace_id, entry in document["workspaces"].items():
            workspaces[workspace_id] = _Workspace(
                keys={
                    int(v): WorkspaceKey.from_bytes(base64.b64decode(k))
                    for v, k in entry["keys"].items()
                },
                current=entry["current"],
                subjects={
                    s: WrappedDataKey.from_bytes(base64.b64decode(w))
                    for s, w in entry["subjects"].items()
                },
            )
        return workspaces

    def _encode(self) -> dict[str, Any]:
        return {
            "workspaces": {
                workspace_id: {
                    "current": workspace.current,
                    "keys": {str(v): _b64(k.to_bytes()) for v, k in workspace.keys.items()},
                    "subjects": {s: _b64(w.to_bytes()) for s, w in workspace.subjects.items()},
                }
                for workspace_id, workspace in self._workspaces.items()
            }
        }

    def _commit(self) -> None:
        plaintext = json.dumps(self._encode(), separators=(",", ":")).encode("utf-8")
        nonce = os.urandom(_NONCE_BYTES)
        data = _HEADER + nonce + self._aead.encrypt(nonce, plaintext, _HEADER)
        directory = self.path.parent
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        # The rename itself must reach the disk, or a crash can bring back the old file.
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)


# --- the key life cycle ----------------------------------------------------------------------


def ensure_workspace_key(store: KeyStore, workspace_id: str) -> WorkspaceKey:
    """The workspace's current key, creating version 1 when it has none."""
    version = store.current_version(workspace_id)
    if version is not None:
        return store.get_workspace_key(workspace_id, version)
    key = WorkspaceKey.generate(workspace_id, version=1)
    store.put_workspace_key(key)
    return key


def get_subject_key(store: KeyStore, workspace_id: str, subject_id: str) -> DataKey:
    """The subject's data key, unwrapped with whichever key version wrapped it."""
    wrapped = store.get_wrapped_key(workspace_id, subject_id)
    return unwrap_data_key(wrapped, store.get_workspace_key(workspace_id, wrapped.key_version))


def ensure_subject_key(store: KeyStore, workspace_id: str, subject_id: str) -> DataKey:
    """The subject's data key, creating and wrapping one under the current version if needed."""
    try:
        return get_subject_key(store, workspace_id, subject_id)
    except KeyNotFound:
        pass
    workspace_key = ensure_workspace_key(store, workspace_id)
    data_key = DataKey.generate()
    store.put_wrapped_key(
        wrap_data_key(data_key, workspace_key.public_key(), subject_id=subject_id)
    )
    return data_key


def shred_subject(store: KeyStore, workspace_id: str, subject_id: str) -> bool:
    """Crypto-shred a subject: delete its data key, leaving its field ciphertexts unreadable."""
    return store.delete_subject_key(workspace_id, subject_id)


def rotate_workspace_key(store: KeyStore, workspace_id: str) -> WorkspaceKey:
    """Add the next key version and make it current; existing data keys keep working."""
    versions = store.workspace_versions(workspace_id)
    key = WorkspaceKey.generate(workspace_id, version=(max(versions) if versions else 0) + 1)
    store.put_workspace_key(key)
    return key


def rewrap_subject_keys(store: KeyStore, workspace_id: str) -> int:
    """Re-wrap every data key not under the current version; returns how many were.

    Field ciphertexts are untouched: a data key keeps its id and secret. Each key is replaced
    on its own, so readers see either the old or the new wrapping, both of which open.
    """
    current = store.current_workspace_key(workspace_id)
    moved = 0
    for wrapped in store.wrapped_keys(workspace_id):
        if wrapped.key_version == current.version:
            continue
        old_key = store.get_workspace_key(workspace_id, wrapped.key_version)
        store.put_wrapped_key(rewrap(wrapped, old_key, current.public_key()))
        moved += 1
    return moved


def retire_workspace_key(store: KeyStore, workspace_id: str, version: int) -> None:
    """Delete an old key version, refusing the current one or one a data key still needs."""
    if store.current_version(workspace_id) == version:
        raise ValueError(f"key version {version} is current; rotate before retiring it")
    in_use = sum(1 for w in store.wrapped_keys(workspace_id) if w.key_version == version)
    if in_use:
        raise ValueError(
            f"{in_use} data key(s) are still wrapped under version {version}; "
            "run rewrap_subject_keys first"
        )
    store.delete_workspace_key(workspace_id, version)
