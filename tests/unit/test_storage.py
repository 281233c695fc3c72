"""Blob keys, the filesystem blob store, spools and person-name folding."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dicomhub.domain.person_name import fold, fuzzy_key
from dicomhub.errors import IntegrityError, PayloadTooLarge
from dicomhub.services.spool import Spool, sha256_of, spool_file
from dicomhub.storage.blobs.filesystem import FilesystemBlobStore
from dicomhub.storage.blobs.keys import is_key, new_key, new_keys


def test_keys_are_random_and_opaque() -> None:
    keys = {new_key() for _ in range(1000)}
    assert len(keys) == 1000
    assert all(is_key(k) for k in keys)
    assert not is_key("../etc/passwd")
    assert not is_key("1.2.840.10008/x")


def test_batch_keys_share_one_folder() -> None:
    keys = new_keys(20)
    assert len(set(keys)) == 20
    assert len({k.rsplit("/", 1)[0] for k in keys}) == 1


def test_filesystem_store_round_trip(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    src = tmp_path / "a"
    data = bytes(range(256)) * 5000
    src.write_bytes(data)
    key = new_key()
    store.put_file(key, src)
    assert not src.exists()
    assert store.size(key) == len(data)
    assert b"".join(store.open_range(key)) == data
    assert b"".join(store.open_range(key, 1000, 5000)) == data[1000:6000]
    assert store.read_range(key, 7, 3) == data[7:10]
    assert list(store.keys()) == [key]
    with pytest.raises(IntegrityError):
        store.read_range(key, len(data) - 2, 10)
    store.delete(key)
    store.delete(key)
    assert store.size(key) is None
    with pytest.raises(IntegrityError):
        store.read_range(key, 0, 1)


def test_store_refuses_non_keys_and_collisions(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    src = tmp_path / "a"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="key"):
        store.put_file("../../evil", src)
    key = new_key()
    store.put_file(key, src)
    src.write_bytes(b"y")
    with pytest.raises(IntegrityError):
        store.put_file(key, src)


def test_spool_zeroes_preamble_and_hashes(tmp_path: Path) -> None:
    payload = b"\xff" * 100 + b"MZ" * 20 + b"DICM" + b"rest" * 1000
    spool = Spool(tmp_path, 10_000)
    for i in range(0, len(payload), 7):  # odd chunking across the preamble boundary
        spool.write(payload[i : i + 7])
    sha = spool.finish()
    stored = spool.path.read_bytes()
    assert stored == bytes(128) + payload[128:]
    assert sha == hashlib.sha256(stored).hexdigest() == sha256_of(spool.path)
    spool.discard()
    assert not spool.path.exists()


def test_spool_bounds_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 100)
    spool.write(b"a" * 100)
    with pytest.raises(PayloadTooLarge):
        spool.write(b"b")
    assert not spool.path.exists()


def test_spool_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"\x01" * 300)
    spool, sha = spool_file(src, tmp_path / "tmp", 1000)
    assert spool.path.read_bytes() == bytes(128) + b"\x01" * 172
    assert sha == hashlib.sha256(spool.path.read_bytes()).hexdigest()
    with pytest.raises(PayloadTooLarge):
        spool_file(src, tmp_path / "tmp", 299)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Doe^John", " DOE JOHN "),
        ("Müller^Jürgen^^Dr.", " MULLER JURGEN DR. "),
        ("Yamada^Tarou=山田^太郎", " YAMADA TAROU 山田 太郎 "),
        ("", None),
        (None, None),
        ("^^", None),
    ],
)
def test_fuzzy_key(name: str | None, key: str | None) -> None:
    assert fuzzy_key(name) == key


def test_fold() -> None:
    assert fold("élodie") == "ELODIE"
