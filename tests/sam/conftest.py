"""SAM in Docker: `sam build`, the local Lambda image, and a moto server container on a private network.

SAM CLI 1.170 ignores `--docker-network host`, so the moto server runs in a container on a
user-defined network that the function containers join (`--docker-network`); they reach it
by container name. Its port is published on 127.0.0.1 only, for the test's own boto3 calls.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from local_cloud.stack import free_port
from local_cloud.template import load_template, table_definition
from tests.conftest import REGION, require_tool

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
EVENTS = ROOT / "tests" / "events"
LAMBDA_IMAGE = os.environ.get("LAMBDA_IMAGE", "dicom-lambda-python3.11:local")
MOTO_IMAGE = os.environ.get("MOTO_IMAGE", "dicom-moto-server:local")
BUCKET = "dicom-sam"
TABLE = "dicom-index-sam"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}

pytestmark = pytest.mark.sam


def sam_cli() -> str | None:
    candidate = os.environ.get("SAM_CLI") or str(ROOT / ".tools-sam" / "bin" / "sam")
    return candidate if Path(candidate).exists() else shutil.which("sam")


def docker_running() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def timed(what: str, timings: dict[str, float], command: list[str], **kwargs: Any) -> str:
    """Run a command, record how long it took, and fail with its output if it fails."""
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    timings[what] = time.monotonic() - started
    (OUTPUT / f"sam-{what}.log").write_text(f"$ {' '.join(command)}\n{result.stdout}\n{result.stderr}")
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return str(result.stdout)


@dataclass
class SamStack:
    sam: str
    template: Path
    network: str
    moto_container: str
    moto_url: str
    env_vars: Path
    env: dict[str, str]
    timings: dict[str, float]

    def s3(self) -> S3Client:
        return _session().client("s3", endpoint_url=self.moto_url)

    def dynamodb(self) -> DynamoDBClient:
        return _session().client("dynamodb", endpoint_url=self.moto_url)

    def local_args(self) -> list[str]:
        """What every `sam local` command here needs."""
        return [
            "--template",
            str(self.template),
            "--invoke-image",
            LAMBDA_IMAGE,
            "--skip-pull-image",
            "--docker-network",
            self.network,
            "--env-vars",
            str(self.env_vars),
            "--region",
            REGION,
        ]


def _session() -> boto3.Session:
    # Explicit: session-scoped fixtures run before the per-test fake-credentials fixture.
    return boto3.Session(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")


def _wait_for_moto(url: str, container: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):  # noqa: S310 - loopback URL
                return
        except OSError:
            time.sleep(0.3)
    logs = docker("logs", container, check=False)
    raise AssertionError(f"moto container did not answer on {url}:\n{logs.stdout}{logs.stderr}")


@pytest.fixture(scope="session")
def sam_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SamStack]:
    sam = sam_cli()
    require_tool(sam is not None, "SAM CLI (make .tools-sam/.installed)")
    require_tool(docker_running(), "a running Docker engine (dockerd)")
    assert sam is not None
    OUTPUT.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(CREDENTIALS, SAM_CLI_TELEMETRY="0")
    # `sam build` runs `python3.11 -m pip`: the test's own interpreter (a venv with pip) comes first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    timed(
        "image",
        timings,
        ["bash", str(ROOT / "tools" / "lambda-image" / "build.sh")],
        env={
            **env,
            "PIP": f"{sys.executable} -m pip",
            "LAMBDA_IMAGE": LAMBDA_IMAGE,
            "MOTO_IMAGE": MOTO_IMAGE,
        },
    )
    build_dir = tmp_path_factory.mktemp("sam") / "build"
    timed(
        "build",
        timings,
        [sam, "build", "--template", str(ROOT / "template.yaml"), "--build-dir", str(build_dir)],
        cwd=ROOT,
        env=env,
    )

    suffix = uuid.uuid4().hex[:8]
    network, container = f"dicom-sam-{suffix}", f"dicom-sam-moto-{suffix}"
    port = free_port()
    docker("network", "create", network)
    try:
        docker(
            "run", "--detach", "--rm", "--name", container, "--network", network,
            "--publish", f"127.0.0.1:{port}:5000", MOTO_IMAGE,
        )  # fmt: skip
        moto_url = f"http://127.0.0.1:{port}"
        _wait_for_moto(moto_url, container)
        session = _session()
        session.client("s3", endpoint_url=moto_url).create_bucket(Bucket=BUCKET)
        session.client("dynamodb", endpoint_url=moto_url).create_table(
            **table_definition(load_template(), TABLE)
        )
        # --env-vars overrides only what template.yaml declares (AWS_ENDPOINT_URL is declared empty).
        function_env = {
            "AWS_ENDPOINT_URL": f"http://{container}:5000",
            "BUCKET_NAME": BUCKET,
            "TABLE_NAME": TABLE,
        }
        # `sam local start-api` skips JWT authorizers: without claims the query function must run open.
        query_env = {**function_env, "REQUIRE_AUTH": "false"}
        env_vars = build_dir.parent / "env.json"
        env_vars.write_text(json.dumps({"IngestFunction": function_env, "QueryFunction": query_env}))
        yield SamStack(
            sam=sam,
            template=build_dir / "template.yaml",
            network=network,
            moto_container=container,
            moto_url=moto_url,
            env_vars=env_vars,
            env=env,
            timings=timings,
        )
    finally:
        # Our moto container and whatever SAM left on our private network (warm function containers).
        leftovers = docker("ps", "-aq", "--filter", f"network={network}", check=False).stdout.split()
        if leftovers:
            docker("rm", "-f", *leftovers, check=False)
        docker("network", "rm", network, check=False)
        print(f"\nSAM tier timings (s): {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
