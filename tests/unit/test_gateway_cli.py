"""The gateway's command line: bad options are refused with the option and
the rule named, before anything starts."""

from __future__ import annotations

import pytest

from gateway.cli import parse_settings

BASE = ["--etcd", "http://127.0.0.1:2379", "--cluster", "c", "--address", "127.0.0.1"]


def refusal(capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    with pytest.raises(SystemExit) as exited:
        parse_settings([*BASE, *extra])
    assert exited.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_defaults_fill_big_parts_in_bursts_and_small_ones_otherwise(tmp_path):
    settings = parse_settings([*BASE, "--state-dir", str(tmp_path)])
    assert (settings.shard_routes, settings.quiet_shard_routes) == (256, 64)
    tuned = parse_settings(
        [*BASE, "--state-dir", str(tmp_path), "--shard-routes", "8", "--quiet-shard-routes", "2"]
    )
    assert (tuned.shard_routes, tuned.quiet_shard_routes) == (8, 2)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shard-routes", "0"], "--shard-routes must be at least 1"),
        (["--quiet-shard-routes", "0"], "--quiet-shard-routes must be at least 1"),
        (["--quiet-shard-routes", "many"], "--quiet-shard-routes: invalid int value: 'many'"),
        (["--wipe-share", "2"], "--wipe-share must be between 0 and 1"),
        (["--metrics-port", "70000"], "--metrics-port 70000 must be from 1 to 65535"),
        (["--metrics-port", "30001"], "--metrics-port 30001 lies inside --port-range"),
    ],
)
def test_bad_options_are_refused_by_name(capsys, tmp_path, extra, message):
    assert refusal(capsys, "--state-dir", str(tmp_path), *extra).endswith(message)
