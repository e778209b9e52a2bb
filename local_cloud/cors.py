"""CORS as API Gateway's HTTP API applies it, configured from ``template.yaml``'s ``CorsConfiguration``.

The stand-in answers preflight requests itself (before the JWT check, as API
Gateway does) and adds ``Access-Control-Allow-Origin`` and the exposed headers to
every answer for an allowed origin. Methods, headers, exposed headers and max age
come from the template; the allowed origins are the stand-in's setting (the
template's ``CorsAllowOrigins`` parameter in AWS).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from local_cloud.template import load_template, resource


@dataclass(frozen=True)
class CorsPolicy:
    """One HTTP API's CORS configuration (AWS::Serverless::HttpApi ``CorsConfiguration``)."""

    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...] = ("GET", "POST", "OPTIONS")
    allow_headers: tuple[str, ...] = ("authorization", "accept", "content-type")
    expose_headers: tuple[str, ...] = ()
    max_age: int = 0

    @classmethod
    def from_template(cls, origins: Iterable[str], template: dict[str, Any] | None = None) -> CorsPolicy:
        """The template's CORS settings with these allowed origins (trailing slashes dropped)."""
        config = resource(template or load_template(), "DicomApi").get("CorsConfiguration") or {}
        return cls(
            allow_origins=tuple(o.strip().rstrip("/") for o in origins if o.strip()),
            allow_methods=tuple(str(m).upper() for m in config.get("AllowMethods", cls.allow_methods)),
            allow_headers=tuple(str(h).lower() for h in config.get("AllowHeaders", cls.allow_headers)),
            expose_headers=tuple(str(h) for h in config.get("ExposeHeaders", ())),
            max_age=int(config.get("MaxAge", 0)),
        )

    def _origin(self, headers: Mapping[str, str]) -> str | None:
        origin = headers.get("origin", "")
        if origin and ("*" in self.allow_origins or origin.rstrip("/") in self.allow_origins):
            return "*" if "*" in self.allow_origins else origin
        return None

    @staticmethod
    def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
        """An OPTIONS request with Origin and Access-Control-Request-Method (Fetch standard)."""
        return (
            method == "OPTIONS"
            and bool(headers.get("origin"))
            and bool(headers.get("access-control-request-method"))
        )

    def preflight(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Headers of the 204 answer to a preflight (empty: not allowed, the browser blocks the call)."""
        origin = self._origin(headers)
        method = headers.get("access-control-request-method", "").upper()
        wanted = [h.strip().lower() for h in headers.get("access-control-request-headers", "").split(",")]
        wanted = [h for h in wanted if h]
        allowed_headers = "*" in self.allow_headers or all(h in self.allow_headers for h in wanted)
        if origin is None or method not in self.allow_methods or not allowed_headers:
            return {}
        answer = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ",".join(self.allow_methods),
            "Access-Control-Allow-Headers": ",".join(self.allow_headers),
            "Vary": "Origin",
        }
        if self.max_age:
            answer["Access-Control-Max-Age"] = str(self.max_age)
        return answer

    def response_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Headers added to an actual response for the request's origin (empty when not allowed)."""
        origin = self._origin(headers)
        if origin is None:
            return {}
        answer = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if self.expose_headers:
            answer["Access-Control-Expose-Headers"] = ",".join(self.expose_headers)
        return answer
