"""Command-line options that also read the environment and a TOML file: flag > env > file > default.

:class:`LayeredParser` is an :class:`argparse.ArgumentParser` whose ``add_argument`` also
records each option, so every flag added to it (or to its subcommands, argument groups and
parents) gets, with no more code:

- an **environment variable**: ``SUPERLINE_`` + the long flag's name in upper case with
  ``-`` as ``_`` (``--log-level`` -> ``SUPERLINE_LOG_LEVEL``; a positional: its ``dest``),
  named in ``--help``; ``env=`` overrides the name, ``layered=False`` opts out;
- a **config-file key**: the long flag without its dashes (``log-level = "debug"``;
  ``log_level`` works too), in the TOML file given with ``--config FILE`` or
  ``SUPERLINE_CONFIG``.

:func:`parse` resolves every option in that order of precedence and converts env and
file values with the option's own ``type`` and ``choices``, exactly as a flag would be.
A bad value is a :class:`ConfigError` naming where it came from (the environment
variable or the file's key); argparse itself reports bad flags. Both exit with code 2 in
the CLI. Value kinds:

- ``store`` options (with ``type=``): env and file values go through ``type`` (a TOML
  number or string is taken as its text);
- switches (``store_true``, :class:`argparse.BooleanOptionalAction`): env ``1/0``,
  ``true/false``, ``yes/no``, ``on/off``; a TOML boolean;
- ``append`` options: env values separated by commas; a TOML array (or one value).
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: Prefix of every environment variable.
ENV_PREFIX = "SUPERLINE_"
#: The environment variable naming the config file when ``--config`` is not given.
CONFIG_ENV = "SUPERLINE_CONFIG"

Kind = Literal["value", "switch", "list"]
Source = str  # "flag", "env SUPERLINE_X", "file KEY", "default"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(Exception):
    """A setting from the environment or a config file is invalid (the CLI exits 2)."""


@dataclass(frozen=True)
class Setting:
    """One option as the layers see it."""

    dest: str
    #: The long flag (``--log-level``), or "" for a positional.
    flag: str
    env: str
    key: str
    kind: Kind
    convert: Callable[[str], Any] | None
    choices: tuple[Any, ...] | None
    default: Any

    def from_text(self, raw: str, where: str) -> Any:
        """Convert one text value (an env var, an item of a list) as argparse would."""
        if self.kind == "switch":
            word = raw.strip().lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
            raise ConfigError(f"{where}: expected a boolean (1/0, true/false, yes/no, on/off), got {raw!r}")
        if self.kind == "list":
            return [self._one(item.strip(), where) for item in raw.split(",") if item.strip()]
        return self._one(raw, where)

    def from_file(self, value: Any, where: str) -> Any:
        """Convert one TOML value."""
        if self.kind == "switch":
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                return self.from_text(value, where)
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        if self.kind == "list":
            items = value if isinstance(value, list) else [value]
            return [self._one(_scalar(item, where), where) for item in items]
        return self._one(_scalar(value, where), where)

    def _one(self, raw: str, where: str) -> Any:
        value: Any = raw
        if self.convert is not None:
            try:
                value = self.convert(raw)
            except argparse.ArgumentTypeError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            except (TypeError, ValueError):
                name = getattr(self.convert, "__name__", repr(self.convert))
                raise ConfigError(f"{where}: invalid {name} value: {raw!r}") from None
        if self.choices is not None and value not in self.choices:
            options = ", ".join(map(str, self.choices))
            raise ConfigError(f"{where}: invalid choice: {raw!r} (choose from {options})")
        return value


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where}: expected a string or a number, got {value!r}")
    return str(value)


class LayeredParser(argparse.ArgumentParser):
    """An ArgumentParser whose options also read the environment and a config file (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Every layered option of this parser, in the order added (its parents' first).
        self.settings: list[Setting] = []
        for parent in kwargs.get("parents", ()):
            if isinstance(parent, LayeredParser):
                self.settings.extend(parent.settings)
        #: Subcommand name -> its parser (filled by ``add_subparsers().add_parser``).
        self.commands: dict[str, LayeredParser] = {}

    def add_argument(self, *args: Any, env: str | None = None, layered: bool = True, **kwargs: Any) -> Any:
        """``ArgumentParser.add_argument``, recording the option for the env and file layers.

        ``env`` names its environment variable (default: derived from the flag);
        ``layered=False``: a plain flag, read from the command line only.
        """
        setting = self._setting(args, kwargs, env) if layered else None
        if setting is not None:
            kwargs["default"] = argparse.SUPPRESS
            help_text = kwargs.get("help")
            if help_text is not argparse.SUPPRESS:
                note = f"[env {setting.env}]"
                kwargs["help"] = f"{help_text} {note}" if help_text else note
        action = super().add_argument(*args, **kwargs)
        if setting is not None:
            self.settings.append(setting)
        return action

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        """An argument group whose options are layered too."""
        group = super().add_argument_group(*args, **kwargs)
        self._layer_container(group)
        return group

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any:
        """A mutually exclusive group whose options are layered too."""
        group = super().add_mutually_exclusive_group(**kwargs)
        self._layer_container(group)
        return group

    def add_subparsers(self, **kwargs: Any) -> Any:
        """Subcommands; each ``add_parser`` is a :class:`LayeredParser` recorded in :attr:`commands`."""
        action = super().add_subparsers(**kwargs)
        add_parser = action.add_parser

        def add(name: str, **options: Any) -> LayeredParser:
            parser: LayeredParser = add_parser(name, **options)
            self.commands[name] = parser
            return parser

        action.add_parser = add  # type: ignore[method-assign]
        return action

    def _layer_container(self, group: Any) -> None:
        original = group.add_argument

        def add(*args: Any, env: str | None = None, layered: bool = True, **kwargs: Any) -> Any:
            setting = self._setting(args, kwargs, env) if layered else None
            if setting is not None:
                kwargs["default"] = argparse.SUPPRESS
                if kwargs.get("help") is not argparse.SUPPRESS:
                    kwargs["help"] = f"{kwargs.get('help') or ''} [env {setting.env}]".strip()
            action = original(*args, **kwargs)
            if setting is not None:
                self.settings.append(setting)
            return action

        group.add_argument = add

    def _setting(self, args: Sequence[str], kwargs: Mapping[str, Any], env: str | None) -> Setting | None:
        action = kwargs.get("action", "store")
        if action in ("help", "version", "count", "store_const", "append_const", "extend"):
            return None
        if args and args[0].startswith("-"):
            longs = [a for a in args if a.startswith("--")]
            if not longs:
                return None  # a short flag alone: command line only
            flag = longs[0]
            name = flag[2:]
        else:
            flag = ""
            name = str(kwargs.get("dest") or args[0]).replace("_", "-")
        dest = str(kwargs.get("dest") or name.replace("-", "_"))
        if action in ("store_true", "store_false") or action is argparse.BooleanOptionalAction:
            kind: Kind = "switch"
            default = kwargs.get("default", action == "store_false")
        elif action == "append":
            kind = "list"
            default = kwargs.get("default", None)
        elif action == "store":
            kind = "value"
            default = kwargs.get("default", None)
        else:
            return None  # a custom action: command line only
        choices = kwargs.get("choices")
        return Setting(
            dest=dest,
            flag=flag,
            env=env or ENV_PREFIX + name.upper().replace("-", "_"),
            key=name,
            kind=kind,
            convert=kwargs.get("type"),
            choices=tuple(choices) if choices is not None else None,
            default=list(default) if kind == "list" and default is not None else default,
        )


@dataclass
class Parsed:
    """What :func:`parse` resolved: the namespace, and where each value came from."""

    args: argparse.Namespace
    #: dest -> ``"flag"``, ``"env NAME"``, ``"file KEY"`` or ``"default"``.
    sources: dict[str, Source]
    #: The config file read, if any.
    config: Path | None


def parse(
    parser: LayeredParser,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    config_dest: str = "config",
) -> Parsed:
    """Parse ``argv`` (argparse's errors exit 2), then fill every unset option from
    ``environ``, then from the config file, then its default (:class:`ConfigError` on a
    bad env or file value, or a bad file)."""
    environ = os.environ if environ is None else environ
    args = parser.parse_args(argv)
    command = getattr(args, "command", None)
    sub = parser.commands.get(command) if command is not None else None
    settings = [*parser.settings, *(sub.settings if sub is not None else [])]
    path_text = getattr(args, config_dest, None) or environ.get(CONFIG_ENV) or None
    path = Path(path_text) if path_text else None
    table = _read_config(path, settings, command) if path is not None else {}
    sources: dict[str, Source] = {}
    for s in settings:
        if s.dest in vars(args):
            sources[s.dest] = "flag"
            continue
        raw = environ.get(s.env)
        if raw is not None and raw != "":
            setattr(args, s.dest, s.from_text(raw, f"environment variable {s.env}"))
            sources[s.dest] = f"env {s.env}"
        elif s.key in table:
            assert path is not None
            setattr(args, s.dest, s.from_file(table[s.key], f"config file {path}: key {s.key!r}"))
            sources[s.dest] = f"file {s.key}"
        else:
            setattr(args, s.dest, list(s.default) if isinstance(s.default, list) else s.default)
            sources[s.dest] = "default"
    return Parsed(args, sources, path)


def _read_config(path: Path, settings: Sequence[Setting], command: str | None) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    keys = {s.key for s in settings}
    table: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("_", "-")
        if key not in keys:
            scope = f"of {command!r}" if command else "known"
            raise ConfigError(
                f"config file {path}: {raw_key!r} is not an option {scope} (options: {', '.join(sorted(keys))})"
            )
        table[key] = value
    return table


__all__ = ["CONFIG_ENV", "ENV_PREFIX", "ConfigError", "LayeredParser", "Parsed", "Setting", "parse"]
