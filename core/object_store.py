"""A folder-like prefix of an S3 bucket (`s3://bucket/prefix`), for what several machines share
when they share no disk (deploy/README.md, "What a worker shares").

Every object is written by one PUT, which S3 makes visible whole or not at all: a reader, or a
writer killed mid-upload, never leaves or sees half an object (the object-storage counterpart of
`core.atomic_write`). `folder_at` builds boto3's default client, which resolves credentials,
region and endpoint from the usual `AWS_*` variables as dagster-aws's `S3Resource` does for the IO
manager.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# DeleteObjects takes at most this many keys per request.
_DELETE_BATCH = 1000


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); the prefix has no trailing slash."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, prefix.strip("/")


@functools.cache
def folder_at(uri: str) -> ObjectFolder:
    """The folder at `s3://bucket/prefix`, with one boto3 client per process and URI."""
    import boto3

    return ObjectFolder.from_uri(uri, boto3.client("s3"))


@dataclass(frozen=True)
class ObjectFolder:
    """The objects under `prefix` in `bucket`, named relative to it (`a/b.csv`)."""

    client: Any  # a boto3 S3 client
    bucket: str
    prefix: str

    @classmethod
    def from_uri(cls, uri: str, client: Any) -> ObjectFolder:
        bucket, prefix = split_uri(uri)
        return cls(client, bucket, prefix)

    def child(self, *names: str) -> ObjectFolder:
        return ObjectFolder(self.client, self.bucket, self.key(*names))

    def key(self, *names: str) -> str:
        parts = [self.prefix, *names]
        if any(part in ("..", ".") for name in names for part in name.split("/")):
            raise ValueError(f"object name {'/'.join(names)!r} would leave {self.uri()}")
        return "/".join(part.strip("/") for part in parts if part.strip("/"))

    def uri(self, *names: str) -> str:
        return f"s3://{self.bucket}/{self.key(*names)}"

    def put(self, name: str, data: bytes) -> str:
        """Write object `name` (one PUT: all of it or nothing); returns its URI."""
        self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)
        return self.uri(name)

    def get(self, name: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
        except self.client.exceptions.NoSuchKey:
            return None
        return response["Body"].read()

    def read_or_discard(self, name: str, read: Callable[[io.BytesIO], T], warn: Callable[[str], None]) -> T | None:
        """`read` of a disposable object (a cache, a checkpoint batch), or None when it is absent;
        one that cannot be read is named through `warn` and deleted, so the caller recomputes it
        (`core.disposable_cache.read_or_discard` on disk)."""
        data = self.get(name)
        if data is None:
            return None
        try:
            return read(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 (whatever the reader raises, the object is not usable)
            warn(
                f"discarded the unreadable cache {self.uri(name)} ({type(exc).__name__}: {str(exc)[:200]}); it is computed again"
            )
            self.delete([name])
            return None

    def copy(self, source: str, target: str) -> None:
        """Copy within the bucket, server side (one object written whole, like `put`)."""
        self.client.copy_object(
            Bucket=self.bucket, Key=self.key(target), CopySource={"Bucket": self.bucket, "Key": self.key(source)}
        )

    def names(self, start: str = "") -> list[str]:
        """The names of every object under this folder that begin with `start`, sorted."""
        return sorted(self.modified_times(start))

    def modified_times(self, start: str = "") -> dict[str, float]:
        """{name: last-modified time (epoch seconds)} of every object under this folder that begins with `start`."""
        base = self.key() + "/" if self.key() else ""
        found: dict[str, float] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + start):
            found.update(
                (item["Key"].removeprefix(base), item["LastModified"].timestamp()) for item in page.get("Contents", [])
            )
        return found

    def delete(self, names: Iterable[str]) -> None:
        """Remove these objects (absent ones are no error)."""
        keys = [{"Key": self.key(name)} for name in names]
        for start in range(0, len(keys), _DELETE_BATCH):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[start : start + _DELETE_BATCH]})
