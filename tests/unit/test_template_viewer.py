"""template.yaml: the optional OHIF viewer (S3 + CloudFront) and the expiry of the derived caches."""

from __future__ import annotations

import json
from typing import Any

import pytest
from query.frames import FRAME_INDEX_PREFIX

from local_cloud.template import load_template, resource
from tools.template_variant import variant

TEMPLATE = load_template()
VIEWER_RESOURCES = (
    "ViewerBucket",
    "ViewerBucketPolicy",
    "ViewerOriginAccessControl",
    "ViewerSecurityHeaders",
    "ViewerDistribution",
)


def _rules(bucket: str) -> dict[str, dict[str, Any]]:
    rules = resource(TEMPLATE, bucket)["LifecycleConfiguration"]["Rules"]
    return {rule.get("Prefix", ""): rule for rule in rules}


def test_derived_caches_expire_with_their_replaced_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    # The route module reads the function's settings on import.
    monkeypatch.setenv("TABLE_NAME", "t")
    monkeypatch.setenv("BUCKET_NAME", "b-b")
    from query.routes.thumbnails import THUMBNAIL_PREFIX

    rules = _rules("DicomBucket")
    # The prefixes the query function writes its caches under (not a copy of the strings).
    for prefix in (FRAME_INDEX_PREFIX, THUMBNAIL_PREFIX):
        rule = rules[prefix]
        assert rule["Status"] == "Enabled"
        assert rule["ExpirationInDays"] == {"Ref": "DerivedCacheDays"}
        assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    assert TEMPLATE["Parameters"]["DerivedCacheDays"]["Default"] >= 1
    # Series parts are never expired by a rule: only moved to cheaper storage.
    assert "ExpirationInDays" not in rules["incoming/"]


def test_the_viewer_is_optional_and_off_by_default() -> None:
    assert TEMPLATE["Parameters"]["DeployViewer"]["Default"] == "false"
    assert TEMPLATE["Conditions"]["CreateViewer"] == {"Fn::Equals": [{"Ref": "DeployViewer"}, "true"]}
    for logical_id in VIEWER_RESOURCES:
        assert TEMPLATE["Resources"][logical_id]["Condition"] == "CreateViewer", logical_id
    for output in ("ViewerUrl", "ViewerBucketName", "ViewerDistributionId"):
        assert TEMPLATE["Outputs"][output]["Condition"] == "CreateViewer"


def test_the_viewer_bucket_is_private_encrypted_and_versioned() -> None:
    bucket = resource(TEMPLATE, "ViewerBucket")
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    encryption = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert bucket["OwnershipControls"]["Rules"][0]["ObjectOwnership"] == "BucketOwnerEnforced"
    # Its access logs land in the stack's log bucket, whose policy lets S3 deliver them.
    assert bucket["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "AccessLogsBucket"}
    assert "/viewer/*" in json.dumps(resource(TEMPLATE, "AccessLogsBucketPolicy"))


def test_only_this_distribution_reads_the_viewer_bucket() -> None:
    statements = resource(TEMPLATE, "ViewerBucketPolicy")["PolicyDocument"]["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert len(allows) == 1
    allow = allows[0]
    assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert allow["Action"] == "s3:GetObject"
    source = allow["Condition"]["StringEquals"]["AWS:SourceArn"]["Fn::Sub"]
    assert source.endswith(":distribution/${ViewerDistribution}")
    denies = [s for s in statements if s["Effect"] == "Deny"]
    assert denies and denies[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_distribution_serves_the_single_page_app_over_https_with_security_headers() -> None:
    config = resource(TEMPLATE, "ViewerDistribution")["DistributionConfig"]
    assert config["DefaultRootObject"] == "index.html"
    origin = config["Origins"][0]
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["ViewerOriginAccessControl", "Id"]}
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}  # OAC, not the legacy identity
    oac = resource(TEMPLATE, "ViewerOriginAccessControl")["OriginAccessControlConfig"]
    assert (oac["SigningBehavior"], oac["SigningProtocol"]) == ("always", "sigv4")
    behaviour = config["DefaultCacheBehavior"]
    assert behaviour["ViewerProtocolPolicy"] == "redirect-to-https"
    assert behaviour["ResponseHeadersPolicyId"] == {"Ref": "ViewerSecurityHeaders"}
    # Routes of the app (/viewer?StudyInstanceUIDs=..., /callback) are index.html.
    fallbacks = {e["ErrorCode"]: e for e in config["CustomErrorResponses"]}
    for code in (403, 404):
        assert fallbacks[code]["ResponseCode"] == 200
        assert fallbacks[code]["ResponsePagePath"] == "/index.html"
    policy = resource(TEMPLATE, "ViewerSecurityHeaders")["ResponseHeadersPolicyConfig"]
    headers = policy["SecurityHeadersConfig"]
    assert headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000
    assert headers["FrameOptions"]["FrameOption"] == "DENY"
    assert "ContentTypeOptions" in headers
    assert "frame-ancestors 'none'" in headers["ContentSecurityPolicy"]["ContentSecurityPolicy"]


def test_the_hosted_viewer_may_call_the_api_and_sign_in() -> None:
    cors = json.dumps(resource(TEMPLATE, "DicomApi")["CorsConfiguration"]["AllowOrigins"])
    assert "https://${ViewerDistribution.DomainName}" in cors
    callbacks = json.dumps(resource(TEMPLATE, "UserPoolClient")["CallbackURLs"])
    assert "https://${ViewerDistribution.DomainName}/callback" in callbacks
    assert "CreateViewerSignIn" in callbacks
    # Code flow with PKCE (what OHIF's oidc client uses with response_type "code"), no client secret.
    client = resource(TEMPLATE, "UserPoolClient")
    assert "code" in client["AllowedOAuthFlows"] and client["GenerateSecret"] is False


def test_the_cors_parameter_is_documented_with_an_ohif_example() -> None:
    description = TEMPLATE["Parameters"]["CorsAllowOrigins"]["Description"]
    assert "OHIF" in description and "https://" in description and "http://localhost:3001" in description


def test_the_checked_variant_turns_the_viewer_on() -> None:
    from local_cloud.template import TEMPLATE as PATH

    text = variant(PATH.read_text(), {"DeployViewer": "true"})
    changed = [line for line in text.splitlines() if line not in PATH.read_text().splitlines()]
    assert changed == ['    Default: "true"']
