"""`local-cloud run --known-aet` gives make run's gateway its C-MOVE destinations.

The gateway's TOML is rewritten at each start and loaded without the environment, so this flag
is the one way to name a destination; a bad entry stops the CLI before anything starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_gateway.config import load
from edge_gateway.dimse_access import parse_known_aets
from local_cloud.cli import _parser
from local_cloud.stack import LocalCloud, LocalCloudConfig


def config_from(argv: list[str], data_dir: Path) -> LocalCloudConfig:
    args = _parser().parse_args(["run", "--data-dir", str(data_dir), *argv])
    return LocalCloudConfig(data_dir=args.data_dir, known_aets=tuple(args.known_aet))


def test_known_aets_from_the_cli_reach_the_gateway_config(tmp_path: Path) -> None:
    config = config_from(["--known-aet", "WS1=127.0.0.1:11113", "--known-aet", "PACS=[::1]:104"], tmp_path)
    path = LocalCloud(config).write_gateway_config()
    # Loaded as the stand-in loads it: the file alone, no environment
    gateway = load(path, environ={})
    assert gateway.known_aets == ("WS1=127.0.0.1:11113", "PACS=[::1]:104")
    peers = parse_known_aets(gateway.known_aets)
    assert (peers["WS1"].host, peers["WS1"].port) == ("127.0.0.1", 11113)
    assert (peers["PACS"].host, peers["PACS"].port) == ("::1", 104)


def test_without_the_flag_the_gateway_knows_no_destination(tmp_path: Path) -> None:
    path = LocalCloud(config_from([], tmp_path)).write_gateway_config()
    assert load(path, environ={}).known_aets == ()


@pytest.mark.parametrize("entry", ["WS1", "WS1=host", "WS1=host:0", "=127.0.0.1:104", "A" * 17 + "=h:104"])
def test_a_bad_known_aet_stops_the_cli_naming_it(entry: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        _parser().parse_args(["run", "--known-aet", entry])
    assert stopped.value.code == 2
    assert "--known-aet" in capsys.readouterr().err
