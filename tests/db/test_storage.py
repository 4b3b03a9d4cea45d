"""Tests for the local-folder and S3 object stores in db.storage."""

import io
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from db.settings import DbSettings, load_db_settings
from db.storage import (
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    create_store,
    get_folder_archive,
    photo_key,
    put_folder_archive,
)
from tests.services import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, S3Server

ALL_BYTES = bytes(range(256)) * 4


@pytest.fixture
def s3_env(
    s3_server: S3Server,
    storage_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Point boto3 and the storage settings at the moto bucket."""
    env = {
        "HSCODE_STORAGE_URL": f"s3://{storage_bucket}",
        "HSCODE_DATA_DIR": str(tmp_path / "data"),
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture(params=["local", "s3", "s3-prefix"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """Yield an empty store of each kind; S3 ones get a fresh key prefix."""
    if request.param == "local":
        yield LocalStore(tmp_path / "objects")
        return

    env = request.getfixturevalue("s3_env")
    prefix = f"/{uuid.uuid4().hex[:12]}" if request.param == "s3-prefix" else ""
    url = f"{env['HSCODE_STORAGE_URL']}{prefix}"
    yield create_store(load_db_settings({**env, "HSCODE_STORAGE_URL": url}))


def test_store_put_get_round_trip(store: ObjectStore) -> None:
    key = f"weights/{uuid.uuid4().hex}/model.safetensors"

    store.put(key, ALL_BYTES)

    assert store.get(key) == ALL_BYTES


def test_store_put_overwrites(store: ObjectStore) -> None:
    key = f"notes/{uuid.uuid4().hex}.txt"
    store.put(key, b"first")

    store.put(key, b"second")

    assert store.get(key) == b"second"


def test_store_put_empty_object(store: ObjectStore) -> None:
    key = f"empty/{uuid.uuid4().hex}"

    store.put(key, b"")

    assert store.get(key) == b""


def test_store_exists(store: ObjectStore) -> None:
    key = f"exists/{uuid.uuid4().hex}"

    assert not store.exists(key)
    store.put(key, b"x")
    assert store.exists(key)


def test_store_delete(store: ObjectStore) -> None:
    key = f"delete/{uuid.uuid4().hex}"
    store.put(key, b"x")

    store.delete(key)

    assert not store.exists(key)


def test_store_delete_missing_is_silent(store: ObjectStore) -> None:
    store.delete(f"never/{uuid.uuid4().hex}")


def test_store_get_missing_raises(store: ObjectStore) -> None:
    key = f"missing/{uuid.uuid4().hex}"

    with pytest.raises(ObjectNotFound) as raised:
        store.get(key)

    assert raised.value.args == (key,)


def test_object_not_found_is_key_error() -> None:
    assert issubclass(ObjectNotFound, KeyError)


def test_store_get_deleted_raises(store: ObjectStore) -> None:
    key = f"gone/{uuid.uuid4().hex}"
    store.put(key, b"x")
    store.delete(key)

    with pytest.raises(ObjectNotFound):
        store.get(key)


def test_local_store_writes_under_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)

    store.put("a/b/c.bin", b"data")

    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"data"
    assert store.url == tmp_path.as_uri()


def test_local_store_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)

    store.put("a/c.bin", b"one")
    store.put("a/c.bin", b"two")

    assert [path.name for path in (tmp_path / "a").iterdir()] == ["c.bin"]


@pytest.mark.parametrize(
    "key", ["../escape.bin", "a/../../escape.bin", "/etc/passwd", "/tmp/x"]
)
def test_local_store_rejects_escaping_key(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "objects")

    for operation in (
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(ValueError, match="points outside the store"):
            operation()

    assert not (tmp_path / "escape.bin").exists()


def test_local_store_rejects_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    store = LocalStore(root)

    with pytest.raises(ValueError, match="points outside the store"):
        store.put("link/file.bin", b"x")

    assert list(outside.iterdir()) == []


def test_s3_store_prefix_in_bucket(
    s3_env: dict[str, str], s3_server: S3Server, storage_bucket: str
) -> None:
    prefix = uuid.uuid4().hex[:12]
    store = S3Store(storage_bucket, f"/{prefix}/")

    store.put("k/v.bin", b"x")
    stored = s3_server.client().get_object(
        Bucket=storage_bucket, Key=f"{prefix}/k/v.bin"
    )

    assert stored["Body"].read() == b"x"
    assert store.url == f"s3://{storage_bucket}/{prefix}"


def test_s3_store_without_prefix_url(s3_env: dict[str, str]) -> None:
    assert S3Store("bucket").url == "s3://bucket"


def test_s3_store_missing_bucket_raises(s3_env: dict[str, str]) -> None:
    store = S3Store(f"no-such-bucket-{uuid.uuid4().hex[:8]}")

    with pytest.raises(ClientError, match="NoSuchBucket"):
        store.get("key")


def test_create_store_local_from_file_url(tmp_path: Path) -> None:
    root = tmp_path / "my objects"
    settings = DbSettings("sqlite://", root.as_uri(), tmp_path)

    store = create_store(settings)

    assert isinstance(store, LocalStore)
    assert store.root == root


def test_create_store_embedded_default(embedded_env: Path) -> None:
    store = create_store(load_db_settings())

    assert isinstance(store, LocalStore)
    assert store.root == embedded_env / "objects"


def test_create_store_s3_with_prefix(s3_env: dict[str, str]) -> None:
    settings = load_db_settings({**s3_env, "HSCODE_STORAGE_URL": "s3://bkt/a/b/"})

    store = create_store(settings)

    assert isinstance(store, S3Store)
    assert store.bucket == "bkt"
    assert store.prefix == "a/b"


def test_photo_key_is_sha256() -> None:
    key = photo_key(b"abc", ".jpg")

    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert key == f"photos/sha256/ba/{digest}.jpg"


def make_folder(folder: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"fusion": "late"}',
        "weights/model.safetensors": ALL_BYTES,
        "weights/deep/nested/empty.bin": b"",
        "tokenizer/vocab 한글.txt": "토큰\n".encode(),
    }
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def read_folder(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


def test_folder_archive_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    files = make_folder(tmp_path / "source")
    key = f"models/{uuid.uuid4().hex}.tar"

    size = put_folder_archive(store, key, tmp_path / "source")
    get_folder_archive(store, key, tmp_path / "restored")

    assert read_folder(tmp_path / "restored") == files
    assert size == len(store.get(key))


def test_folder_archive_replaces_folder(store: ObjectStore, tmp_path: Path) -> None:
    files = make_folder(tmp_path / "source")
    key = f"models/{uuid.uuid4().hex}.tar"
    put_folder_archive(store, key, tmp_path / "source")
    target = tmp_path / "restored"
    target.mkdir()
    (target / "stale.bin").write_bytes(b"old")

    get_folder_archive(store, key, target)

    assert read_folder(target) == files
    assert not (tmp_path / "restored.partial").exists()


def test_folder_archive_missing_keeps_folder(
    store: ObjectStore, tmp_path: Path
) -> None:
    target = tmp_path / "restored"
    target.mkdir()
    (target / "kept.bin").write_bytes(b"kept")

    with pytest.raises(ObjectNotFound):
        get_folder_archive(store, f"models/{uuid.uuid4().hex}.tar", target)

    assert (target / "kept.bin").read_bytes() == b"kept"


def test_folder_archive_rejects_escaping_member(
    store: ObjectStore, tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        member = tarfile.TarInfo("../../escaped.txt")
        member.size = 3
        archive.addfile(member, io.BytesIO(b"bad"))
    key = f"models/{uuid.uuid4().hex}.tar"
    store.put(key, buffer.getvalue())
    target = tmp_path / "deep" / "restored"
    target.parent.mkdir()

    with pytest.raises(tarfile.FilterError):
        get_folder_archive(store, key, target)

    assert not (tmp_path / "escaped.txt").exists()
    assert not target.exists()
