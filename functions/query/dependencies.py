"""Clients and settings built once per cold start and shared by the route modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import botocore.session
from botocore.config import Config
from common.settings import Settings

from query.objects import Objects
from query.store import IndexStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

settings = Settings.from_env()
# Clients come from botocore, which boto3 wraps: boto3's import also loads s3transfer and
# its resource layer, about 30 ms of a cold start, for methods this function never calls.
_session = botocore.session.get_session()
dynamodb = cast("DynamoDBClient", _session.create_client("dynamodb"))
store = IndexStore(dynamodb, settings.table_name)


def _s3() -> S3Client:
    # SigV4 so that presigned links work in every region and with the local stand-in.
    return cast("S3Client", _session.create_client("s3", config=Config(signature_version="s3v4")))


objects = Objects(_s3, settings.bucket_name)
