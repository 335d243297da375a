"""The lake: Parquet files under hive keys, on a local folder or on S3.

``LAKE_URL`` selects the store: ``file://DIR`` (default ``file://$QUANT_HOME/lake``) or
``s3://bucket/prefix``. S3 credentials, region and endpoint (MinIO, moto) come from the standard
AWS variables, which boto3 reads itself (``AWS_REGION`` is passed on explicitly: botocore only
reads ``AWS_DEFAULT_REGION``); keys and secrets never pass through this module.

Writes are atomic: readers see the previous object or the new one, never a partial file. The
object is first written under a temporary key in the same folder (hidden from listings and from
query engines, which skip names starting with a dot), then moved onto its final key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

import boto3
import botocore.config
import botocore.exceptions
import pyarrow as pa
import pyarrow.parquet as pq

from quant_core.contracts import SYMBOL_PATTERN
from quant_core.contracts.types import SOURCE_PATTERN
from quant_resources.settings import aws_region, lake_url, redact_url

_log = logging.getLogger(__name__)
# All matched with fullmatch: `$` alone would let a trailing newline into a path.
_DATASET = re.compile(r"^[a-z][a-z0-9_]*$")
_SOURCE = re.compile(SOURCE_PATTERN)
_SYMBOL = re.compile(SYMBOL_PATTERN)
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*\.parquet$")
TEMP_PREFIX = ".tmp-"


class LakeError(RuntimeError):
    """A lake operation failed; the message names the store, bucket and key, never a secret."""


def _is_temp(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)


def _temp_sibling(key: str) -> str:
    folder, _, name = key.rpartition("/")
    temp = f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name}"
    return f"{folder}/{temp}" if folder else temp


def _check_key(key: str, *, prefix: bool = False) -> str:
    """Keys are relative, slash-separated and cannot climb out of the lake; a prefix may be
    empty or end with a slash, an object key may not."""
    if not isinstance(key, str):
        raise ValueError(f"invalid lake key {key!r}: must be a string")
    if prefix and not key:
        return key
    *folders, name = key.split("/")
    bad_name = name in (".", "..") or (not prefix and not name)
    if bad_name or any(p in ("", ".", "..") for p in folders):
        raise ValueError(
            f"invalid lake {'prefix' if prefix else 'key'} {key!r}: "
            "must be a relative path without empty, '.' or '..' segments"
        )
    return key


class _Backend(Protocol):
    location: str

    def prepare(self, key: str, data: bytes) -> str: ...

    def commit(self, temp: str, key: str) -> None: ...

    def discard(self, temp: str) -> None: ...

    def open_read(self, key: str) -> BinaryIO: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, keys: list[str]) -> None: ...

    def exists(self, key: str) -> bool: ...


class _FileBackend:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = f"file://{root}"

    def _path(self, key: str) -> Path:
        return self.root / key

    def prepare(self, key: str, data: bytes) -> str:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = _temp_sibling(key)
        # os.open rather than mkstemp: mkstemp's 0600 mode would stick to the published file.
        fd = os.open(self._path(temp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as sink:
                sink.write(data)
                sink.flush()
                os.fsync(sink.fileno())
        except BaseException:
            self.discard(temp)
            raise
        return temp

    def commit(self, temp: str, key: str) -> None:
        os.replace(self._path(temp), self._path(key))

    def discard(self, temp: str) -> None:
        self._path(temp).unlink(missing_ok=True)

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise FileNotFoundError(f"lake object not found: {self.location}/{key}") from None

    def list(self, prefix: str) -> list[str]:
        # Walk only the folder the prefix points into, then match the rest as a string prefix
        # (S3 semantics: "bars/date=2024-01" matches "bars/date=2024-01-02/...").
        folder = self.root / prefix.rpartition("/")[0]
        if not folder.is_dir():
            return []
        keys = []
        for path in folder.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix) and not _is_temp(key):
                keys.append(key)
        return sorted(keys)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            # Drop folders the deletion emptied, so a replaced partition leaves no husk behind.
            for parent in path.parents:
                if parent == self.root or not parent.is_relative_to(self.root):
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


class _S3Backend:
    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.location = f"s3://{bucket}/{self.prefix}".rstrip("/")
        # Bounded retries and timeouts: a wrong endpoint should fail in seconds, not minutes.
        config = botocore.config.Config(
            connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
        )
        # botocore itself reads only AWS_DEFAULT_REGION; the project documents AWS_REGION.
        region = aws_region()
        self.client = boto3.client("s3", region_name=region, config=config)
        self.endpoint = self.client.meta.endpoint_url
        self._bucket_checked = False

    def _where(self) -> str:
        return f"bucket {self.bucket!r} at endpoint {self.endpoint}"

    @contextlib.contextmanager
    def _errors(self, action: str, key: str = "") -> Iterator[None]:
        """Translate boto errors into messages naming bucket and endpoint (boto's own messages
        never carry the secret key; ours add nothing from the credentials either)."""
        try:
            yield
        except botocore.exceptions.EndpointConnectionError:
            raise LakeError(
                f"cannot {action} {key!r}: S3 endpoint unreachable, {self._where()}"
            ) from None
        except botocore.exceptions.NoCredentialsError:
            raise LakeError(
                f"cannot {action} {key!r}: no AWS credentials (set AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY), {self._where()}"
            ) from None
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404") and key:
                raise FileNotFoundError(f"lake object not found: {self.location}/{key}") from None
            if code == "NoSuchBucket":
                raise LakeError(f"cannot {action} {key!r}: no such {self._where()}") from None
            raise LakeError(f"cannot {action} {key!r}: {code or exc}, {self._where()}") from None

    def _check_bucket(self) -> None:
        # HEAD on a missing bucket's object is a bare 404, indistinguishable from a missing key,
        # so the bucket is checked once up front to turn that into a clear error.
        if self._bucket_checked:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                raise LakeError(f"lake {self.location}: no such {self._where()}") from None
            if code in ("403", "AccessDenied"):
                raise LakeError(
                    f"lake {self.location}: access denied to {self._where()} "
                    "(check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
                ) from None
            raise LakeError(f"lake {self.location}: {code or exc}, {self._where()}") from None
        except botocore.exceptions.EndpointConnectionError:
            raise LakeError(
                f"lake {self.location}: S3 endpoint unreachable, {self._where()}"
            ) from None
        self._bucket_checked = True

    def _full(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def prepare(self, key: str, data: bytes) -> str:
        self._check_bucket()
        temp = _temp_sibling(key)
        try:
            with self._errors("write", key):
                self.client.upload_fileobj(io.BytesIO(data), self.bucket, self._full(temp))
        except BaseException:
            self.discard(temp)
            raise
        return temp

    def commit(self, temp: str, key: str) -> None:
        try:
            with self._errors("write", key):
                # S3 has no rename: a server-side copy publishes the object in one step.
                self.client.copy_object(
                    Bucket=self.bucket,
                    Key=self._full(key),
                    CopySource={"Bucket": self.bucket, "Key": self._full(temp)},
                )
        finally:
            self.discard(temp)

    def discard(self, temp: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._full(temp))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            # Best effort: the name hides a leftover from listings and query engines.
            _log.warning("could not delete temp object s3://%s/%s", self.bucket, temp)

    def open_read(self, key: str) -> BinaryIO:
        self._check_bucket()
        buffer = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 (caller closes)
        try:
            with self._errors("read", key):
                self.client.download_fileobj(self.bucket, self._full(key), buffer)
        except BaseException:
            buffer.close()
            raise
        buffer.seek(0)
        return buffer

    def list(self, prefix: str) -> list[str]:
        self._check_bucket()
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors("list", prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._full(prefix)):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    if not _is_temp(key):
                        keys.append(key)
        return sorted(keys)

    def delete(self, keys: list[str]) -> None:
        self._check_bucket()
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": self._full(k)} for k in keys[start : start + 1000]]
            with self._errors("delete", keys[start]):
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            if response.get("Errors"):
                failed = response["Errors"][0]
                raise LakeError(
                    f"cannot delete {failed.get('Key')!r}: {failed.get('Code')}, {self._where()}"
                )

    def exists(self, key: str) -> bool:
        self._check_bucket()
        try:
            with self._errors("check", key):
                self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except FileNotFoundError:
            return False
        return True


def _backend_for(url: str) -> _Backend:
    if url.startswith("file://"):
        # Everything after the scheme is the path, so relative folders (file://.quant/lake) work.
        return _FileBackend(Path(url.removeprefix("file://")).expanduser().resolve())
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket or "@" in bucket or ":" in bucket:
            # Never echo the URL here: it might carry credentials someone pasted into it.
            raise LakeError(
                "LAKE_URL must be s3://bucket/prefix with credentials in the AWS_* variables"
            )
        return _S3Backend(bucket, prefix)
    raise LakeError(f"LAKE_URL scheme must be file:// or s3://, got {url.split(':', 1)[0]!r}")


class PreparedObject:
    """An object uploaded under a temporary name, not yet visible (see ``prepare_bytes``)."""

    def __init__(self, store: _Backend, temp: str, key: str) -> None:
        self.store = store
        self.temp = temp
        self.key = key

    def commit(self) -> str:
        """Publish the object under its key; returns its full location."""
        try:
            self.store.commit(self.temp, self.key)
        except BaseException:
            self.store.discard(self.temp)
            raise
        return f"{self.store.location}/{self.key}"

    def discard(self) -> None:
        self.store.discard(self.temp)


def encode_parquet(table: pa.Table) -> bytes:
    """``table`` as the lake's Parquet bytes (zstd); encoding releases the GIL, so callers may
    encode in threads while something else runs, and publish the bytes later."""
    # Dictionary pages only for text (symbols, sessions: a few values repeated): on decimal
    # and time columns nearly every value is distinct and the attempt doubles encode time.
    text = [
        f.name
        for f in table.schema
        if pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_dictionary(f.type)
    ]
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", use_dictionary=text)
    return sink.getvalue().to_pybytes()


class LakeOperations:
    """What the lake does, shared by the plain :class:`Lake` (``quant live``, no Dagster) and
    Dagster's ``quant_resources.lake.LakeResource``: both provide ``url`` and the cache
    ``_backend`` (the store the URL names, made on first use)."""

    @property
    def resolved_url(self) -> str:
        return self.url or lake_url()

    @property
    def display_url(self) -> str:
        return self._store().location

    def _store(self) -> _Backend:
        if self._backend is None:
            self._backend = _backend_for(self.resolved_url)
        return self._backend

    @staticmethod
    def key(
        dataset: str,
        source: str,
        date: dt.date,
        symbol: str | None = None,
        part: str = "part.parquet",
    ) -> str:
        """``dataset/source=S/date=YYYY-MM-DD[/symbol=SYM]/part``. Symbols are stored upper-case
        and percent-encoded like Hive does, so ``BTC/USDT`` stays one path segment."""
        for field, value, pattern in (("dataset", dataset, _DATASET), ("source", source, _SOURCE)):
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise ValueError(f"invalid {field} {value!r}: must match {pattern.pattern}")
        if not isinstance(date, dt.date) or isinstance(date, dt.datetime):
            raise ValueError(f"invalid date {date!r}: must be a datetime.date")
        if not isinstance(part, str) or not _PART.fullmatch(part):
            raise ValueError(f"invalid part {part!r}: must match {_PART.pattern}")
        segments = [dataset, f"source={source}", f"date={date.isoformat()}"]
        if symbol is not None:
            if not isinstance(symbol, str) or not _SYMBOL.fullmatch(symbol):
                raise ValueError(f"invalid symbol {symbol!r}: must match {SYMBOL_PATTERN}")
            segments.append(f"symbol={quote(symbol.upper(), safe='.-_')}")
        return "/".join([*segments, part])

    def write_parquet(self, key: str, table: pa.Table) -> str:
        """Write ``table`` to ``key`` atomically; returns the object's full location."""
        return self.write_bytes(key, encode_parquet(table))

    def write_bytes(self, key: str, data: bytes) -> str:
        """Write raw bytes (session-log segments, manifests) to ``key`` atomically."""
        return self.prepare_bytes(key, data).commit()

    def prepare_bytes(self, key: str, data: bytes) -> PreparedObject:
        """Upload ``data`` under a hidden temporary name next to ``key``; ``commit()`` then
        publishes it in one step (a rename, or an S3 server-side copy), ``discard()`` drops
        it. The slow part (upload, fsync) can so run before the caller decides to publish."""
        store = self._store()
        if _is_temp(_check_key(key)):
            raise ValueError(f"invalid lake key {key!r}: names starting {TEMP_PREFIX!r} are temp")
        return PreparedObject(store, store.prepare(key, data), key)

    def read_bytes(self, key: str) -> bytes:
        with self._store().open_read(_check_key(key)) as source:
            return source.read()

    def read_parquet(self, key: str) -> pa.Table:
        with self._store().open_read(_check_key(key)) as source:
            return pq.read_table(source)

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys starting with ``prefix`` (a string prefix, as on S3), temp keys excluded."""
        return self._store().list(_check_key(prefix, prefix=True))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (e.g. a partition being replaced, so that symbols
        dropped from it do not linger); returns how many were deleted."""
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix (refusing to empty the lake)")
        store = self._store()
        keys = store.list(_check_key(prefix, prefix=True))
        store.delete(keys)
        return len(keys)

    def exists(self, key: str) -> bool:
        return self._store().exists(_check_key(key))


class Lake(LakeOperations):
    """The Parquet lake without Dagster. ``url`` defaults to ``LAKE_URL``, else
    ``file://$QUANT_HOME/lake``."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self._backend: _Backend | None = None

    def __repr__(self) -> str:
        return f"Lake(url={redact_url(self.url) if self.url else None!r})"
