"""Clients and settings built once per cold start and shared by the route modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from common.settings import Settings

from query.objects import Objects
from query.store import IndexStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

settings = Settings.from_env()
dynamodb: DynamoDBClient = boto3.client("dynamodb")
store = IndexStore(dynamodb, settings.table_name)
# SigV4 so that presigned links work in every region and with the local stand-in.


def _s3() -> S3Client:
    return boto3.client("s3", config=Config(signature_version="s3v4"))


objects = Objects(_s3, settings.bucket_name)
