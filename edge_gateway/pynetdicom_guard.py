"""The guard every replacement of pynetdicom code goes through: version range and source hashes.

A replacement is written against one reading of pynetdicom's source. Before it is
installed, the installed pynetdicom must be in ``SUPPORTED`` (the range pyproject.toml
accepts) and the SHA-256 of ``inspect.getsource`` of every function it replaces or
relies on must be the one recorded. Any difference (a renamed method, an edited body)
means: install nothing, log a warning, run stock pynetdicom. Nothing here raises.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pynetdicom

log = logging.getLogger(__name__)

# The pynetdicom versions whose source the recorded hashes were taken from; pyproject.toml
# accepts exactly this range (tests/unit/test_pynetdicom_guard.py compares the two).
SUPPORTED = ("3.0.4", "3.0.5")  # from, up to (exclusive)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def version_supported(version: str | None = None) -> bool:
    """Whether ``version`` (default: the installed pynetdicom) is inside ``SUPPORTED``."""
    found = _version_tuple(version or pynetdicom.__version__)
    return _version_tuple(SUPPORTED[0]) <= found < _version_tuple(SUPPORTED[1])


def source_sha256(owner: Any, name: str) -> str:
    """SHA-256 of the source of ``owner.name`` ("" when it is missing or has no readable source)."""
    function = getattr(owner, name, None)
    function = getattr(function, "__wrapped_stock__", function)
    if function is None:
        return ""
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(source.encode()).hexdigest()


def mismatches(owners: Mapping[str, Any], expected: Mapping[str, str]) -> list[str]:
    """The ``Owner.function`` names of ``expected`` whose installed source differs (or is gone)."""
    found = []
    for qualified, digest in expected.items():
        owner_name, _, name = qualified.partition(".")
        if source_sha256(owners[owner_name], name) != digest:
            found.append(qualified)
    return found


def allowed(what: str, owners: Mapping[str, Any], expected: Mapping[str, str]) -> bool:
    """True when ``what`` may be installed; otherwise log why not (stock pynetdicom stays)."""
    if not version_supported():
        log.warning(
            "pynetdicom %s is outside %s-%s: %s not installed, pynetdicom runs stock",
            pynetdicom.__version__,
            *SUPPORTED,
            what,
        )
        return False
    changed = mismatches(owners, expected)
    if changed:
        log.warning(
            "pynetdicom %s changed %s: %s not installed, pynetdicom runs stock",
            pynetdicom.__version__,
            ", ".join(changed),
            what,
        )
        return False
    return True


def install_allowed(what: str, owners: Callable[[], Mapping[str, Any]], expected: Mapping[str, str]) -> bool:
    """:func:`allowed` for ``owners()``, the classes/modules ``what`` replaces methods of; a
    module or class that moved (ImportError, AttributeError, KeyError) is logged and refused."""
    try:
        return allowed(what, owners(), expected)
    except (ImportError, AttributeError, KeyError) as exc:
        log.warning("pynetdicom layout changed (%s): %s not installed", exc, what)
        return False
