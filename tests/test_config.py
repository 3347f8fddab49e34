"""Configuration: every CLI option from a flag, a ``SUPERLINE_*`` variable or a TOML file, in that order."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from superline_zmq import __version__
from superline_zmq.cli import main, parse_args
from superline_zmq.config import ConfigError, LayeredParser, parse
from superline_zmq.logs import JsonFormatter


# ---------------------------------------------------------------- the layers, on any parser
def _parser() -> LayeredParser:
    parent = LayeredParser(add_help=False)
    parent.add_argument("--level", type=int, default=1)
    p = LayeredParser(prog="t", parents=[parent])
    p.add_argument("name", nargs="?", default="anon")
    p.add_argument("--mode", choices=("a", "b"), default="a")
    p.add_argument("--flag", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--item", action="append", default=[])
    p.add_argument("--secret", default=None, env="OTHER_SECRET")
    p.add_argument("--plain", default="x", layered=False)
    group = p.add_argument_group("later flags")
    group.add_argument("--curve-key", default=None)  # a flag another module adds: layered as well
    return p


def test_defaults_env_file_flag_in_that_order(tmp_path: Path) -> None:
    p = _parser()
    got = parse(p, [], {})
    assert vars(got.args) == {
        "level": 1, "name": "anon", "mode": "a", "flag": False, "item": [], "secret": None, "plain": "x",
        "curve_key": None,
    }  # fmt: skip
    assert set(got.sources.values()) == {"default"}
    cfg = tmp_path / "c.toml"
    cfg.write_text('level = 3\nmode = "b"\nflag = true\nitem = ["p", "q"]\nname = "file"\ncurve_key = "k1"\n')
    env = {"SUPERLINE_CONFIG": str(cfg), "SUPERLINE_LEVEL": "4", "SUPERLINE_ITEM": "r, s"}
    got = parse(p, [], env)
    assert (got.args.level, got.args.mode, got.args.flag, got.args.item) == (4, "b", True, ["r", "s"])
    assert (got.args.name, got.args.curve_key) == ("file", "k1")
    assert got.sources["level"] == "env SUPERLINE_LEVEL" and got.sources["mode"] == "file mode"
    got = parse(p, ["cli", "--level", "5", "--no-flag", "--item", "z", "--curve-key", "k2"], env)
    assert (got.args.name, got.args.level, got.args.flag, got.args.item, got.args.curve_key) == (
        "cli", 5, False, ["z"], "k2",
    )  # fmt: skip
    assert got.sources["level"] == "flag"
    assert parse(p, [], {"OTHER_SECRET": "s", "SUPERLINE_PLAIN": "ignored"}).args.secret == "s"
    assert parse(p, [], {"SUPERLINE_PLAIN": "ignored"}).args.plain == "x"
    assert "[env SUPERLINE_LEVEL]" in p.format_help() and "[env OTHER_SECRET]" in p.format_help()


@pytest.mark.parametrize(
    ("env", "text", "message"),
    [
        ({"SUPERLINE_LEVEL": "x"}, "", "environment variable SUPERLINE_LEVEL: invalid int value: 'x'"),
        ({"SUPERLINE_MODE": "c"}, "", "environment variable SUPERLINE_MODE: invalid choice: 'c'"),
        ({"SUPERLINE_FLAG": "maybe"}, "", "environment variable SUPERLINE_FLAG: expected a boolean"),
        ({}, "level = 'x'", "key 'level': invalid int value: 'x'"),
        ({}, "flag = 1", "key 'flag': expected true or false"),
        ({}, "mode = ['a']", "key 'mode': expected a string or a number"),
        ({}, "nope = 1", "'nope' is not an option"),
        ({}, "level = ", "not valid TOML"),
    ],
)
def test_bad_settings_name_their_source(tmp_path: Path, env: dict[str, str], text: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        parse(_parser(), ["--plain", "y"], {**env, "SUPERLINE_CONFIG": str(cfg)})
    assert message in str(info.value)
    if not env:
        assert str(cfg) in str(info.value)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        parse(_parser(), [], {"SUPERLINE_CONFIG": str(tmp_path / "missing.toml")})


# ---------------------------------------------------------------- the superline-zmq command line
def test_run_options_from_env_and_file_override_defaults(tmp_path: Path) -> None:
    assert parse_args(["run", "m:app"], {}).args.ws == ("127.0.0.1", 0)
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        'app = "m:app"\nws = "0.0.0.0:8080"\nseed = ["tcp://10.0.0.1:7001"]\nmetrics = "127.0.0.1:9100"\n'
        'log-level = "debug"\njson = true\ntiming = "local"\nhealth = false\n'
    )
    args = parse_args(["run", "--config", str(cfg)], {}).args
    assert (args.app, args.ws, args.seed, args.metrics) == (
        "m:app", ("0.0.0.0", 8080), ["tcp://10.0.0.1:7001"], ("127.0.0.1", 9100),
    )  # fmt: skip
    assert (args.log_level, args.json, args.heartbeat_interval, args.health) == ("debug", True, 0.2, False)
    env = {"SUPERLINE_CONFIG": str(cfg), "SUPERLINE_WS": "127.0.0.1:9000", "SUPERLINE_SEED": "tcp://a:1,tcp://b:2"}
    args = parse_args(["run"], env).args
    assert (args.ws, args.seed, args.log_level) == (("127.0.0.1", 9000), ["tcp://a:1", "tcp://b:2"], "debug")
    args = parse_args(["run", "--ws", "127.0.0.1:1", "--log-level", "ERROR"], env).args
    assert (args.ws, args.log_level) == (("127.0.0.1", 1), "error")
    assert parse_args(["run"], {"SUPERLINE_APP": "pkg.mod:make"}).args.app == "pkg.mod:make"
    assert parse_args(["demo"], {"SUPERLINE_DEMO_SEED": "7", "SUPERLINE_SEED": "tcp://x:1"}).args.seed == 7


@pytest.mark.parametrize(
    ("argv", "env", "config", "message"),
    [
        (["run", "m:app", "--log-level", "bogus"], {}, "", "argument --log-level: expected one of debug"),
        (["run", "m:app"], {"SUPERLINE_LOG_LEVEL": "bogus"}, "", "environment variable SUPERLINE_LOG_LEVEL"),
        (["run", "m:app"], {}, 'log-level = "bogus"', "key 'log-level': expected one of debug"),
        (["run", "m:app"], {"SUPERLINE_WS": "nowhere"}, "", "SUPERLINE_WS: expected HOST:PORT, got 'nowhere'"),
        (["run", "m:app"], {}, "shutdown-timeout = -1", "key 'shutdown-timeout': expected a positive number"),
        (["run", "m:app"], {}, "nodes = 3", "'nodes' is not an option of 'run'"),
        (["run", "m:app"], {"SUPERLINE_JSON": "perhaps"}, "", "SUPERLINE_JSON: expected a boolean"),
        (["run", "m:app", "--redis-url", "redis://x"], {}, "", "--redis-url (given as a flag) is an option of"),
        (["run", "m:app", "--adapter", "redis"], {"SUPERLINE_BIND": "tcp://*:1"}, "", "--bind (from $SUPERLINE_BIND)"),
        (["run"], {}, "", "MODULE:APP is required"),
        (["cluster", "m:app"], {"SUPERLINE_NODES": "99"}, "", "SUPERLINE_NODES: expected 1..16, got 99"),
        (["run", "m:app", "--adapter", "nats"], {}, "", "argument --adapter: expected one of zeromq, redis"),
    ],
)
def test_bad_settings_exit_2_naming_the_source(
    argv: list[str],
    env: dict[str, str],
    config: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("SUPERLINE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if config:
        cfg = tmp_path / "c.toml"
        cfg.write_text(config + "\n")
        argv = [*argv, "--config", str(cfg)]
    assert main([*argv, "--loop", "asyncio"]) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"superline-zmq {__version__}"


def test_run_redis_without_the_redis_distribution_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "superline_zmq_redis", None)  # as if not installed
    monkeypatch.chdir(Path(__file__).resolve().parent)
    assert main(["run", "presence_app:app", "--adapter", "redis", "--loop", "asyncio"]) == 2
    assert "pip install superline-zmq-redis" in capsys.readouterr().err


def test_the_redis_runner_is_an_alias_of_run() -> None:
    from superline_zmq_redis.node import translate

    assert translate(["m:app", "--url", "redis://h/0", "--prefix=p", "--presence-ttl", "9", "--json"]) == [
        "m:app", "--redis-url", "redis://h/0", "--redis-prefix=p", "--redis-presence-ttl", "9", "--json",
    ]  # fmt: skip


def test_json_log_lines_are_one_object_each() -> None:
    record = logging.LogRecord("superline_zmq.cli", logging.ERROR, __file__, 1, "two\nlines %s", ("here",), None)
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry: dict[str, Any] = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "superline_zmq.cli"
    assert entry["message"] == "two\nlines here" and "ValueError: boom" in entry["exc"]
    assert entry["time"].endswith("Z") and isinstance(entry["pid"], int)
