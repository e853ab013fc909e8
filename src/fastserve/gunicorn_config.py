"""`-c gunicorn.conf.py`: a Gunicorn config file, read as Gunicorn reads it.

The file is executed as Python (as Gunicorn does); its module-level names are taken by
Gunicorn's setting names. `SETTINGS` maps each setting fastserve has onto its long
option names (the first that exists is used, so a row may name an option before it
exists) and a converter from Gunicorn's value. The server hooks of `hooks.HOOK_NAMES`
become a `ServerHooks`. A Gunicorn setting fastserve has no use for is ignored and
named in one line; a name that is no Gunicorn setting (a typo) is an error; modules,
classes, functions and names in UPPER case or with a leading `_` are the file's own
helpers and are skipped (Gunicorn skips every unknown name).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from typing import Any, Callable

from fastserve.hooks import HOOK_NAMES, ServerHooks, hook_problem

# Every setting name Gunicorn knows (gunicorn.config.KNOWN_SETTINGS, 22 to 27).
GUNICORN_SETTINGS = frozenset(
    """access_log_format accesslog asgi_disconnect_grace_period asgi_lifespan asgi_loop
    backlog bind ca_certs capture_output casefold_http_method cert_reqs certfile chdir
    check_config child_exit ciphers config control_socket control_socket_disable
    control_socket_mode daemon default_proc_name dirty_apps dirty_graceful_timeout
    dirty_post_fork dirty_threads dirty_timeout dirty_worker_exit dirty_worker_init
    dirty_workers disable_redirect_access_to_syslog do_handshake_on_connect dogstatsd_tags
    enable_backlog_metric enable_stdio_inheritance errorlog forwarded_allow_ips
    forwarder_headers graceful_timeout group header_map http2_cleartext
    http2_initial_window_size http2_max_concurrent_streams http2_max_frame_size
    http2_max_header_list_size http_parser http_protocols initgroups keepalive keyfile
    limit_request_field_size limit_request_fields limit_request_line logconfig
    logconfig_dict logconfig_json logger_class loglevel max_requests max_requests_jitter
    nworkers_changed on_dirty_starting on_exit on_reload on_starting paste
    permit_obsolete_folding permit_unconventional_http_method
    permit_unconventional_http_version pidfile post_fork post_request post_worker_init
    pre_exec pre_fork pre_request preload_app print_config proc_name protocol
    proxy_allow_ips proxy_protocol pythonpath raw_env raw_paste_global_conf reload
    reload_engine reload_extra_files reuse_port root_path secure_scheme_headers sendfile
    spew ssl_context ssl_version statsd_host statsd_prefix strip_header_spaces
    suppress_ragged_eofs syslog syslog_addr syslog_facility syslog_prefix threads timeout
    tmp_upload_dir umask user uwsgi_allow_ips websocket_max_message_size when_ready
    worker_abort worker_class worker_connections worker_exit worker_int worker_tmp_dir
    workers wsgi_app""".split()
)

# Converter result: leave the option at its default (Gunicorn's "off" values).
UNSET = object()
# --timeout-keep-alive standing for Gunicorn's keepalive = 0 (no keep-alive).
CLOSE_AT_ONCE = 0.001

# Worker classes that run an app as fastserve does, and the options each implies: the
# ASGI ones, and Gunicorn's sync and gthread workers of WSGI apps (`threads` sets the
# thread pool of either).
WORKER_CLASSES = {
    "sync": {},
    "gthread": {},
    "gunicorn.workers.sync.SyncWorker": {},
    "gunicorn.workers.gthread.ThreadWorker": {},
    "uvicorn.workers.UvicornWorker": {},
    "uvicorn_worker.UvicornWorker": {},
    "uvicorn.workers.UvicornH11Worker": {"http": "python"},
    "uvicorn_worker.UvicornH11Worker": {"http": "python"},
    "fastserve.workers.FastserveWorker": {},
    "fastserve.workers.FastserveAsyncioWorker": {"loop": "asyncio"},
}
# Gunicorn's proxy_protocol values (a flag before 27).
PROXY_PROTOCOL_VALUES = {True: "auto", False: "off", "true": "auto", "false": "off"}


class GunicornConfigError(ValueError):
    """The file cannot be used; the message is one line naming the setting."""


def as_int(value: Any) -> Any:
    """Gunicorn's integers: an int, or a string int() reads with its base ("0x10")."""
    return int(value, 0) if isinstance(value, str) else value


