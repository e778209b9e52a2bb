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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import urllib3
from botocore.httpsession import get_cert_path

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Lambda runs at most 15 minutes; a presigned URL outlives the invocation.
PRESIGNED_URL_SECONDS = 900
DEFAULT_BLOCK_SIZE = 64 * 1024


class S3ReadError(OSError):
    """A ranged GET failed after retries."""


class PresignedRangeFetcher:
    """Ranged GETs of one object through a single presigned URL and a urllib3 pool.

    botocore spends ~1.5 ms of CPU on every request (signing, hooks, parsing);
    thousands of small ranged GETs per part make that the largest cost after
    parsing. The URL is signed once (``Range`` is not a signed header), then each
    GET is a plain HTTP request (~0.2 ms). Retries with backoff on connection
    errors, 500/502/503 (SlowDown)/504.
    """

    def __init__(self, s3: S3Client, bucket: str, key: str, version_id: str | None, pool_size: int) -> None:
        params = {"Bucket": bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        self._url = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGNED_URL_SECONDS)
        self._http = urllib3.PoolManager(
            maxsize=max(1, pool_size),
            block=True,
            ca_certs=get_cert_path(True),
            retries=urllib3.Retry(
                total=5, backoff_factor=0.1, status_forcelist=(500, 502, 503, 504), allowed_methods=["GET"]
            ),
            timeout=urllib3.Timeout(connect=5, read=30),
        )

    def __call__(self, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (inclusive) of the object by one ranged GET (HTTP ``Range``).

        Raises S3ReadError when the request fails or the answer is not 206 Partial Content.
        """
        try:
            response = self._http.request("GET", self._url, headers={"Range": f"bytes={start}-{end}"})
        except urllib3.exceptions.HTTPError as exc:
            raise S3ReadError(f"ranged GET failed: {type(exc).__name__}") from exc
        if response.status != 206:
            # 200 would be the whole object: never read that by accident.
            raise S3ReadError(f"ranged GET answered HTTP {response.status}")
        return bytes(response.data)


DEFAULT_CACHED_BLOCKS = 32


class SeekableReader(io.RawIOBase):
    """Read-only, seekable raw stream of a known length; subclasses implement reading."""

    _pos = 0

    def _length(self) -> int:
        raise NotImplementedError

    def readable(self) -> bool:
        """Always True: the reader reads."""
        return True

    def seekable(self) -> bool:
        """Always True: any position can be read."""
        return True

    def tell(self) -> int:
        """The current position in bytes."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` relative to ``whence`` (io.SEEK_SET, SEEK_CUR, SEEK_END); returns the position.

        Raises ValueError for another ``whence`` and OSError for a negative position.
        """
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._length() + offset
        else:
            raise ValueError(f"invalid whence: {whence}")
        if pos < 0:
            raise OSError("negative seek position")
        self._pos = pos
        return pos


class S3RangeReader(SeekableReader):
    """A seekable binary file over one S3 object of ``size`` bytes, read by ranged GETs.

    Reads go through blocks of ``block_size`` bytes, the last ``cached_blocks`` of them kept;
    ``fetcher`` replaces GetObject (for example a PresignedRangeFetcher). Raises S3ReadError.
    """

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
        fetcher: Callable[[int, int], bytes] | None = None,
    ) -> None:
        super().__init__()
        self._fetcher = fetcher
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
        """The object's size in bytes."""
        return self._size

    def _length(self) -> int:
        return self._size

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the current position; returns the number of bytes (0 at the end)."""
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

    def pinned_range(self, start: int, end: int) -> bytes | None:
        """Bytes ``start..end`` (inclusive) when one pinned segment already holds them all."""
        for seg_start, data in self._segments.items():
            if seg_start <= start and end < seg_start + len(data):
                return data[start - seg_start : end - seg_start + 1]
        return None

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
        if self._fetcher is not None:
            data = self._fetcher(start, end)
            with self._lock:
                self.requests += 1
                self.bytes_fetched += len(data)
            return data
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
