"""Gateway configuration: file < environment < flags, validated with clear messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_gateway.config import ConfigError, load

EXAMPLE = Path(__file__).resolve().parents[2] / "edge-gateway.example.toml"


def test_the_example_file_is_valid_and_documents_every_setting() -> None:
    config = load(EXAMPLE, environ={})
    assert config.stable_after == 60.0
    assert config.allowed_calling_aets == ("PACS",)
    documented = {
        line.split("=")[0].strip()
        for line in EXAMPLE.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert documented == set(config.public())


def test_environment_overrides_file_and_flags_override_environment() -> None:
    config = load(EXAMPLE, environ={"EDGE_GATEWAY_PORT": "104", "EDGE_GATEWAY_STABLE_AFTER": "5"})
    assert (config.port, config.stable_after) == (104, 5.0)
    config = load(EXAMPLE, {"port": 4242}, environ={"EDGE_GATEWAY_PORT": "104"})
    assert config.port == 4242


def test_invalid_settings_are_all_named() -> None:
    with pytest.raises(ConfigError) as error:
        load(
            EXAMPLE, {"ae_title": "WAY-TOO-LONG-AE-TITLE", "gateway_id": "a/b", "stable_after": 0}, environ={}
        )
    message = str(error.value)
    assert "ae_title" in message
    assert "gateway_id" in message
    assert "stable_after" in message


def test_a_bad_value_in_the_environment_is_reported_with_its_name() -> None:
    with pytest.raises(ConfigError, match="port"):
        load(EXAMPLE, environ={"EDGE_GATEWAY_PORT": "eleven"})


def test_receivers_default_to_one_process_per_usable_core(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a machine whose scheduler lets the gateway run on 2 of its cores, then on 64
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 3})
    assert load(EXAMPLE, environ={}).receiver_processes == 2  # the example leaves it to the machine
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(64)))
    assert load(EXAMPLE, environ={}).receiver_processes == 8  # AUTO_RECEIVERS_MAX
    # AND a number set by hand is taken as it is; out of range is named
    assert load(EXAMPLE, {"receivers": 1}, environ={}).receiver_processes == 1
    assert load(EXAMPLE, {"receivers": 12}, environ={}).receiver_processes == 12
    for bad in (-1, 65):
        with pytest.raises(ConfigError, match="receivers"):
            load(EXAMPLE, {"receivers": bad}, environ={})


@pytest.mark.parametrize(
    ("setting", "raw"),
    [("receivers", 2.7), ("receivers", True), ("max_associations", 16.5), ("port", False)],
)
def test_a_whole_number_setting_refuses_a_fraction_or_a_boolean(
    tmp_path: Path, setting: str, raw: object
) -> None:
    # GIVEN a TOML file that writes a count as 2.7 or true (int() would read 2 and 1)
    value = str(raw).lower()
    path = tmp_path / "gateway.toml"
    path.write_text(f'[gateway]\nbucket = "b"\n{setting} = {value}\n')
    # THEN the gateway does not start, and says which setting and what it read
    with pytest.raises(ConfigError, match=f"{setting}: cannot read {raw!r} as int"):
        load(path, environ={})


def test_numbers_still_read_from_toml_environment_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\nbucket = "b"\nreceivers = 3\nstable_after = 5\n')
    config = load(path, {"max_associations": "20"}, environ={"EDGE_GATEWAY_PORT": " 104 "})
    assert (config.receivers, config.stable_after, config.max_associations, config.port) == (3, 5.0, 20, 104)
