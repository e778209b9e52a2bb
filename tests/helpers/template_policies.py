"""template.yaml policy statements as lists (actions, resources) for the template tests."""

from __future__ import annotations

import json
from typing import Any


def actions(statement: dict[str, Any]) -> list[str]:
    value = statement["Action"]
    return [value] if isinstance(value, str) else list(value)


def resources(statement: dict[str, Any]) -> list[str]:
    value = statement["Resource"]
    return [json.dumps(r) for r in (value if isinstance(value, list) else [value])]
