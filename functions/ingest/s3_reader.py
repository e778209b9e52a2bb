"""A seekable, read-only file over an S3 object, fetched with ranged GETs.

``zipfile`` and pydicom read through it as if it were a local file; only the
blocks they touch are fetched (the central directory, then each member's header
up to its pixel data), so bytes fetched do not grow with pixel data size.

Two ways to read: the file interface (``zipfile`` reads the central directory
through it, served from pinned segments and a small block cache), and
``fetch`` for one exact range, which the member readers use from worker threads
(botocore clients are thread-safe; the counters are guarded by a lock).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_BLOCK_SIZE = 64 * 1024
DEFAULT_CACHED_BLOCKS = 32


class S3RangeReader(io.RawIOBase):
    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        size: int,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        cached_blocks: int = DEFAULT_CACHED_BLOCKS,
        version_id: str | None = None,
    ) -> None:
        super().__init__()
        self._s3 = s3
        self._bucket = bucket
        self._key = key
        self._size = size
        self._pos = 0
        self._block_size = block_size
        self._cached_blocks = cached_blocks
        self._version_id = version_id
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._segments: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes_fetched = 0

    def pin(self, start: int, data: bytes) -> None:
        """Serve reads of ``start .. start+len(data)`` from ``data`` (already fetched)."""
        self._segments[start] = data

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence: {whence}")
        if pos < 0:
            raise OSError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self._size - self._pos))
        done = 0
        while done < wanted:
            chunk = self._pinned(self._pos, wanted - done)
            if chunk is None:
                index, offset = divmod(self._pos, self._block_size)
                block = self._block(index)
                chunk = block[offset : offset + wanted - done]
            if not chunk:
                break
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
            self._pos += len(chunk)
        return done

    def _pinned(self, pos: int, length: int) -> bytes | None:
        for start, data in self._segments.items():
            if start <= pos < start + len(data):
                return data[pos - start : pos - start + length]
        return None

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is not None:
            self._blocks.move_to_end(index)
            return block
        start = index * self._block_size
        end = min(self._size, start + self._block_size) - 1
        block = self.fetch(start, end)
        self._blocks[index] = block
        if len(self._blocks) > self._cached_blocks:
            self._blocks.popitem(last=False)
        return block

    def fetch(self, start: int, end: int) -> bytes:
        """One ranged GET of bytes ``start..end`` (inclusive), uncached."""
        byte_range = f"bytes={start}-{end}"
        if self._version_id:
            response = self._s3.get_object(
                Bucket=self._bucket, Key=self._key, Range=byte_range, VersionId=self._version_id
            )
        else:
            response = self._s3.get_object(Bucket=self._bucket, Key=self._key, Range=byte_range)
        data = response["Body"].read()
        with self._lock:
            self.requests += 1
            self.bytes_fetched += len(data)
        return data
