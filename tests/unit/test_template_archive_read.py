"""The optional policy of a gateway that answers query/retrieve: reads by key, no writes, no Scan."""

from __future__ import annotations

from local_cloud.template import load_template, resource
from tests.helpers.template_policies import actions


def test_archive_read_policy_reads_only() -> None:
    document = resource(load_template(), "EdgeGatewayArchiveReadPolicy")["PolicyDocument"]
    granted = {action for statement in document["Statement"] for action in actions(statement)}
    assert granted == {
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
        "s3:GetObject",
        "kms:Decrypt",
    }
    [parts] = [s for s in document["Statement"] if "s3:GetObject" in actions(s)]
    assert parts["Resource"] == {"Fn::Sub": "${DicomBucket.Arn}/incoming/*"}
