"""ClusterTiming presets, and how adapters, the CLI and the testing kit take them."""

from __future__ import annotations

import dataclasses

import pytest

from superline_zmq import ClusterTiming, MemoryBus
from superline_zmq.cli import main, parse_args
from superline_zmq.testing import LocalCluster


def test_presets() -> None:
    lan = ClusterTiming.lan()
    assert (lan.heartbeat_interval, lan.ttl, lan.forget_time) == (1.0, 5.0, 10.0)
    assert (lan.subscribe_timeout, lan.subscribe_retry, lan.close_linger) == (2.0, 0.5, 0.2)
    assert (lan.reprobe_initial, lan.reprobe_max) == (1.0, 30.0)
    local = ClusterTiming.local()
    assert (local.heartbeat_interval, local.ttl, local.forget_time) == (0.2, 1.0, 2.0)
    assert local.subscribe_timeout < lan.subscribe_timeout
    with pytest.raises(dataclasses.FrozenInstanceError):
        lan.ttl = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"heartbeat_interval": 1.0, "ttl": 1.0}, "heartbeat_interval"),
        ({"heartbeat_interval": 0.0}, "heartbeat_interval"),
        ({"ttl": 5.0, "forget_after": 4.0}, r"forget_after \(4.0\) must be at least ttl \(5.0\)"),
        ({"subscribe_timeout": 0.0}, "subscribe_timeout"),
        ({"close_linger": -1.0}, "close_linger"),
        ({"reprobe_initial": 5.0, "reprobe_max": 2.0}, "reprobe_initial <= reprobe_max"),
        ({"ttl": float("nan")}, "finite"),
        ({"ttl": "5"}, "finite"),
    ],
)
def test_inconsistent_timings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClusterTiming(**fields)  # type: ignore[arg-type]


def test_override_keeps_what_is_not_given_and_forget_after_follows_the_ttl() -> None:
    lan = ClusterTiming.lan()
    assert lan.override() is lan
    t = lan.override(ttl=3.0)
    assert (t.heartbeat_interval, t.ttl, t.forget_time) == (1.0, 3.0, 6.0)
    assert lan.override(heartbeat_interval=0.5, forget_after=20.0).forget_time == 20.0
    with pytest.raises(ValueError, match="heartbeat_interval"):
        ClusterTiming.local().override(heartbeat_interval=2.0)


@pytest.mark.parametrize(
    "timing",
    [ClusterTiming.lan(), ClusterTiming.local(), ClusterTiming(heartbeat_interval=0.1, ttl=0.6, forget_after=3.0)],
)
def test_specs_round_trip(timing: ClusterTiming) -> None:
    spec = timing.to_spec()
    assert ClusterTiming.from_spec(spec) == timing
    assert spec in ("lan", "local") or spec.startswith("{")


@pytest.mark.parametrize("spec", ["wan", "", "[1]", '{"nope": 1}', '{"ttl": 0.5}'])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        ClusterTiming.from_spec(spec)


def test_memory_bus_takes_a_preset_and_the_old_keywords_override_it() -> None:
    assert MemoryBus().timing == ClusterTiming.lan()
    bus = MemoryBus(timing=ClusterTiming.local(), ttl=3.0)
    assert (bus.heartbeat_interval, bus.ttl, bus.timing.subscribe_timeout) == (0.2, 3.0, 1.0)
    assert MemoryBus(heartbeat_interval=0.1, ttl=0.6).timing.forget_time == 1.2
    with pytest.raises(ValueError, match="heartbeat_interval"):
        MemoryBus(heartbeat_interval=1.0, ttl=1.0)


def test_local_cluster_passes_its_timing_to_every_node() -> None:
    cluster = LocalCluster("presence_app:app", 2)
    assert cluster.timing == ClusterTiming.local() and (cluster.heartbeat_interval, cluster.ttl) == (0.2, 1.0)
    args = cluster._command([], None, 0)
    assert args[args.index("--timing") + 1] == "local"
    custom = LocalCluster("presence_app:app", 2, timing=ClusterTiming.lan(), ttl=2.0)
    args = custom._command([], None, 0)
    assert ClusterTiming.from_spec(args[args.index("--timing") + 1]) == ClusterTiming.lan().override(ttl=2.0)


def _resolved(*argv: str) -> ClusterTiming:
    args = parse_args(list(argv), environ={}).args
    assert (args.heartbeat_interval, args.ttl) == (args.timing.heartbeat_interval, args.timing.ttl)
    timing: ClusterTiming = args.timing
    return timing


def test_cli_timing_defaults_and_overrides() -> None:
    assert _resolved("run", "m:app") == ClusterTiming.lan()
    assert _resolved("cluster", "m:app") == ClusterTiming.local()
    assert _resolved("demo") == ClusterTiming.local()
    assert _resolved("run", "m:app", "--timing", "local") == ClusterTiming.local()
    assert _resolved("run", "m:app", "--ttl", "3") == ClusterTiming.lan().override(ttl=3.0)
    # a slower beat alone stretches the ttl to three beats, as before presets
    assert _resolved("run", "m:app", "--heartbeat-interval", "2").ttl == 6.0
    assert _resolved("cluster", "m:app", "--heartbeat-interval", "0.2", "--ttl", "1.0").ttl == 1.0
    assert _resolved("run", "m:app", "--forget-after", "30").forget_time == 30.0
    assert _resolved("run", "m:app", "--timing", '{"ttl": 8}') == ClusterTiming(ttl=8.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "m:app", "--timing", "wan"],
        ["run", "m:app", "--timing", "local", "--ttl", "0.1"],
        ["run", "m:app", "--ttl", "4", "--forget-after", "2"],
    ],
)
def test_cli_bad_timings_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "--timing" in capsys.readouterr().err
