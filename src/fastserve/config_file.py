"""Settings from a TOML file: `--config PATH`, else `[tool.fastserve]` in the app
directory's pyproject.toml; or from a gunicorn.conf.py (`--config PATH.py`,
fastserve/gunicorn_config.py), whose settings become the same table.

The file fills click's `default_map`, so click applies the precedence itself:
command line > FASTSERVE_* environment > file > Config's defaults. Keys are the long
option names (`port`, `forwarded-allow-ips`, `reload-dir`) and `app`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional

import click
from click.core import ParameterSource

from fastserve import gunicorn_config

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYPROJECT = "pyproject.toml"
# Options about the command itself, not settings a file can hold (--help and
# --version have no value, so they are left out too).
COMMAND_OPTIONS = {"config_file", "print_config", "check_config"}
# Where ctx.meta keeps the path of the file that filled default_map.
FILE_META_KEY = "fastserve.config_file"
# Where ctx.meta keeps the server hooks of a gunicorn.conf.py (a ServerHooks).
HOOKS_META_KEY = "fastserve.hooks"
# A --config file with this suffix is a Gunicorn config file (Python).
PYTHON_SUFFIX = ".py"

# Shown as set or not, never as they are: --print-config output gets pasted into issues.
SECRETS = {"ssl_keyfile_password"}

# Comma-separated options, which a file may also give as a list of strings.
COMMA_SEPARATED = {"forwarded_allow_ips"}

SOURCE_LABELS = {
    ParameterSource.COMMANDLINE: "command line",
    ParameterSource.DEFAULT: "default",
}


class ConfigFileCommand(click.Command):
    """A command whose defaults come first from a TOML config file."""

    def parse_args(self, ctx: click.Context, args: list) -> list:
        # Shell completion parses half-typed command lines: no file errors there.
        if ctx.resilient_parsing:
            return super().parse_args(ctx, args)
        # --config and --app-dir must be known before any other option takes its
        # value from default_map, so read them (command line, then environment) first.
        opts, _, _ = self.make_parser(ctx).parse_args(args=list(args))
        params = {param.name: param for param in self.get_params(ctx)}
        config_path = _early_value(ctx, params["config_file"], opts)
        if config_path is None:
            pyproject = os.path.join(_early_value(ctx, params["app_dir"], opts), PYPROJECT)
            if os.path.isfile(pyproject):
                table = read_toml(pyproject).get("tool", {}).get("fastserve")
                if table is not None:
                    ctx.default_map = file_defaults(ctx, self, table, pyproject)
                    ctx.meta[FILE_META_KEY] = pyproject
        else:
            ctx.default_map = file_defaults(
                ctx, self, read_file(ctx, self, config_path), config_path
            )
            ctx.meta[FILE_META_KEY] = config_path
        return super().parse_args(ctx, args)


def _early_value(ctx: click.Context, param: click.Parameter, opts: dict) -> Any:
    value, _ = param.consume_value(ctx, opts)
    return param.type_cast_value(ctx, value)


def read_file(ctx: click.Context, command: click.Command, path: str) -> dict:
    """The --config file's settings by long option name: TOML, or a gunicorn.conf.py
    (its hooks go into ctx.meta; the Gunicorn settings it ignores are named on stderr)."""
    if not path.endswith(PYTHON_SUFFIX):
        return read_toml(path)
    try:
        table, hooks, ignored = gunicorn_config.read(path, set(file_keys(command, ctx)))
    except gunicorn_config.GunicornConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if ignored:
        click.echo(
            f"fastserve: {path}: ignored (no fastserve equivalent): {', '.join(ignored)}",
            err=True,
        )
    ctx.meta[HOOKS_META_KEY] = hooks
    return table


def read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.UsageError(f"{path}: {exc}") from None


def file_keys(command: click.Command, ctx: click.Context) -> dict:
    """Each key a file may use -> its parameter: every long option name, and `app`."""
    keys = {}
    for param in command.get_params(ctx):
        if param.name in COMMAND_OPTIONS or not param.expose_value:
            continue
        if isinstance(param, click.Argument):
            keys[param.name] = param
        for opt in param.opts:
            if opt.startswith("--"):
                keys[opt[2:]] = param
    return keys


def file_defaults(ctx: click.Context, command: click.Command, table: dict, path: str) -> dict:
    """The file's settings as a default_map (by parameter name), each value checked
    against its parameter's click type."""
    keys = file_keys(command, ctx)
    defaults = {}
    for key, value in table.items():
        param = keys.get(key)
        if param is None:
            raise click.UsageError(f"{path}: key {key!r}: unknown option")
        if param.multiple:
            if not isinstance(value, list):
                raise click.UsageError(f"{path}: key {key!r}: expected a list, got {_toml(value)}")
            defaults[param.name] = [_checked(ctx, param, key, item, path) for item in value]
        elif param.name in COMMA_SEPARATED and isinstance(value, list):
            items = [_checked(ctx, param, key, item, path) for item in value]
            defaults[param.name] = ",".join(items)
        else:
            defaults[param.name] = _checked(ctx, param, key, value, path)
        if param.callback is not None:
            # Its own check (--header's NAME:VALUE) now, while the file can be named;
            # click runs it again on the value it takes from default_map.
            try:
                param.callback(ctx, param, defaults[param.name])
            except click.BadParameter as exc:
                raise click.UsageError(f"{path}: key {key!r}: {exc.message}") from None
    return defaults


