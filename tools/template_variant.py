"""Print template.yaml with other parameter defaults, so checks see the resources of optional parts.

checkov leaves out resources whose condition is false with the defaults (the optional OHIF
viewer is off by default); ``make template-check`` scans this variant as well:

    python tools/template_variant.py DeployViewer=true > .aws-sam/template-viewer.yaml

Only the ``Default:`` line of each named parameter changes (text, so the short-form tags
stay as written). Exits 2 when a parameter or its Default line is not found.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"


def variant(text: str, overrides: dict[str, str]) -> str:
    """``text`` with ``Default:`` of each parameter in ``overrides`` replaced; KeyError when absent."""
    for name, value in overrides.items():
        pattern = re.compile(rf"(^  {re.escape(name)}:\n(?:    .*\n)*?    Default: ).*$", re.MULTILINE)
        replacement = f'\\g<1>"{value}"'
        text, count = pattern.subn(replacement, text, count=1)
        if count != 1:
            raise KeyError(name)
    return text


def main(argv: list[str] | None = None) -> int:
    """``NAME=VALUE ...`` -> the variant on stdout."""
    args = sys.argv[1:] if argv is None else argv
    overrides = dict(arg.split("=", 1) for arg in args)
    try:
        sys.stdout.write(variant(TEMPLATE.read_text(), overrides))
    except KeyError as exc:
        print(f"parameter {exc} or its Default line not found in {TEMPLATE}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
