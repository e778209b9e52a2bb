"""Known AE titles and per-AE DIMSE permissions, as read from the gateway configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_gateway.config import ConfigError, load
from edge_gateway.dimse_access import (
    AccessConfigError,
    AccessTable,
    Peer,
    parse_known_aets,
    parse_permissions,
)
from edge_gateway.query_retrieve import matches_key


def test_known_aets_are_read_as_title_host_port() -> None:
    peers = parse_known_aets(("WS1=10.0.0.5:104", " PACS = pacs.example.org:11112"))
    assert peers == {"WS1": Peer("WS1", "10.0.0.5", 104), "PACS": Peer("PACS", "pacs.example.org", 11112)}


@pytest.mark.parametrize("entry", ["WS1", "WS1=host", "WS1=host:0", "=host:104", "WS1=host:port"])
def test_a_bad_known_aet_entry_is_named(entry: str) -> None:
    with pytest.raises(AccessConfigError, match="known_aets"):
        parse_known_aets((entry,))


def test_permissions_grant_only_what_is_listed() -> None:
    table = parse_permissions(("WS1: find move=PACS,WS1", "PACS: commit get move=*"))
    assert table["WS1"].find and not table["WS1"].get and not table["WS1"].commit
    assert table["WS1"].may_move_to("PACS") and not table["WS1"].may_move_to("OTHER")
    assert table["PACS"].may_move_to("ANY") and table["PACS"].commit and not table["PACS"].find


def test_an_unlisted_calling_aet_may_do_nothing_once_permissions_are_set() -> None:
    table = AccessTable({}, parse_permissions(("WS1: find",)))
    assert not table.of("STRANGER").find
    assert table.of("WS1  ").find  # AE titles are space padded on the wire
    assert AccessTable({}, {}).of("ANYONE").commit  # no permissions configured: everything


def test_config_names_bad_dimse_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load(
            overrides={
                "bucket": "b",
                "spool_dir": tmp_path,
                "known_aets": ("WS1=host:104",),
                "dimse_permissions": ("WS1: find move=NOWHERE", "WS2: fly"),
            },
            environ={},
        )
    assert "dimse_permissions" in str(error.value)
    with pytest.raises(ConfigError, match="move to NOWHERE"):
        load(
            overrides={
                "bucket": "b",
                "spool_dir": tmp_path,
                "known_aets": ("WS1=host:104",),
                "dimse_permissions": ("WS1: find move=NOWHERE",),
            },
            environ={},
        )


def test_lists_come_from_the_environment_too(tmp_path: Path) -> None:
    config = load(
        overrides={"bucket": "b", "spool_dir": tmp_path},
        environ={
            "EDGE_GATEWAY_KNOWN_AETS": "WS1=10.0.0.5:104,PACS=10.0.0.2:11112",
            "EDGE_GATEWAY_TABLE_NAME": "dicom-index",
            "EDGE_GATEWAY_MAX_FIND_MATCHES": "50",
        },
    )
    assert config.known_aets == ("WS1=10.0.0.5:104", "PACS=10.0.0.2:11112")
    assert config.table_name == "dicom-index"
    assert config.max_find_matches == 50


@pytest.mark.parametrize(
    ("keyword", "vr", "pattern", "values", "expected"),
    [
        ("PatientName", "PN", "doe^j*", ["Doe^John"], True),
        ("PatientName", "PN", "DOE", ["Doe^John"], False),
        ("PatientName", "PN", "DOE^JOHN", ["Doe^John"], True),
        ("StudyDate", "DA", "20240101-20241231", ["20240105"], True),
        ("StudyDate", "DA", "-20231231", ["20240105"], False),
        ("StudyTime", "TM", "0800-1200", ["093000"], True),
        ("Modality", "CS", "C?", ["CT"], True),
        ("Modality", "CS", "MR", ["CT"], False),
        ("SOPInstanceUID", "UI", "1.2.3\\1.2.4", ["1.2.4"], True),
        ("SeriesNumber", "IS", "2", ["2"], True),
        ("StudyDescription", "LO", "*", [], True),
        ("StudyDescription", "LO", "HEAD*", [], False),
    ],
)
def test_c_find_key_matching(keyword: str, vr: str, pattern: str, values: list[str], expected: bool) -> None:
    assert matches_key(keyword, vr, pattern, values) is expected


def test_retrieve_cache_keeps_recent_entries_within_its_limit(tmp_path: Path) -> None:
    import os

    from edge_gateway.retrieve_cache import RetrieveCache

    cache = RetrieveCache(tmp_path / "cache", max_bytes=250)
    cache.put("1.2.1", "sha256:aa", b"x" * 100)
    cache.put("1.2.2", "bb", b"y" * 100)
    [first] = list((tmp_path / "cache").glob("1.2.1-*.dcm"))
    os.utime(first, (1, 1))  # the oldest use
    assert cache.get("1.2.2", "bb") == b"y" * 100
    cache.put("1.2.3", "cc", b"z" * 100)  # over the limit: the least recently used goes
    assert cache.get("1.2.1", "sha256:aa") is None
    assert cache.get("1.2.3", "cc") == b"z" * 100
    assert cache.get("1.2.2", "other-version") is None  # a new version is another entry
    assert (cache.hits, cache.misses) == (2, 2)
