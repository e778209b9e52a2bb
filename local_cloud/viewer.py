"""The OHIF viewer (v3) for the local stand-in: a pinned prebuilt ``@ohif/app`` served as static files.

The npm registry's ``@ohif/app`` tarball carries the built viewer in
``package/dist``. It is fetched once with ``npm pack`` and unpacked under
``.cache/ohif/<version>/dist``; later runs reuse it. The viewer is served from
its own port (another origin than the API, as deployments usually are: the API
answers with CORS) with a generated ``app-config.js`` whose DICOMweb data source
points at the local API, and with the single-page-app fallback (any unknown path
is ``index.html``), so ``<viewer>/viewer?StudyInstanceUIDs=<uid>`` opens a study.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from local_cloud.http_service import BackgroundHttpServer

log = logging.getLogger("local_cloud.viewer")

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
# Next to the checkout (gitignored .cache/), shared by every run and test of this worktree.
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "ohif"
NPM_TIMEOUT_SECONDS = 900
# The scopes the API's routes require (template.yaml's JWT authorizer: dicom/read).
DEFAULT_SCOPE = "openid email dicom/read"


class ViewerUnavailable(RuntimeError):
    """The viewer could not be fetched (no npm, no registry): the rest of the stand-in still runs."""


def ensure_dist(cache_dir: Path = DEFAULT_CACHE, version: str = OHIF_VERSION, npm: str = "npm") -> Path:
    """The unpacked ``dist`` folder of ``@ohif/app@version``, fetched with ``npm pack`` on first use.

    Raises ViewerUnavailable when npm is missing or the package cannot be fetched.
    """
    dist = cache_dir / version / "dist"
    if (dist / "index.html").is_file():
        return dist
    if shutil.which(npm) is None:
        raise ViewerUnavailable(f"{npm} not found: install it (apt-get install -y npm) to serve the viewer")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # One fetch at a time per cache (two `make run`s, or a test's clone, may share it): the
    # second waits for the first and then finds the dist in place.
    with open(cache_dir / f"{version}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not (dist / "index.html").is_file():
            _fetch(dist, version, npm)
    return dist


def _fetch(dist: Path, version: str, npm: str) -> None:
    """``npm pack`` the package into a temporary folder of the cache and rename its dist into place."""
    with tempfile.TemporaryDirectory(dir=dist.parent.parent) as tmp:
        log.info("fetching %s@%s from the npm registry (once; about 50 MB)", OHIF_PACKAGE, version)
        try:
            subprocess.run(
                [npm, "pack", f"{OHIF_PACKAGE}@{version}", "--pack-destination", tmp],
                cwd=tmp,
                check=True,
                capture_output=True,
                timeout=NPM_TIMEOUT_SECONDS,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise ViewerUnavailable(f"npm pack {OHIF_PACKAGE}@{version} failed") from exc
        tarball = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tarball) as archive:
            archive.extractall(tmp, filter="data")
        staged = Path(tmp) / "package" / "dist"
        if not (staged / "index.html").is_file():
            raise ViewerUnavailable(f"{OHIF_PACKAGE}@{version} has no dist/index.html")
        dist.parent.mkdir(parents=True, exist_ok=True)
        if dist.exists():  # a fetch cut before its last step left an incomplete dist
            shutil.rmtree(dist)
        staged.rename(dist)


def oidc_client(issuer: str, client_id: str, scope: str = DEFAULT_SCOPE) -> dict[str, str]:
    """One entry of OHIF's ``oidc`` setting: sign in at ``issuer`` with the code flow (PKCE).

    OHIF (oidc-client-ts) discovers the endpoints from ``<issuer>/.well-known/openid-configuration``
    and sends the access token as ``Authorization: Bearer`` on every DICOMweb request, which the
    API's JWT authorizer checks (issuer, audience = ``client_id``, scope ``dicom/read``).
    ``/callback`` and ``/silent-refresh.html`` of the viewer must be allowed redirect URIs.
    """
    return {
        "authority": issuer.rstrip("/"),
        "client_id": client_id,
        "redirect_uri": "/callback",
        "silent_redirect_uri": "/silent-refresh.html",
        "response_type": "code",
        "scope": scope,
        "post_logout_redirect_uri": "/",
    }


def app_config(api_url: str, oidc: dict[str, str] | None = None) -> dict[str, Any]:
    """OHIF's ``window.config`` with one DICOMweb data source: this API's ``/dicomweb``.

    ``bulkDataURI.relativeResolution: "studies"`` resolves the relative BulkDataURIs of
    WADO-RS metadata against the study URL; frames are fetched with ``imageRendering:
    "wadors"`` (``.../frames/N``). Thumbnails are the API's ``/thumbnail`` resources
    (PS3.18 10.4.1.2.4; ``thumbnailRendering: "thumbnail"`` with the ``fetch`` strategy:
    one JPEG per series, with the Authorization header), not frames decoded in the browser.
    ``oidc`` (see :func:`oidc_client`) makes the viewer sign in before it calls the API.
    """
    root = api_url.rstrip("/") + "/dicomweb"
    config: dict[str, Any] = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "dicomweb",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "dicomweb",
                "configuration": {
                    "friendlyName": "Local DICOM archive",
                    "name": "local",
                    "wadoUriRoot": root,
                    "qidoRoot": root,
                    "wadoRoot": root,
                    "qidoSupportsIncludeField": True,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "thumbnail",
                    "thumbnailRequestStrategy": "fetch",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": True,
                    "supportsWildcard": True,
                    "staticWado": False,
                    "singlepart": "bulkdata,video",
                    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                    "omitQuotationForMultipartRequest": True,
                },
            }
        ],
    }
    if oidc is not None:
        config["oidc"] = [oidc]
    return config


def app_config_js(api_url: str, oidc: dict[str, str] | None = None) -> bytes:
    """The ``app-config.js`` file the viewer loads first."""
    return f"window.config = {json.dumps(app_config(api_url, oidc), indent=2)};\n".encode()


class ViewerServer(BackgroundHttpServer):
    """Static files of the OHIF dist on ``host:port``, ``/app-config.js`` generated, SPA fallback."""

    def __init__(self, host: str, port: int, dist: Path, api_url: str) -> None:
        config = app_config_js(api_url)
        root = dist.resolve()

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/app-config.js":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/javascript")
                    self.send_header("Content-Length", str(len(config)))
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    self.wfile.write(config)
                    return
                target = Path(self.translate_path(path))
                if not target.is_file():
                    self.path = "/index.html"  # single-page app: the router reads the URL
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), format % args)

        super().__init__(host, port, Handler, name="viewer")
