"""`python -m bridge` / `pixart-bridge`: run the Pixart API bridge."""
from __future__ import annotations

import argparse
import difflib
import errno
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.config import (DEFAULT_ENV_FILE, Settings, SettingsError, check_env_file, env_name, load_settings,
                           setting_names)

log = logging.getLogger("bridge")

# Flag destination -> Settings field, for flags that map one to one.
_FLAG_FIELDS = (
    "host", "port", "data_dir", "workflows_dir", "log_level", "comfyui_urls", "comfyui_dir", "comfyui_port",
    "comfyui_cpu", "comfyui_extra_model_paths", "api_keys", "cors_origins", "cors_credentials", "max_body_mb",
    "rate_limit", "rate_burst", "max_queue", "job_timeout", "adapters",
)


def _setting_line(cls: Any, field: str, description: str | None) -> str:
    return f"  {env_name(cls, field):<28} {description or ''}"


def _env_help() -> str:
    lines = ["settings (flag > --set > environment > .env file > default):"]
    for name, info in Settings.model_fields.items():
        if name == "adapter_overrides":
            continue
        lines.append(_setting_line(Settings, name, info.description))
    lines.append("--set NAME=VALUE overrides any variable by name, an adapter's too (below).")
    return "\n".join(lines)


def _adapter_help() -> str:
    """Each adapter's own variables, grouped by adapter. Read only for --help: it imports every adapter, which a
    start does only for those enabled."""
    from bridge import adapters
    from bridge.config import AdapterSettings

    for name in adapters.ENABLED:
        try:
            adapters.load(name)
        except adapters.AdapterLoadError as exc:
            log.debug("help: %s", exc)
    lines: list[str] = []
    classes = list(AdapterSettings.__subclasses__())
    while classes:
        cls = classes.pop(0)
        classes.extend(cls.__subclasses__())
        lines.append(f"\n{(cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip('.')}:")
        lines.extend(_setting_line(cls, field, info.description)
                     for field, info in cls.model_fields.items() if not info.exclude)
    return "\n".join(lines) + "\n"


class _Parser(argparse.ArgumentParser):
    def format_help(self) -> str:
        return super().format_help() + _adapter_help()


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--set wants NAME=VALUE, got {text!r}")
    return name.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pixart-bridge",
        description="Pixart API bridge: serves the A1111, Pixart editor, AleaArt and job APIs on ComfyUI. "
                    "Without a ComfyUI URL it starts and supervises a local ComfyUI.",
        epilog=_env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--version", action="version", version=f"pixart-bridge {__version__}")
    add("--host", help="bind address (BRIDGE_HOST, default 127.0.0.1)")
    add("--port", type=int, help="bind port (BRIDGE_PORT, default 8000)")
    add("--comfyui-url", dest="comfyui_urls", action="append", metavar="URL",
        help="a running ComfyUI server; repeat or comma-separate for several (COMFYUI_URL)")
    add("--comfyui-dir", type=Path, help="ComfyUI checkout for the managed server (COMFYUI_DIR)")
    add("--comfyui-port", type=int, help="port of the managed ComfyUI, 0 = any free (COMFYUI_PORT)")
    add("--cpu", dest="comfyui_cpu", action=argparse.BooleanOptionalAction, default=None,
        help="run the managed ComfyUI with --cpu (default: only when no GPU is present)")
    add("--extra-model-paths", dest="comfyui_extra_model_paths", type=Path,
        help="extra_model_paths.yaml for the managed ComfyUI (COMFYUI_EXTRA_MODEL_PATHS)")
    add("--data-dir", type=Path, help="jobs database and results (BRIDGE_DATA_DIR, default ./data)")
    add("--workflows-dir", type=Path, help="workflow directory (BRIDGE_WORKFLOWS_DIR)")
    add("--api-key", dest="api_keys", action="append", metavar="KEY",
        help="accept this API key; repeat for several (BRIDGE_API_KEYS); none: no auth")
    add("--cors-origin", dest="cors_origins", action="append", metavar="ORIGIN",
        help="allow this browser origin; repeat for several (BRIDGE_CORS_ORIGINS)")
    add("--cors-credentials", action=argparse.BooleanOptionalAction, default=None,
        help="allow credentials in CORS requests (BRIDGE_CORS_CREDENTIALS)")
    add("--max-body-mb", type=float, help="largest request body in MiB (BRIDGE_MAX_BODY_MB, default 32)")
    add("--rate-limit", type=float, help="requests/s per key or address, 0 = off (BRIDGE_RATE_LIMIT)")
    add("--rate-burst", type=int, help="token-bucket size (BRIDGE_RATE_BURST, default 20)")
    add("--max-queue", type=int, help="jobs queued or running before 503 (BRIDGE_MAX_QUEUE, default 100)")
    add("--job-timeout", type=float, help="seconds per job, 0 = none (BRIDGE_JOB_TIMEOUT, default 600)")
    add("--adapters", help="comma-separated adapter modules to enable (BRIDGE_ADAPTERS)")
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR (BRIDGE_LOG_LEVEL)")
    add("--env-file", type=Path, help="settings file to read (default ./.env, when there is one)")
    add("--set", dest="overrides", action="append", type=_pair, default=[], metavar="NAME=VALUE",
        help="set any variable by its environment name, e.g. --set A1111_MAX_STEPS=60 (repeatable)")
    add("--print-settings", action="store_true", help="print the resolved core settings as JSON and exit")
    add("--print-webhook-secret", action="store_true",
        help="print the secret webhook messages are signed with (BRIDGE_WEBHOOK_SECRET, else the one kept in the "
             "data directory, made now if there is none) and exit")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    flags: dict[str, Any] = {}
    for field in _FLAG_FIELDS:
        value = getattr(args, field, None)
        if value is None:
            continue
        if field in ("comfyui_urls", "api_keys", "cors_origins"):
            value = [part.strip() for item in value for part in item.split(",") if part.strip()]
        flags[field] = value
    check_env_file(args.env_file, named=True)
    return load_settings(flags, dict(args.overrides),
                         env_file=DEFAULT_ENV_FILE if args.env_file is None else args.env_file)


