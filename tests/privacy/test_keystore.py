"""Key stores (one contract for every implementation), the encrypted file and the key life cycle."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from nexus.privacy.crypto import (
    FieldContext,
    InvalidCiphertext,
    WorkspaceKey,
    decrypt_text,
    encrypt_text,
)
from nexus.privacy.keystore import (
    KeyNotFound,
    KeyStore,
    KeyStoreUnreadable,
    LocalKeyStore,
    MemoryKeyStore,
    create_master_key_file,
    ensure_subject_key,
    ensure_workspace_key,
    get_subject_key,
    master_key_from_file,
    master_key_from_secret,
    retire_workspace_key,
    rewrap_subject_keys,
    rotate_workspace_key,
    shred_subject,
)

SECRET = "a-random-secret-of-at-least-thirty-two-characters"
MASTER = master_key_from_secret(SECRET)
WS = "ws-1"


def where(row_id: str) -> FieldContext:
    return FieldContext(WS, "people", "email", row_id)


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> KeyStore:
    if request.param == "memory":
        return MemoryKeyStore()
    return LocalKeyStore(tmp_path / "keys.nxks", MASTER)


# --- the contract, for every implementation --------------------------------------------------


def test_empty_store_has_no_keys(store: KeyStore) -> None:
    assert store.current_version(WS) is None
    assert store.workspace_versions(WS) == []
    assert store.wrapped_keys(WS) == []
    with pytest.raises(KeyNotFound):
        store.current_workspace_key(WS)
    with pytest.raises(KeyNotFound):
        store.get_workspace_key(WS, 1)
    with pytest.raises(KeyNotFound):
        store.get_wrapped_key(WS, "visitor-1")


def test_workspace_key_versions_are_kept_and_the_latest_is_current(store: KeyStore) -> None:
    first = ensure_workspace_key(store, WS)
    assert ensure_workspace_key(store, WS) == first
    second = rotate_workspace_key(store, WS)
    assert (first.version, second.version) == (1, 2)
    assert store.workspace_versions(WS) == [1, 2]
    assert store.current_version(WS) == 2
    assert store.get_workspace_key(WS, 1) == first


def test_a_key_version_is_never_replaced(store: KeyStore) -> None:
    ensure_workspace_key(store, WS)
    with pytest.raises(ValueError, match="already has key version 1"):
        store.put_workspace_key(WorkspaceKey.generate(WS, version=1))


def test_subject_key_is_created_once_and_reopened(store: KeyStore) -> None:
    created = ensure_subject_key(store, WS, "visitor-1")
    assert ensure_subject_key(store, WS, "visitor-1") == created
    assert get_subject_key(store, WS, "visitor-1") == created
    assert ensure_subject_key(store, WS, "visitor-2") != created


def test_workspaces_are_separate(store: KeyStore) -> None:
    ensure_subject_key(store, WS, "visitor-1")
    assert store.current_version("ws-2") is None
    with pytest.raises(KeyNotFound):
        get_subject_key(store, "ws-2", "visitor-1")


def test_shredding_makes_a_subjects_fields_unreadable(store: KeyStore) -> None:
    key = ensure_subject_key(store, WS, "visitor-1")
    token = encrypt_text(key, "ada@example.com", where("row-1"))
    other = ensure_subject_key(store, WS, "visitor-2")
    other_token = encrypt_text(other, "bob@example.com", where("row-2"))

    assert shred_subject(store, WS, "visitor-1") is True
    assert shred_subject(store, WS, "visitor-1") is False

    with pytest.raises(KeyNotFound):
        get_subject_key(store, WS, "visitor-1")
    # A new key for the same subject is a different key: the old fields stay noise.
    fresh = ensure_subject_key(store, WS, "visitor-1")
    with pytest.raises(InvalidCiphertext):
        decrypt_text(fresh, token, where("row-1"))
    # Nobody else is affected.
    assert decrypt_text(get_subject_key(store, WS, "visitor-2"), other_token, where("row-2")) == (
        "bob@example.com"
    )


def test_rotation_keeps_old_data_readable_and_rewrap_moves_it(store: KeyStore) -> None:
    old_key = ensure_subject_key(store, WS, "visitor-1")
    token = encrypt_text(old_key, "ada@example.com", where("row-1"))

    rotate_workspace_key(store, WS)
    # Zero downtime: before any rewrap, the subject key opens with version 1.
    assert store.get_wrapped_key(WS, "visitor-1").key_version == 1
    assert decrypt_text(get_subject_key(store, WS, "visitor-1"), token, where("row-1")) == (
        "ada@example.com"
    )
    # New subjects go under the new version straight away.
    ensure_subject_key(store, WS, "visitor-2")
    assert store.get_wrapped_key(WS, "visitor-2").key_version == 2

    assert rewrap_subject_keys(store, WS) == 1
    assert rewrap_subject_keys(store, WS) == 0
    assert store.get_wrapped_key(WS, "visitor-1").key_version == 2
    assert decrypt_text(get_subject_key(store, WS, "visitor-1"), token, where("row-1")) == (
        "ada@example.com"
    )


def test_retiring_a_version_waits_for_rewrap(store: KeyStore) -> None:
    ensure_subject_key(store, WS, "visitor-1")
    rotate_workspace_key(store, WS)
    with pytest.raises(ValueError, match="still wrapped under version 1"):
        retire_workspace_key(store, WS, 1)
    rewrap_subject_keys(store, WS)
    retire_workspace_key(store, WS, 1)
    assert store.workspace_versions(WS) == [2]
    assert get_subject_key(store, WS, "visitor-1") is not None
    with pytest.raises(ValueError, match="current"):
        retire_workspace_key(store, WS, 2)


# --- the encrypted file ----------------------------------------------------------------------


def test_local_store_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "keys.nxks"
    first = LocalKeyStore(path, MASTER)
    key = ensure_subject_key(first, WS, "visitor-1")
    rotate_workspace_key(first, WS)
    token = encrypt_text(key, "ada@example.com", where("row-1"))

    second = LocalKeyStore(path, master_key_from_secret(SECRET))

    assert second.workspace_versions(WS) == [1, 2]
    assert second.current_version(WS) == 2
    assert decrypt_text(get_subject_key(second, WS, "visitor-1"), token, where("row-1")) == (
        "ada@example.com"
    )


def test_shredding_persists(tmp_path: Path) -> None:
    path = tmp_path / "keys.nxks"
    ensure_subject_key(LocalKeyStore(path, MASTER), WS, "visitor-1")
    shred_subject(LocalKeyStore(path, MASTER), WS, "visitor-1")
    with pytest.raises(KeyNotFound):
        get_subject_key(LocalKeyStore(path, MASTER), WS, "visitor-1")


def test_local_store_file_is_private_and_holds_no_key_in_the_clear(tmp_path: Path) -> None:
    path = tmp_path / "keys.nxks"
    store = LocalKeyStore(path, MASTER)
    workspace_key = ensure_workspace_key(store, WS)
    data_key = ensure_subject_key(store, WS, "visitor-1")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    assert data.startswith(b"NXKS\x01")
    for secret in (workspace_key.mlkem_seed, workspace_key.x25519_private, data_key.secret):
        assert secret not in data
    assert b"visitor-1" not in data
    assert [p.name for p in tmp_path.iterdir()] == ["keys.nxks"]  # no temporary files left


def test_wrong_master_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.nxks"
    ensure_workspace_key(LocalKeyStore(path, MASTER), WS)
    wrong = master_key_from_secret("another-random-secret-of-thirty-two-chars!")
    with pytest.raises(KeyStoreUnreadable, match="does not open with this master key"):
        LocalKeyStore(path, wrong)


def test_corrupted_or_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.nxks"
    ensure_workspace_key(LocalKeyStore(path, MASTER), WS)
    data = path.read_bytes()

    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(KeyStoreUnreadable):
        LocalKeyStore(path, MASTER)
    path.write_bytes(b"NXKS\x02" + data[5:])
    with pytest.raises(KeyStoreUnreadable, match="format 2"):
        LocalKeyStore(path, MASTER)
    path.write_bytes(b'{"workspaces": {}}')
    with pytest.raises(KeyStoreUnreadable, match="not a NEXUS key store"):
        LocalKeyStore(path, MASTER)


def test_failed_write_leaves_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.nxks"
    store = LocalKeyStore(path, MASTER)
    ensure_subject_key(store, WS, "visitor-1")
    before = path.read_bytes()

    def fail(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        ensure_subject_key(store, WS, "visitor-2")
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keys.nxks"]
    with pytest.raises(KeyNotFound):
        get_subject_key(LocalKeyStore(path, MASTER), WS, "visitor-2")


@pytest.mark.parametrize("make", [lambda: "too short", lambda: b"\x00" * 31])
def test_short_secrets_are_refused(make: Callable[[], str | bytes]) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        master_key_from_secret(make())


def test_master_key_file_is_created_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    key = create_master_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert master_key_from_file(path) == key
    with pytest.raises(FileExistsError):
        create_master_key_file(path)
    (tmp_path / "bad.key").write_bytes(b"short")
    with pytest.raises(ValueError, match="32-byte master key"):
        master_key_from_file(tmp_path / "bad.key")


def test_master_key_derivation_is_deterministic_and_secret_dependent() -> None:
    assert master_key_from_secret(SECRET) == MASTER
    assert master_key_from_secret(SECRET.encode()) == MASTER
    assert master_key_from_secret(SECRET + "!") != MASTER
