"""Typed settings read once from the environment; a missing variable fails at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass


class SettingsError(RuntimeError):
    """A required environment variable is missing or empty."""


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SettingsError(f"environment variable {name} must be set")
    return value


@dataclass(frozen=True)
class Settings:
    """Names of the function's AWS resources, from the environment (fail fast)."""

    table_name: str
    bucket_name: str
    # Empty in AWS; the local stand-in (moto server) sets it. boto3 reads
    # AWS_ENDPOINT_URL itself, this copy is only for logging and links.
    endpoint_url: str | None

    @classmethod
    def from_env(cls) -> Settings:
        """Read TABLE_NAME, BUCKET_NAME and AWS_ENDPOINT_URL; raises SettingsError when one is missing."""
        return cls(
            table_name=_required("TABLE_NAME"),
            bucket_name=_required("BUCKET_NAME"),
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
        )
