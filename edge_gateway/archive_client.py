"""Read access to the cloud archive from the edge box: the index (DynamoDB) and the part zips (S3).

The gateway uses the query function's own data-access code (``query.store``,
``query.search``, ``query.objects``), with its own AWS credentials, rather than
QIDO-RS/WADO-RS over HTTPS: the README's "Query/retrieve from the edge box"
section gives the reasons. Every read is restricted to the configured sites, the
same partition rule the API applies to a token's ``sites`` claim.

Errors: ``query.errors.StoreError`` when DynamoDB or S3 cannot be read,
``query.errors.NotFound`` when an indexed object is missing from the bucket.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from common import keys
from common.zip_members import STORED, MemberLocation
from query.objects import Objects
from query.search import StudyFilter, find_studies
from query.store import IndexStore, Item

from edge_gateway.retrieve_cache import RetrieveCache
from edge_gateway.retrieve_sender import Retrieved

CACHE_FOLDER = "retrieve-cache"

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

    from edge_gateway.config import GatewayConfig

# botocore's DEBUG records carry whole response bodies: index items hold patient names and IDs.
# Whatever log_level says, this process never writes them.
logging.getLogger("botocore").setLevel(max(logging.INFO, logging.getLogger("botocore").level))

_RETRIES = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30)
# Retrieve reads: adjacent STORED members of one part come with one ranged GET of at most RUN_BYTES
# (members of a part are written one after the other, so a series part is a few GETs, not one per
# instance); up to PREFETCH_BYTES are read ahead of the C-STORE sub-operations by FETCH_WORKERS threads.
RUN_BYTES = 16 * 1024 * 1024
MAX_GAP = 64 * 1024
PREFETCH_BYTES = 64 * 1024 * 1024
FETCH_WORKERS = 3

Fetched = tuple[Item, "Retrieved | Exception"]


@dataclass
class _Unit:
    """One read of the fetch plan: a cached file, a run of adjacent members, or one member."""

    items: list[Item]
    cached: Path | None = None
    key: str = ""
    start: int = 0
    end: int = -1  # inclusive; >= start for a run
    locations: list[MemberLocation] = field(default_factory=list)

    @property
    def size(self) -> int:
        if self.end >= self.start:
            return self.end - self.start + 1
        return sum(int(i.get("member_size") or 0) for i in self.items) if not self.cached else 0


class Archive:
    """The index and the bucket, seen through the sites this gateway answers for."""

    def __init__(
        self,
        store: IndexStore,
        s3: Callable[[], S3Client],
        bucket: str,
        sites: tuple[str, ...],
        cache: RetrieveCache | None = None,
    ) -> None:
        self.store = store
        self.objects = Objects(s3, bucket)
        self.sites = sites
        self.cache = cache
        self._s3_factory = s3
        self._bucket = bucket

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Archive:
        """Clients from the standard AWS credential chain, pointed at ``endpoint_url`` when set."""
        endpoint = config.endpoint_url or None
        dynamodb: DynamoDBClient = boto3.client(
            "dynamodb", region_name=config.region, endpoint_url=endpoint, config=_RETRIES
        )

        def s3() -> S3Client:
            client: S3Client = boto3.client(
                "s3", region_name=config.region, endpoint_url=endpoint, config=_RETRIES
            )
            return client

        sites = config.query_sites or (config.gateway_id,)
        cache = None
        if config.retrieve_cache_bytes:
            cache = RetrieveCache(config.spool_dir.parent / CACHE_FOLDER, config.retrieve_cache_bytes)
        return cls(IndexStore(dynamodb, config.table_name), functools.cache(s3), config.bucket, sites, cache)

    def studies(self, flt: StudyFilter) -> Iterator[Item]:
        """Study items matching the filter, in the configured sites, as DynamoDB pages arrive."""
        return find_studies(self.store, self.sites, flt)

    def study(self, study_uid: str) -> Item | None:
        """The study item if exactly one configured site holds this UID (sites are partitions:
        the same UID in two sites is two studies, never merged), else None."""
        found = self.store.study_in_sites(list(self.sites), study_uid)
        return found[0] if len(found) == 1 else None

    def sites_holding(self, study_uid: str) -> int:
        """How many of the configured sites hold a study with this UID (one BatchGetItem)."""
        if len(self.sites) < 2:
            return 1
        return len(self.store.study_in_sites(list(self.sites), study_uid))

    def series(self, study: Item) -> Iterator[Item]:
        """Series items of a study item (in the study's own site)."""
        return self.store.study_children(study, "SERIES#")

    def instances(self, study: Item, series_uid: str | None = None) -> Iterator[Item]:
        """Instance items of a study item, of one series or all."""
        return self.store.study_children(study, keys.instance_prefix(series_uid))

    def instance(self, site: str, study_uid: str, series_uid: str, sop_uid: str) -> Item | None:
        """The instance item of one site, or None when that site has not indexed it."""
        return self.store.get(keys.study_pk(site, study_uid), keys.instance_sk(series_uid, sop_uid))

    def instance_bytes(self, instance: Item) -> bytes:
        """Part 10 bytes of an indexed instance: from the retrieve cache, else one ranged GET of its
        zip member (then cached)."""
        sop_uid, fingerprint = str(instance.get("sop_uid", "")), str(instance.get("fingerprint", ""))
        if self.cache is not None:
            cached = self.cache.get(sop_uid, fingerprint)
            if cached is not None:
                return cached
        data = self.objects.instance_bytes(instance)
        if self.cache is not None:
            self.cache.put(sop_uid, fingerprint, data)
        return data

    def fetch(self, instances: list[Item]) -> Generator[Fetched, None, None]:
        """(item, Retrieved) per instance, in the given order, read ahead of the caller.

        Cached instances come as their cache file; adjacent STORED members of one part as one
        ranged GET (then cached); others one member read each. A read that fails gives
        (item, the exception) for the instances it covered. Closing the generator (C-CANCEL,
        association gone) cancels the reads not started. Memory: at most ``PREFETCH_BYTES``
        read ahead plus one run.
        """
        units = iter(self._plan(instances))
        pool = ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="retrieve-fetch")
        pending: deque[tuple[Future[list[Fetched]], int]] = deque()
        ahead = 0
        try:
            while True:
                while not pending or ahead < PREFETCH_BYTES:
                    unit = next(units, None)
                    if unit is None:
                        break
                    pending.append((pool.submit(self._read_unit, unit), unit.size))
                    ahead += unit.size
                if not pending:
                    return
                future, size = pending.popleft()
                ahead -= size
                yield from future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _plan(self, instances: list[Item]) -> list[_Unit]:
        units: list[_Unit] = []
        run: _Unit | None = None
        for item in instances:
            cached = None
            if self.cache is not None:
                cached = self.cache.path(str(item.get("sop_uid", "")), str(item.get("fingerprint", "")))
            if cached is not None:
                units.append(_Unit([item], cached=cached))
                run = None
                continue
            try:
                location = MemberLocation.of_item(item)
            except (KeyError, ValueError, TypeError):
                location = None
            if (
                location is None
                or location.compress_type != STORED
                or location.data_offset is None
                or location.compressed_size is None
                or location.compressed_size > RUN_BYTES
            ):
                units.append(_Unit([item]))
                run = None
                continue
            start, end = location.data_offset, location.data_offset + location.compressed_size - 1
            if (
                run is None
                or run.key != location.object_key
                or start <= run.end
                or start - run.end > MAX_GAP
                or end - run.start >= RUN_BYTES
            ):
                run = _Unit([], key=location.object_key, start=start, end=end)
                units.append(run)
            run.items.append(item)
            run.locations.append(location)
            run.end = end
        return units

    def _read_unit(self, unit: _Unit) -> list[Fetched]:
        if not unit.locations:
            item = unit.items[0]
            try:
                if unit.cached is not None:
                    return [(item, _retrieved(item, path=unit.cached))]
                return [(item, _retrieved(item, data=self.instance_bytes(item)))]
            except Exception as exc:  # one failed sub-operation, reported by the caller
                return [(item, exc)]
        try:
            block = self.objects.members.get_range(unit.key, unit.start, unit.end)
        except Exception as exc:
            return [(item, exc) for item in unit.items]
        out: list[Fetched] = []
        for item, location in zip(unit.items, unit.locations, strict=True):
            assert location.data_offset is not None and location.compressed_size is not None
            offset = location.data_offset - unit.start
            data = block[offset : offset + location.compressed_size]
            if len(data) != location.compressed_size:
                out.append((item, ValueError("zip member beyond the end of its part")))
                continue
            path = None
            if self.cache is not None:
                path = self.cache.put(str(item.get("sop_uid", "")), str(item.get("fingerprint", "")), data)
            try:
                out.append((item, _retrieved(item, data=data, path=path)))
            except Exception as exc:
                out.append((item, exc))
        return out

    def object_exists(self, object_key: str) -> bool:
        """Whether the part zip is in the bucket (HEAD)."""
        try:
            self._s3_factory().head_object(Bucket=self._bucket, Key=object_key)
        except ClientError:
            return False
        return True


def _retrieved(item: Item, data: bytes | None = None, path: Path | None = None) -> Retrieved:
    """A Retrieved for an index item (its SOP class and stored transfer syntax come from the item)."""
    syntax = str(item.get("transfer_syntax") or "")
    if not syntax:  # an item indexed before the syntax was recorded: read the file meta
        from io import BytesIO

        from pydicom import dcmread

        source = path if path is not None else BytesIO(data or b"")
        meta = dcmread(source, stop_before_pixels=True).file_meta
        syntax = str(meta.get("TransferSyntaxUID", ""))
    return Retrieved(str(item.get("SOPClassUID") or ""), str(item.get("sop_uid", "")), syntax, data, path)


def level_json(item: Item) -> dict[str, Any]:
    """The DICOM JSON an index item carries for its level."""
    data: dict[str, Any] = json.loads(str(item.get("json") or "{}"))
    return data
