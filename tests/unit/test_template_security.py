"""template.yaml: least privilege read from the code, source-bound KMS grants, route scopes, Cognito sites."""

from __future__ import annotations

import json
import re
from pathlib import Path

from local_cloud.template import load_template, resource

TEMPLATE = load_template()
FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
# boto3 DynamoDB client calls -> the IAM action each needs (TransactWriteItems has none of its own).
DYNAMODB_CALLS = {
    "get_item": "dynamodb:GetItem",
    "batch_get_item": "dynamodb:BatchGetItem",
    "query": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "put_item": "dynamodb:PutItem",
    "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem",
    "batch_write_item": "dynamodb:BatchWriteItem",
}
TRANSACTION_ITEMS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


def granted(function: str, prefix: str) -> set[str]:
    found: set[str] = set()
    for policy in resource(TEMPLATE, function)["Policies"]:
        for statement in policy["Statement"]:
            value = statement["Action"]
            found.update(a for a in ([value] if isinstance(value, str) else value) if a.startswith(prefix))
    return found


def dynamodb_actions_called(package: str) -> set[str]:
    """IAM actions the DynamoDB calls in ``functions/<package>`` need (calls by name or method)."""
    needed: set[str] = set()
    for path in (FUNCTIONS / package).glob("*.py"):
        code = path.read_text()
        for call, action in DYNAMODB_CALLS.items():
            if re.search(rf'"{call}",|\._db\.{call}\(|dynamodb\.{call}\(', code):
                needed.add(action)
        if "transact_write_items" in code:
            needed.update(a for item, a in TRANSACTION_ITEMS.items() if f'"{item}": {{' in code)
    return needed


def test_the_ingest_role_has_exactly_the_dynamodb_actions_its_code_calls() -> None:
    # Moto does not enforce IAM: this is where a missing or a superfluous action shows.
    called = dynamodb_actions_called("ingest")
    assert called, "the scan found the ingest calls"
    assert granted("IngestFunction", "dynamodb:") == called


def test_the_ingest_role_has_no_unused_write_actions() -> None:
    actions = granted("IngestFunction", "")
    assert not {"dynamodb:DeleteItem", "dynamodb:BatchWriteItem"} & actions - dynamodb_actions_called(
        "ingest"
    )
    assert "s3:PutObjectVersionTagging" not in actions
    assert "s3:DeleteObject" not in actions


def test_kms_grants_to_service_principals_are_bound_to_this_account() -> None:
    statements = resource(TEMPLATE, "DataKey")["KeyPolicy"]["Statement"]
    services = [s for s in statements if "Service" in s["Principal"]]
    assert len(services) == 2
    for statement in services:
        condition = json.dumps(statement.get("Condition", {}))
        assert "${AWS::AccountId}" in condition or "AWS::AccountId" in condition, statement["Sid"]
        assert "aws:SourceArn" in condition or "kms:EncryptionContext:aws:logs:arn" in condition
    [alarms] = [s for s in services if s["Principal"]["Service"] == "cloudwatch.amazonaws.com"]
    assert alarms["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert ":alarm:${AWS::StackName}-*" in alarms["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]


def test_routes_require_scopes_at_api_gateway_too() -> None:
    api = resource(TEMPLATE, "DicomApi")["Auth"]
    authorizer = api["Authorizers"][api["DefaultAuthorizer"]]
    assert authorizer["AuthorizationScopes"] == ["dicom/read"]
    for name, event in resource(TEMPLATE, "QueryFunction")["Events"].items():
        props = event["Properties"]
        auth = props.get("Auth", {})
        if auth.get("Authorizer") == "NONE":
            continue
        scopes = auth.get("AuthorizationScopes", authorizer["AuthorizationScopes"])
        expected = ["dicom/write"] if props["Method"] == "POST" else ["dicom/read"]
        assert scopes == expected, name


def test_cognito_issues_the_scopes_and_sites_come_from_admin_managed_groups() -> None:
    server = resource(TEMPLATE, "UserPoolResourceServer")
    names = {f"{server['Identifier']}/{s['ScopeName']}" for s in server["Scopes"]}
    assert names == {"dicom/read", "dicom/write"}
    client = resource(TEMPLATE, "UserPoolClient")
    assert {"dicom/read", "dicom/write"} <= set(client["AllowedOAuthScopes"])
    assert client["AllowedOAuthFlowsUserPoolClient"] is True
    assert "UserPoolDomain" in TEMPLATE["Resources"]
    # No attribute a user could write names a site (groups are changed by administrators only).
    pool = resource(TEMPLATE, "UserPool")
    assert not [a for a in pool.get("Schema", []) if "site" in a["Name"].lower()]
    assert not [a for a in client["WriteAttributes"] if "site" in a.lower()]


def test_links_come_from_a_configured_base_url() -> None:
    variables = resource(TEMPLATE, "QueryFunction")["Environment"]["Variables"]
    assert variables["PUBLIC_BASE_URL"] == {"Ref": "PublicBaseUrl"}
