"""Clients and settings built once per cold start and shared by the route modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from common.settings import Settings

from query.store import IndexStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

settings = Settings.from_env()
dynamodb: DynamoDBClient = boto3.client("dynamodb")
store = IndexStore(dynamodb, settings.table_name)
