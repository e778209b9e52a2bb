"""QIDO-RS matching and index choice, on a table filled by the real ingest code."""

from __future__ import annotations

from typing import Any

import pytest
from query.errors import BadRequest
from query.matching import Range, date_range, match_name, time_range
from query.search import StudyFilter, find_studies
from query.store import IndexStore

from tests.conftest import Aws
from tests.helpers.query_api import index_two_patients


@pytest.fixture(scope="module")
def indexed(module_aws: Aws) -> Aws:
    """Two patients indexed once for the module: every test here only reads."""
    index_two_patients(module_aws, ct_instances=2)
    return module_aws


def search(aws: Aws, **params: str) -> list[str]:
    store = IndexStore(aws.dynamodb, aws.table)
    flt = StudyFilter.from_params(params)
    return [s["PatientID"] for s in find_studies(store, store.sites(), flt)]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["PID-1", "PID-2"]),
        ({"PatientID": "PID-2"}, ["PID-2"]),
        ({"PatientName": "muller", "fuzzymatching": "true"}, ["PID-1"]),
        ({"PatientName": "HAN", "fuzzymatching": "true"}, ["PID-1"]),
        ({"PatientName": "Doe*"}, ["PID-2"]),
        ({"PatientName": "doe^jane"}, ["PID-2"]),
        ({"PatientName": "*ane"}, ["PID-2"]),
        ({"StudyDate": "20240101-20241231"}, ["PID-1"]),
        ({"StudyDate": "-20231231"}, ["PID-2"]),
        ({"ModalitiesInStudy": "MR"}, ["PID-2"]),
        ({"PatientID": "PID-1", "ModalitiesInStudy": "MR"}, []),
    ],
)
def test_study_search(indexed: Aws, params: dict[str, str], expected: list[str]) -> None:
    assert sorted(search(indexed, **params)) == expected


def test_searches_never_scan(indexed: Aws) -> None:
    operations: list[str] = []

    def record(model: Any, **_: Any) -> None:
        operations.append(model.name)

    events = indexed.dynamodb.meta.events
    events.register("before-call.dynamodb.*", record)
    try:
        for params in ({}, {"PatientID": "PID-1"}, {"PatientName": "mul", "fuzzymatching": "true"}):
            search(indexed, **params)
    finally:
        events.unregister("before-call.dynamodb.*", record)
    assert operations
    assert "Scan" not in operations


@pytest.mark.parametrize(
    "value",
    [
        "2024",
        "20240101-2024",
        "yesterday",
        "2024-01-01",  # ISO: its dashes are the range separator of PS3.4 C.2.2.2.5.1
        "20241345",  # month 13
        "20240230",  # February 30
        "00000101",  # year 0
        "20240101-20231301",
        "20240201-20240101",  # ends before it starts
        "-",
        "2024.13.01",
    ],
)
def test_malformed_dates_are_bad_requests_naming_the_parameter(value: str) -> None:
    with pytest.raises(BadRequest, match=r"^StudyDate: ") as refused:
        date_range(value, "StudyDate")
    assert value not in str(refused.value) or value == "-"


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("20240229", "20240229", "20240229"),
        ("2019.06.20", "20190620", "20190620"),  # ACR-NEMA, as ingest normalises stored values
        ("2019.06.01-2019.06.30", "20190601", "20190630"),
        ("20240101-", "20240101", "99999999"),
        ("-20231231", "00000000", "20231231"),
    ],
)
def test_dates_and_legacy_dates_name_a_range(value: str, low: str, high: str) -> None:
    assert date_range(value, "StudyDate") == Range(low, high)


@pytest.mark.parametrize("value", ["24", "0860", "126100", "1200.1234567", "12:30:61", "noon", "12-1300x"])
def test_malformed_times_are_bad_requests(value: str) -> None:
    with pytest.raises(BadRequest, match=r"^StudyTime: "):
        time_range(value, "StudyTime")


def test_times_and_legacy_times_name_a_range() -> None:
    assert time_range("12:30-1300", "StudyTime") == Range("123000.000000", "130059.999999")
    assert time_range("235960.5", "StudyTime").low == "235960.500000"  # a leap second


def test_fuzzy_name_matching_is_word_prefix_case_and_accent_insensitive() -> None:
    assert match_name("Müller^Hans", "MUL ha", fuzzy=True)
    assert not match_name("Müller^Hans", "ans", fuzzy=True)
