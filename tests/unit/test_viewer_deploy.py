"""make deploy-viewer: the OHIF dist and its generated app-config.js uploaded to a moto server over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from local_cloud import viewer_deploy
from local_cloud.viewer_deploy import IMMUTABLE, REVALIDATE, cache_control, content_type
from tests.conftest import REGION

VIEWER_BUCKET = "dicom-index-dev-123456789012-viewer"
ISSUER = "https://cognito-idp.eu-central-1.amazonaws.com/eu-central-1_AbCdEf"
CLIENT_ID = "7lhlkkfbfb4q5kpp90urffao"
API = "https://abc123.execute-api.eu-central-1.amazonaws.com"
# A stack with the outputs template.yaml declares when DeployViewer=true.
STACK_TEMPLATE = {
    "Resources": {"ViewerBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": VIEWER_BUCKET}}},
    "Outputs": {
        "ViewerBucketName": {"Value": {"Ref": "ViewerBucket"}},
        "ApiUrl": {"Value": API},
        "JwtIssuerUrl": {"Value": ISSUER},
        "JwtAudience": {"Value": CLIENT_ID},
        "ViewerUrl": {"Value": "https://d111111abcdef8.cloudfront.net"},
    },
}
# File names as the @ohif/app 3.13.2 dist has them.
DIST = {
    "index.html": b"<!doctype html><script src=/app-config.js></script>",
    "app-config.js": b"window.config = {stock: true};",
    "app.bundle.0f6159c501addfe9.js": b"console.log(1)",
    "0ddf166f7a343eda.wasm": b"\x00asm\x01\x00\x00\x00",
    "1602.css": b"body{}",
    "manifest.json": b"{}",
    "assets/images/logo.svg": b"<svg/>",
}


@pytest.fixture
def endpoint(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """tests/conftest.py's moto server, named where the command's boto3 clients look for it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return endpoint


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    for name, body in DIST.items():
        path = tmp_path / "dist" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return tmp_path / "dist"


def _config(body: bytes) -> dict[str, object]:
    text = body.decode()
    assert text.startswith("window.config = ") and text.rstrip().endswith(";")
    config: dict[str, object] = json.loads(text.removeprefix("window.config = ").rstrip().rstrip(";"))
    return config


def test_deploy_from_stack_outputs_uploads_every_file_with_type_cache_and_generated_config(
    endpoint: str, dist: Path
) -> None:
    # GIVEN a stack with the viewer's outputs on a moto server
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(StackName="dicom-index-dev", TemplateBody=json.dumps(STACK_TEMPLATE))
    # WHEN the command runs against it
    code = viewer_deploy.main(["--stack-name", "dicom-index-dev", "--region", REGION, "--dist", str(dist)])
    # THEN every file of the dist is in the bucket with its type and caching
    assert code == 0
    s3 = boto3.client("s3", region_name=REGION)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=VIEWER_BUCKET)["Contents"]}
    assert keys == set(DIST)
    expected = {
        "index.html": ("text/html; charset=utf-8", REVALIDATE),
        "app-config.js": ("text/javascript; charset=utf-8", REVALIDATE),
        "app.bundle.0f6159c501addfe9.js": ("text/javascript; charset=utf-8", IMMUTABLE),
        "0ddf166f7a343eda.wasm": ("application/wasm", IMMUTABLE),
        "1602.css": ("text/css; charset=utf-8", REVALIDATE),
        "manifest.json": ("application/json; charset=utf-8", REVALIDATE),
        "assets/images/logo.svg": ("image/svg+xml; charset=utf-8", REVALIDATE),
    }
    for key, (media_type, caching) in expected.items():
        head = s3.head_object(Bucket=VIEWER_BUCKET, Key=key)
        assert (head["ContentType"], head["CacheControl"]) == (media_type, caching), key
    body = s3.get_object(Bucket=VIEWER_BUCKET, Key="index.html")["Body"].read()
    assert body == DIST["index.html"]
    # AND app-config.js is generated for the deployed API and its sign-in, not the stock one
    config = _config(s3.get_object(Bucket=VIEWER_BUCKET, Key="app-config.js")["Body"].read())
    source = config["dataSources"][0]["configuration"]  # type: ignore[index]
    assert source["qidoRoot"] == source["wadoRoot"] == f"{API}/dicomweb"
    assert (source["thumbnailRendering"], source["thumbnailRequestStrategy"]) == ("thumbnail", "fetch")
    assert source["imageRendering"] == "wadors"
    (oidc,) = config["oidc"]  # type: ignore[misc]
    assert oidc["authority"] == ISSUER and oidc["client_id"] == CLIENT_ID
    assert oidc["response_type"] == "code" and "dicom/read" in oidc["scope"].split()
    assert oidc["redirect_uri"] == "/callback"


def test_explicit_arguments_override_and_a_missing_bucket_is_a_clear_error(
    endpoint: str, dist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="other-viewer")
    args = ["--region", REGION, "--dist", str(dist), "--api-url", "https://dicom.example.org/"]
    # WHEN no issuer is given: no sign-in in the config (and a warning)
    assert viewer_deploy.main([*args, "--bucket", "other-viewer"]) == 0
    config = _config(s3.get_object(Bucket="other-viewer", Key="app-config.js")["Body"].read())
    assert "oidc" not in config
    source = config["dataSources"][0]["configuration"]  # type: ignore[index]
    assert source["wadoRoot"] == "https://dicom.example.org/dicomweb"
    # WHEN the bucket does not exist: exit 1 with a message, no traceback
    assert viewer_deploy.main([*args, "--bucket", "no-such-viewer-bucket"]) == 1
    assert "deploy-viewer: upload to s3://no-such-viewer-bucket failed" in capsys.readouterr().err


def test_a_stack_without_the_viewer_is_refused(
    endpoint: str, dist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    template = {**STACK_TEMPLATE, "Outputs": {"ApiUrl": {"Value": API}}}
    cloudformation.create_stack(StackName="no-viewer", TemplateBody=json.dumps(template))
    assert viewer_deploy.main(["--stack-name", "no-viewer", "--region", REGION, "--dist", str(dist)]) == 1
    assert "DeployViewer=true" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "caching"),
    [
        ("app.bundle.0f6159c501addfe9.js", IMMUTABLE),
        ("1180.bundle.762993518ea30ae3.js", IMMUTABLE),
        ("0ddf166f7a343eda.wasm", IMMUTABLE),
        ("index.html", REVALIDATE),
        ("app-config.js", REVALIDATE),
        ("serviceWorker.js", REVALIDATE),
    ],
)
def test_only_content_hashed_names_are_cached_for_ever(name: str, caching: str) -> None:
    assert cache_control(name) == caching


def test_content_types_do_not_depend_on_the_system_mime_table() -> None:
    assert content_type("a.wasm") == "application/wasm"
    assert content_type("x/y.js") == "text/javascript; charset=utf-8"
    assert content_type("blob.unknownext") == "application/octet-stream"
