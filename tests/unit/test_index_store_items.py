"""Index items read by the query function equal what boto3's TypeDeserializer gives.

``query.store`` deserialises with Powertools' copy of boto3's deserializer so that the
query function need not import boto3 (bench/query_cold_start.py); the one documented
difference is Binary (bytes, not ``boto3.dynamodb.types.Binary``). This compares both on
every item a real ingest writes, read back through moto.
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer

from tests.conftest import Aws
from tests.helpers.query_api import index_two_patients, make_api


def _as_boto3(item: dict[str, Any]) -> dict[str, Any]:
    deserializer = TypeDeserializer()
    plain = {name: deserializer.deserialize(value) for name, value in item.items()}
    return {name: bytes(v.value) if isinstance(v, Binary) else v for name, v in plain.items()}


def test_store_reads_every_indexed_item_as_boto3_would(module_aws: Aws) -> None:
    index_two_patients(module_aws, ct_instances=2)
    make_api(module_aws)
    from query import dependencies

    raw = module_aws.dynamodb.scan(TableName=module_aws.table)["Items"]
    types = {kind for item in raw for value in item.values() for kind in value}
    # Strings, numbers, lists and string sets: the comparison covers more than keys.
    assert {"S", "N", "L", "SS"} <= types, types
    for item in raw:
        read = dependencies.store.get(item["pk"]["S"], item["sk"]["S"])
        assert read == _as_boto3(item)
