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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from common import keys
from query.objects import Objects
from query.search import StudyFilter, find_studies
from query.store import IndexStore, Item

from edge_gateway.retrieve_cache import RetrieveCache

CACHE_FOLDER = "retrieve-cache"

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

    from edge_gateway.config import GatewayConfig

# botocore's DEBUG records carry whole response bodies: index items hold patient names and IDs.
# Whatever log_level says, this process never writes them.
logging.getLogger("botocore").setLevel(max(logging.INFO, logging.getLogger("botocore").level))

_RETRIES = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30)


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

    def object_exists(self, object_key: str) -> bool:
        """Whether the part zip is in the bucket (HEAD)."""
        try:
            self._s3_factory().head_object(Bucket=self._bucket, Key=object_key)
        except ClientError:
            return False
        return True


def level_json(item: Item) -> dict[str, Any]:
    """The DICOM JSON an index item carries for its level."""
    data: dict[str, Any] = json.loads(str(item.get("json") or "{}"))
    return data