def _expected(param_type: click.ParamType) -> str:
    if isinstance(param_type, click.Choice):
        return "one of " + ", ".join(map(str, param_type.choices))
    if isinstance(param_type, click.types.BoolParamType):
        return "a boolean"
    if isinstance(param_type, click.types.IntParamType):
        return "an integer"
    if isinstance(param_type, click.types.FloatParamType):
        return "a number"
    return "a string"


def _checked(ctx: click.Context, param: click.Parameter, key: str, value: Any, path: str) -> Any:
    # click converts leniently ("8000" and true pass as integers); a file is typed,
    # so a value must already be of the kind the option takes.
    param_type = param.type
    if isinstance(param_type, click.types.BoolParamType):
        type_ok = isinstance(value, bool)
    elif isinstance(param_type, click.types.IntParamType):
        type_ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(param_type, click.types.FloatParamType):
        type_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(param_type, click.Choice):
        type_ok = value in param_type.choices
    else:
        type_ok = isinstance(value, str)
    if not type_ok:
        raise click.UsageError(
            f"{path}: key {key!r}: expected {_expected(param_type)}, got {_toml(value)}"
        )
    try:
        return param_type.convert(value, param, ctx)
    except click.BadParameter as exc:
        raise click.UsageError(f"{path}: key {key!r}: {exc.message}") from None


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(not set)"
    try:
        return json.dumps(value)
    except TypeError:
        return str(value)


def describe_settings(ctx: click.Context, unset_means: Optional[dict] = None) -> str:
    """The effective settings as `key = value  # source`, one a line, in --help order.
    `unset_means` maps a parameter name to what is in force when its value is None."""
    unset_means = unset_means or {}
    lines = []
    keys: dict = {}
    for key, param in file_keys(ctx.command, ctx).items():
        keys.setdefault(param.name, key)  # the first long name, as --help shows it
    for param in ctx.command.get_params(ctx):
        if param.name not in keys:
            continue
        source = ctx.get_parameter_source(param.name)
        if source is ParameterSource.DEFAULT_MAP:
            where = ctx.meta[FILE_META_KEY]
        elif source is ParameterSource.ENVIRONMENT:
            where = "environment " + envvar_used(ctx, param)
        else:
            where = SOURCE_LABELS.get(source, "default")
        value = ctx.params[param.name]
        if value is None:
            value = unset_means.get(param.name)
        if param.name in SECRETS and value is not None:
            value = "(hidden)"
        lines.append(f"{keys[param.name]} = {_toml(_shown(value))}  # {where}")
    return "\n".join(lines)


def envvar_used(ctx: click.Context, param: click.Parameter) -> str:
    """The variable the value came from: the option's own (WEB_CONCURRENCY) or FASTSERVE_*."""
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
    names.append(f"{ctx.auto_envvar_prefix}_{param.name.upper()}")
    return next((name for name in names if os.environ.get(name)), names[-1])


def _shown(value: Any) -> Any:
    # --header's callback made (name, value) pairs; show them as they are written.
    if isinstance(value, (list, tuple)):
        return [f"{item[0]}: {item[1]}" if isinstance(item, tuple) else item for item in value]
    return value