def as_number(value: Any) -> Any:
    return float(value) if isinstance(value, str) else value


def as_string(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def as_octal(value: Any) -> Any:
    """umask = 0o027 → "0o27" (the option is a string; octal reads as the user meant)."""
    return oct(value) if isinstance(value, int) and not isinstance(value, bool) else value


def as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else list(value)


def wants_http2(value: Any) -> bool:
    """http_protocols (Gunicorn 25+: "h2,h1", or the list its config holds) names h2:
    --http2. (Gunicorn's h2c needs http2_cleartext too; fastserve's --http2 takes h2c
    with prior knowledge on a plain port from any client, README "HTTP/2".)"""
    names = value.split(",") if isinstance(value, str) else value
    return "h2" in (name.strip().lower() for name in names)


def positive_or_unset(value: Any) -> Any:
    """max_requests = 0 and the like: Gunicorn's "no limit"."""
    value = as_int(value)
    return UNSET if value == 0 else value


def keepalive(value: Any) -> Any:
    """Gunicorn's keepalive = 0 turns keep-alive off; the nearest here is "close at once"."""
    value = as_number(value)
    return value if value > 0 else CLOSE_AT_ONCE


def healthcheck_timeout(value: Any) -> Any:
    value = as_number(value)
    if value == 0:
        raise GunicornConfigError("timeout = 0 (never kill a worker) has no equivalent")
    return value


def access_log_or_unset(value: Any) -> Any:
    """accesslog = None (Gunicorn's default) leaves fastserve's; "-" is stdout."""
    return UNSET if value in (None, "") else value


def error_log_or_unset(value: Any) -> Any:
    """errorlog = "-" (Gunicorn's default: stderr) leaves fastserve's."""
    return UNSET if value in (None, "", "-") else value


def proxy_protocol(value: Any) -> Any:
    key = value.lower().strip() if isinstance(value, str) else value
    return PROXY_PROTOCOL_VALUES.get(key, key)


# Gunicorn setting -> (fastserve long option names, the first existing one is used;
# converter of Gunicorn's value).
SETTINGS: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]] = {
    "wsgi_app": (("app",), str),
    "bind": (("bind",), as_list),
    "backlog": (("backlog",), as_int),
    "workers": (("workers",), as_int),
    "threads": (("threads",), as_int),
    "timeout": (("timeout-worker-healthcheck",), healthcheck_timeout),
    "graceful_timeout": (("graceful-timeout", "timeout-graceful-shutdown"), as_number),
    "keepalive": (("timeout-keep-alive",), keepalive),
    "max_requests": (("max-requests",), positive_or_unset),
    "max_requests_jitter": (("max-requests-jitter",), as_int),
    "limit_request_line": (("limit-request-line",), as_int),
    "limit_request_fields": (("limit-request-fields",), as_int),
    "limit_request_field_size": (("limit-request-field-size",), as_int),
    "reload": (("reload",), bool),
    "preload_app": (("preload",), bool),
    "reuse_port": (("reuse-port",), bool),
    "chdir": (("chdir",), str),
    "user": (("user",), as_string),
    "group": (("group",), as_string),
    "umask": (("umask",), as_octal),
    "pidfile": (("pid",), str),
    "raw_env": (("env",), as_list),
    "loglevel": (("log-level",), lambda value: value.lower()),
    "logconfig": (("log-config",), str),
    "accesslog": (("access-logfile",), access_log_or_unset),
    "errorlog": (("error-logfile",), error_log_or_unset),
    "access_log_format": (("access-log-format",), str),
    "forwarded_allow_ips": (("forwarded-allow-ips",), lambda value: value),
    "proxy_protocol": (("proxy-protocol",), proxy_protocol),
    "root_path": (("root-path",), str),
    "http_protocols": (("http2",), wants_http2),
    "http2_max_concurrent_streams": (("h2-max-concurrent-streams",), as_int),
    "http2_max_frame_size": (("h2-max-inbound-frame-size",), as_int),
    "http2_initial_window_size": (("h2-initial-window-size",), as_int),
    "keyfile": (("ssl-keyfile",), str),
    "certfile": (("ssl-certfile",), str),
    "ca_certs": (("ssl-ca-certs",), str),
    "cert_reqs": (("ssl-cert-reqs",), as_int),
    "ssl_version": (("ssl-version",), as_int),
    "ciphers": (("ssl-ciphers",), str),
    "statsd_host": (("statsd-host",), str),
    "statsd_prefix": (("statsd-prefix",), str),
}