def listen_problem(host: str, port: int) -> str | None:
    """Why the bridge could not listen on (host, port), or None: checked before the app starts, which may first
    start a managed ComfyUI for minutes and then stop on a traceback."""
    from bridge.comfyui_process import bind_error

    error = bind_error(host, port)
    if error is None:
        return None
    # in use, or below 1024 without the right: the port's fault; a name that does not resolve or an address not of
    # this machine: the host's
    name = "BRIDGE_PORT" if error.errno in (errno.EADDRINUSE, errno.EACCES) else "BRIDGE_HOST"
    return f"{name}: cannot listen on {host} port {port}: {error.strerror or error}"


def _unknown_names(overrides: dict[str, str]) -> list[str]:
    """`--set` names no setting reads, each with the nearest known ones: a typo would otherwise do nothing."""
    from bridge import adapters

    for name in adapters.ENABLED:  # every adapter's settings class, enabled or not
        try:
            adapters.load(name)
        except adapters.AdapterLoadError:
            return []  # its names are unknown here: the app's start reports the import error instead
    known = setting_names()
    out = []
    for name in overrides:
        if name.upper() not in known:
            near = difflib.get_close_matches(name.upper(), sorted(known), n=3)
            out.append(f"--set {name}: no setting has this name"
                       + (f" (did you mean {' or '.join(near)}?)" if near else ""))
    return out


def _printable(settings: Settings) -> dict[str, Any]:
    data = json.loads(settings.model_dump_json())
    data["api_keys"] = ["***"] * len(settings.api_keys)
    data["webhook_secret"] = "***" if settings.webhook_secret else ""
    return data


def webhook_secret(settings: Settings) -> str:
    """The signing secret the bridge uses: the setting, else the one its job store keeps (made on first use)."""
    if settings.webhook_secret:
        return settings.webhook_secret
    import asyncio

    from bridge.store import open_store

    async def read() -> str:
        store = open_store(settings.database, settings.data_dir)
        await store.open()
        try:
            return await store.webhook_secret()
        finally:
            await store.close()

    return asyncio.run(read())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        parser.error(str(exc))  # exits 2 with the variable named
    if args.overrides:
        unknown = _unknown_names(dict(args.overrides))
        if unknown:
            parser.error("; ".join(unknown))
    if args.print_settings:
        print(json.dumps(_printable(settings), indent=2))
        return 0
    if args.print_webhook_secret:
        print(webhook_secret(settings))
        return 0

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problem = listen_problem(settings.host, settings.port)
    if problem:
        log.error("%s", problem)
        return 1
    # Imported here so that --help and --print-settings work even when the engine cannot be imported.
    from bridge.adapters import AdapterLoadError
    from bridge.app import create_app
    from bridge.managed import ManagedComfyUIError

    from bridge import server

    try:
        server.run(create_app(settings), settings)
    except (AdapterLoadError, ManagedComfyUIError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
