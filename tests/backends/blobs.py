"""Backend-neutral blob access for tests that inspect or damage stored blobs.

Tests that read ``data_dir / "blobs" / key`` only work on the filesystem store; these helpers
work on every :class:`~dicomhub.storage.blobs.BlobStore` (filesystem and S3), so such tests can
run on the ``pg+s3`` backend set too.
"""

from __future__ import annotations

from dicomhub.storage.blobs import BlobStore


def blob_keys(store: BlobStore) -> set[str]:
    """Every key in the store."""
    return set(store.keys())


def blob_exists(store: BlobStore, key: str) -> bool:
    """Whether ``key`` exists."""
    return store.size(key) is not None


def read_blob(store: BlobStore, key: str) -> bytes:
    """The whole content of ``key``."""
    return b"".join(store.open_range(key))


def overwrite_blob(store: BlobStore, key: str, data: bytes) -> None:
    """Replace (or create) ``key`` with ``data``, bypassing create-only writes (to damage it)."""
    from dicomhub.storage.blobs.s3 import S3BlobStore

    if isinstance(store, S3BlobStore):
        store._client.put_object(Bucket=store.bucket, Key=store.prefix + key, Body=data)
        return
    path = store.local_path(key)
    if path is None:
        raise NotImplementedError(f"cannot overwrite blobs of {type(store).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def remove_blob(store: BlobStore, key: str) -> None:
    """Delete ``key`` behind the index's back."""
    store.delete(key)
