"""Read ``template.yaml`` so the local stand-in creates exactly the table and event filter it declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags (``!Ref``, ``!Sub``...) as ``Fn::`` maps."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node for !{suffix}", node.start_mark)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The SAM template as a dict (CloudFormation tags kept); raises ValueError when it is not one."""
    data = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a CloudFormation template")
    return data


def resource(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """The Properties of resource ``logical_id``; raises KeyError when it is absent."""
    properties: dict[str, Any] = template["Resources"][logical_id].get("Properties", {})
    return properties


def table_definition(template: dict[str, Any], table_name: str) -> dict[str, Any]:
    """``CreateTable`` arguments for the template's index table."""
    props = resource(template, "IndexTable")
    definition: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        definition["GlobalSecondaryIndexes"] = [
            {k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection")}
            for index in props["GlobalSecondaryIndexes"]
        ]
    return definition


def ingest_filter(template: dict[str, Any]) -> list[dict[str, str]]:
    """The S3 key filter rules of the ingest function's S3 event (prefix and suffix)."""
    events = resource(template, "IngestFunction")["Events"]
    s3_event = next(e for e in events.values() if e["Type"] == "S3")
    rules: list[dict[str, str]] = s3_event["Properties"]["Filter"]["S3Key"]["Rules"]
    return [{"Name": r["Name"], "Value": r["Value"]} for r in rules]
