"""TransactWriteItems scenarios for the stand-in's moto patch (local_cloud.moto_patches).

Each scenario runs against any DynamoDB client (in-process moto, the stand-in's moto
server) on a table made by ``create_table`` and returns what a caller can observe:
the error code, the cancellation reasons and every item of the table afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

INDEX = "ByG"


def create_table(client: DynamoDBClient, name: str) -> None:
    """pk/sk like the index table, with one GSI (moto derives indexes from the base items)."""
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "gpk", "gsk")],
        GlobalSecondaryIndexes=[
            {
                "IndexName": INDEX,
                "KeySchema": [
                    {"AttributeName": "gpk", "KeyType": "HASH"},
                    {"AttributeName": "gsk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def key(pk: str, sk: str = "#") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def seed(client: DynamoDBClient, table: str) -> None:
    """Three existing items: a counter, one to delete, one that a condition will find."""
    client.put_item(TableName=table, Item={**key("counted"), "n": {"N": "1"}, "s": {"S": "before"}})
    client.put_item(TableName=table, Item={**key("doomed"), "gpk": {"S": "g"}, "gsk": {"S": "doomed"}})
    client.put_item(TableName=table, Item={**key("taken"), "v": {"S": "first"}})


def put(table: str, pk: str, **extra: Any) -> dict[str, Any]:
    item = {**key(pk), "gpk": {"S": "g"}, "gsk": {"S": pk}}
    return {"Put": {"TableName": table, "Item": item, **extra}}


def bump(table: str, pk: str, value: str) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": table,
            "Key": key(pk),
            "UpdateExpression": "ADD n :five SET s = :s",
            "ExpressionAttributeValues": {":five": {"N": "5"}, ":s": {"S": value}},
        }
    }


def delete(table: str, pk: str) -> dict[str, Any]:
    return {"Delete": {"TableName": table, "Key": key(pk)}}


def put_if_absent(table: str, pk: str) -> dict[str, Any]:
    return put(
        table,
        pk,
        ConditionExpression="attribute_not_exists(pk)",
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    )


@dataclass
class Outcome:
    code: str  # "" when the transaction succeeded
    reasons: list[dict[str, Any]]
    items: list[dict[str, Any]]

    def item(self, pk: str) -> dict[str, Any] | None:
        return next((i for i in self.items if i["pk"]["S"] == pk), None)


def run(client: DynamoDBClient, table: str, transaction: list[dict[str, Any]]) -> Outcome:
    code, reasons = "", []
    try:
        client.transact_write_items(TransactItems=transaction)  # type: ignore[arg-type]
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        reasons = list(exc.response.get("CancellationReasons", []))  # type: ignore[arg-type]
    items = client.scan(TableName=table)["Items"]
    return Outcome(code, reasons, sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"])))


def index_keys(client: DynamoDBClient, table: str) -> list[str]:
    response = client.query(
        TableName=table,
        IndexName=INDEX,
        KeyConditionExpression="gpk = :g",
        ExpressionAttributeValues={":g": {"S": "g"}},
    )
    return sorted(i["pk"]["S"] for i in response["Items"])


def succeeding(table: str) -> list[dict[str, Any]]:
    return [
        put(table, "new"),
        bump(table, "counted", "after"),
        delete(table, "doomed"),
        put_if_absent(table, "free"),
    ]


def failing_condition(table: str) -> list[dict[str, Any]]:
    """Everything of ``succeeding``, but the last Put finds its item taken."""
    return [
        put(table, "new"),
        bump(table, "counted", "after"),
        delete(table, "doomed"),
        put_if_absent(table, "taken"),
    ]


def failing_update_creates(table: str) -> list[dict[str, Any]]:
    """An Update on an absent key creates the item; the transaction fails afterwards."""
    return [bump(table, "created-by-update", "x"), put_if_absent(table, "taken")]


def failing_validation(table: str) -> list[dict[str, Any]]:
    """A Put, then an Update whose expression names an undefined value: ValidationException."""
    broken = bump(table, "counted", "after")
    broken["Update"]["UpdateExpression"] = "SET s = :undefined"
    return [put(table, "new"), broken]


SCENARIOS: dict[str, Callable[[str], list[dict[str, Any]]]] = {
    "succeeding": succeeding,
    "failing_condition": failing_condition,
    "failing_update_creates": failing_update_creates,
    "failing_validation": failing_validation,
}
