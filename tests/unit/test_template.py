"""template.yaml keeps its security properties as routes and functions are added (no AWS, no SAM needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from local_cloud.template import load_template, resource
from tests.helpers.template_policies import actions, resources

TEMPLATE = load_template()
PARTS = "/incoming/*"


def statements(function: str) -> list[dict[str, Any]]:
    """The inline policy statements of a function (every policy of ours is an inline document)."""
    found = []
    for policy in resource(TEMPLATE, function)["Policies"]:
        assert isinstance(policy, dict) and "Statement" in policy, f"{function}: inline, scoped statements"
        found.extend(policy["Statement"])
    return found


def test_query_function_cannot_write_the_table_and_writes_only_parts_answers_and_caches() -> None:
    for statement in statements("QueryFunction"):
        for action in actions(statement):
            if action == "dynamodb:UpdateItem":
                # Only an administrator resolving a patient conflict: CONFLICTS#<site> items only.
                leading = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
                assert leading == ["CONFLICTS#*"], statement
            elif action.startswith("dynamodb:"):
                assert action in {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}, action
            if action == "s3:PutObject":
                # STOW-RS parts under incoming/, answers too large for Lambda under retrieve/,
                # frame positions of multi-frame instances under frame-index/, thumbnails/.
                allowed = (f'{PARTS}"}}', '/retrieve/*"}', '/frame-index/*"}', '/thumbnails/*"}')
                assert all(r.endswith(allowed) for r in resources(statement)), statement
        assert "*" not in statement["Resource"], statement


def test_ingest_reads_only_incoming_and_writes_only_its_prefixes() -> None:
    by_action: dict[str, list[str]] = {}
    for statement in statements("IngestFunction"):
        assert "*" not in statement["Resource"], statement
        for action in actions(statement):
            by_action.setdefault(action, []).extend(resources(statement))
    assert all(PARTS in r for r in by_action["s3:GetObject"])
    assert all("/metadata/*" in r or "/reports/*" in r for r in by_action["s3:PutObject"])
    assert "dynamodb:Scan" not in by_action


def test_bucket_is_named_with_sub_in_functions_to_avoid_the_notification_cycle() -> None:
    for function in ("IngestFunction", "QueryFunction"):
        assert '"Ref": "DicomBucket"' not in json.dumps(resource(TEMPLATE, function)["Policies"])
    assert TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["BUCKET_NAME"] == {
        "Fn::Sub": "${AWS::StackName}-${AWS::AccountId}-dicom"
    }
    # sam local --env-vars can only override declared variables.
    assert TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["AWS_ENDPOINT_URL"] == ""


# The browser page's static files and the API description carry no data; the page signs in
# and sends the token itself.
PUBLIC_PATHS = {"/ui", "/ui/{asset}", "/openapi.json", "/swagger", "/swagger/{asset}"}


def test_every_route_is_explicit_and_behind_the_jwt_authorizer() -> None:
    api = resource(TEMPLATE, "DicomApi")
    assert api["Auth"]["DefaultAuthorizer"] in api["Auth"]["Authorizers"]
    events = resource(TEMPLATE, "QueryFunction")["Events"]
    assert events, "the query function has routes"
    for name, event in events.items():
        props = event["Properties"]
        assert event["Type"] == "HttpApi", name
        assert props["ApiId"] == {"Ref": "DicomApi"}, name
        assert props["Method"].upper() != "ANY" and "{proxy+}" not in props["Path"], name
        authorizer = props.get("Auth", {}).get("Authorizer", api["Auth"]["DefaultAuthorizer"])
        assert (authorizer == "NONE") == (props["Path"] in PUBLIC_PATHS), name


@pytest.mark.parametrize("function", ["IngestFunction", "QueryFunction"])
def test_functions_log_to_their_own_group_with_retention(function: str) -> None:
    group = resource(TEMPLATE, function)["LoggingConfig"]["LogGroup"]["Ref"]
    assert TEMPLATE["Resources"][group]["Type"] == "AWS::Logs::LogGroup"
    assert "RetentionInDays" in resource(TEMPLATE, group)


def test_edge_gateway_policy_only_uploads_parts() -> None:
    document = resource(TEMPLATE, "EdgeGatewayPolicy")["PolicyDocument"]
    granted = {action: resources(s) for s in document["Statement"] for action in actions(s)}
    # kms:Decrypt: S3 needs it to complete a multipart upload of an SSE-KMS object; there is no s3:Get*.
    assert set(granted) == {"s3:PutObject", "s3:AbortMultipartUpload", "kms:GenerateDataKey", "kms:Decrypt"}
    assert granted["s3:PutObject"] == [json.dumps({"Fn::Sub": "${DicomBucket.Arn}/incoming/*"})]


def test_data_stores_are_encrypted_retained_and_recoverable() -> None:
    table = resource(TEMPLATE, "IndexTable")
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["DeletionProtectionEnabled"] is True
    assert table["SSESpecification"]["SSEType"] == "KMS"
    bucket = resource(TEMPLATE, "DicomBucket")
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    for logical_id in ("DicomBucket", "IndexTable"):
        assert TEMPLATE["Resources"][logical_id]["DeletionPolicy"] == "Retain"
    policy = json.dumps(resource(TEMPLATE, "DicomBucketPolicy"))
    assert '"aws:SecureTransport": "false"' in policy