# Gunicorn settings that cannot be ignored safely when set: an error.
REFUSED = {
    "daemon": "fastserve does not daemonize: run it under systemd or another supervisor",
}


def execute(path: str) -> dict[str, Any]:
    """Run the file as Gunicorn does (module `__config__`); its names and values."""
    module_name = "__config__"
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        line = next((f" (line {f.lineno})" for f in reversed(frames) if f.filename == path), "")
        raise GunicornConfigError(f"{path}{line}: {type(exc).__name__}: {exc}") from exc
    return vars(module)


def is_helper(name: str, value: Any) -> bool:
    """A name of the file's own (Gunicorn skips every name it does not know)."""
    if name.startswith("_") or name != name.lower():
        return True
    return inspect.ismodule(value) or inspect.isclass(value) or callable(value)


def read(path: str, option_names: set) -> tuple[dict, ServerHooks, list]:
    """The file's settings as a table by long option name, its hooks, and the Gunicorn
    settings it sets that fastserve ignores. Raises GunicornConfigError."""
    table: dict[str, Any] = {}
    hooks: dict[str, Callable] = {}
    ignored: list[str] = []
    for name, value in execute(path).items():
        if name in HOOK_NAMES:
            problem = hook_problem(name, value)
            if problem is not None:
                raise GunicornConfigError(f"{path}: {problem}")
            hooks[name] = value
        elif name == "worker_class":
            table.update(worker_class_options(path, value))
        elif name in REFUSED:
            if value:
                raise GunicornConfigError(f"{path}: {name} = {value!r}: {REFUSED[name]}")
        elif name in SETTINGS:
            option = take_setting(path, name, value, option_names)
            if option is None:
                ignored.append(name)
            else:
                table.update(option)
        elif name in GUNICORN_SETTINGS:
            ignored.append(name)
        elif not is_helper(name, value):
            raise GunicornConfigError(
                f"{path}: {name!r} is not a Gunicorn setting (a helper variable? give it"
                " an UPPER-case name or a leading _)"
            )
    return table, ServerHooks(hooks), ignored


def take_setting(path: str, name: str, value: Any, option_names: set) -> Any:
    """{option: converted value}, {} for Gunicorn's "off" (nothing to set, nothing to
    ignore), or None when no option of the row exists (yet)."""
    options, convert = SETTINGS[name]
    try:
        converted = convert(value)
    except GunicornConfigError as exc:
        raise GunicornConfigError(f"{path}: {exc}") from None
    except (TypeError, ValueError, AttributeError):
        raise GunicornConfigError(f"{path}: {name} = {value!r} is not a valid value") from None
    if converted is UNSET:
        return {}
    option = next((option for option in options if option in option_names), None)
    return None if option is None else {option: converted}


def worker_class_options(path: str, value: Any) -> dict:
    name = value if isinstance(value, str) else f"{value.__module__}.{value.__qualname__}"
    if name not in WORKER_CLASSES:
        known = ", ".join(WORKER_CLASSES)
        raise GunicornConfigError(
            f"{path}: worker_class {name!r}: fastserve serves ASGI and WSGI apps in its own"
            f" workers; it takes one of {known}"
        )
    return dict(WORKER_CLASSES[name])
