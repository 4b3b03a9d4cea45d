"""Object storage for photos and model weights: S3 through boto3, or a local folder."""

import hashlib
import io
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse
from urllib.request import url2pathname

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from db.settings import DbSettings

logger = logging.getLogger(__name__)

S3_CONNECT_TIMEOUT_S = 5
S3_READ_TIMEOUT_S = 60
S3_MAX_ATTEMPTS = 5
"""Attempts per S3 call, with botocore's standard exponential backoff; the
standard `AWS_MAX_ATTEMPTS` variable overrides it."""


class ObjectNotFound(KeyError):
    """The store has no object under the requested key."""


class ObjectStore(Protocol):
    """Bytes under string keys."""

    url: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...


class LocalStore:
    """Objects as files under one folder; the embedded mode's store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"object key {key!r} points outside the store")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)

        # Write then rename, so a reader never sees half an object.
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as file:
            file.write(data)
        os.replace(file.name, path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """Objects in an S3-compatible bucket, under an optional key prefix."""

    def __init__(self, bucket: str, prefix: str = "", client=None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = client or create_s3_client()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
                raise ObjectNotFound(key) from None
            raise
        return response["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


def create_s3_client():
    """Create a boto3 S3 client; `AWS_ENDPOINT_URL` selects MinIO or another store."""
    config = Config(
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_READ_TIMEOUT_S,
        retries={"max_attempts": _max_attempts(), "mode": "standard"},
    )
    return boto3.client("s3", config=config)


def _max_attempts() -> int:
    """Return the attempts per S3 call: `AWS_MAX_ATTEMPTS`, or the default."""
    raw = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    if not raw:
        return S3_MAX_ATTEMPTS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"AWS_MAX_ATTEMPTS={raw!r} is not a positive integer; unset it or "
            f"set a count such as {S3_MAX_ATTEMPTS}"
        )
    return int(raw)


def create_store(settings: DbSettings) -> ObjectStore:
    """Create the store that `HSCODE_STORAGE_URL` names."""
    parsed = urlparse(settings.storage_url)
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, parsed.path)
    return LocalStore(Path(url2pathname(parsed.path)))


def photo_key(data: bytes, extension: str) -> str:
    """Return the content-addressed key of a photo: its SHA-256, never user text."""
    digest = hashlib.sha256(data).hexdigest()
    return f"photos/sha256/{digest[:2]}/{digest}{extension}"


def put_folder_archive(store: ObjectStore, key: str, folder: Path) -> int:
    """Store a folder as one uncompressed tar object; return its size in bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.add(path, arcname=str(path.relative_to(folder)))
    data = buffer.getvalue()
    store.put(key, data)
    return len(data)


def get_folder_archive(store: ObjectStore, key: str, folder: Path) -> None:
    """Extract a tar object written by `put_folder_archive` into a new folder."""
    data = store.get(key)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
        archive.extractall(partial, filter="data")

    # Rename last, so a folder that exists is always complete.
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
