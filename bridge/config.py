"""Bridge settings: command-line flags, then environment variables, then a `.env` file, then defaults.

Core settings live in `Settings`. Each adapter declares its own settings as an `AdapterSettings` subclass in its
module and reads them with `MyAdapterSettings.from_settings(app[SETTINGS])`; those come from the same environment
and `.env` file, and `--set NAME=VALUE` on the command line overrides any of them (NAME is the environment
variable's name, e.g. `--set A1111_MAX_STEPS=60`; `python -m bridge` refuses a name no setting has).
"""
from __future__ import annotations

import contextvars
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from bridge.errors import redact
from bridge.outbound import url_problem

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKFLOWS_DIR = REPO_ROOT / "workflows"
DEFAULT_ENV_FILE = Path(".env")

# `--set` values for the settings object being built right now. A context variable because pydantic-settings
# builds its sources in a classmethod that only receives the class.
_OVERRIDES: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("bridge_overrides", default={})


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable or flag."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _OverrideSource(EnvSettingsSource):
    """Reads `--set NAME=VALUE` pairs exactly as if they were environment variables (same names, same parsing)."""

    def __init__(self, settings_cls: type[BaseSettings], overrides: Mapping[str, str]) -> None:
        self._overrides = dict(overrides)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._overrides, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class _LayeredSettings(BaseSettings):
    """Source order shared by core and adapter settings: flags (init), --set, environment, .env file."""

    # `inf` (or 1e400) passes every `gt`/`ge` bound: a byte limit of inf stopped the start with an OverflowError, and
    # an infinite timeout or interval is no bound at all where the setting's own "0: no limit" says so plainly.
    model_config = SettingsConfigDict(allow_inf_nan=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _OverrideSource(settings_cls, _OVERRIDES.get()), env_settings, dotenv_settings)


@contextmanager
def _overrides(values: Mapping[str, str]) -> Iterator[None]:
    token = _OVERRIDES.set(values)
    try:
        yield
    finally:
        _OVERRIDES.reset(token)


def _split_list(value: Any) -> Any:
    """Comma-separated strings become lists; env values like `a, b,` must not need JSON quoting."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                return json.loads(text)
            except RecursionError:  # not a ValueError: it would escape as a traceback instead of naming the setting
                raise ValueError("the JSON list is nested too deeply") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode]

def _url_problem(url: str, *, query: bool = True) -> str | None:
    """What makes `url` unusable as an http(s) address of a server (a connection to it could not even be tried, or
    would carry the problem to clients), or None: outbound's check (credentials too: the URL is shown in /health,
    /metrics, job records and logs), a space, and where paths are appended to it, a query or fragment."""
    problem = url_problem(url)
    if problem is not None:
        return problem
    if " " in url:
        return "contains a space"
    parts = urlsplit(url)
    if not query and (parts.query or parts.fragment or url.endswith(("?", "#"))):
        return "has a query or fragment; paths are appended to this URL"
    return None


class Settings(_LayeredSettings):
    """Core bridge settings. Environment names are `BRIDGE_<FIELD>` except the `COMFYUI_*` ones."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_",
        env_file=DEFAULT_ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    host: str = Field("127.0.0.1", description="Address the HTTP server binds (BRIDGE_HOST).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of the HTTP server (BRIDGE_PORT).")
    data_dir: Path = Field(Path("data"), description="Jobs database, result images, managed ComfyUI files.")
    workflows_dir: Path = Field(DEFAULT_WORKFLOWS_DIR, description="Directory of workflow JSON + manifests.")
    extra_workflows_dirs: StrList = Field(
        default_factory=list, description="More folders of workflows + manifests, comma-separated: a workflow "
                                          "dropped in one is served at /workflows/NAME after a restart or "
                                          "POST /workflows/reload.")
    log_level: str = Field("INFO", description="Python logging level (DEBUG, INFO, WARNING, ERROR).")

    comfyui_urls: StrList = Field(
        default_factory=list,
        validation_alias=AliasChoices("comfyui_urls", "COMFYUI_URL"),
        description="Running ComfyUI servers, comma-separated (COMFYUI_URL). Empty: start a managed ComfyUI.",
    )
    comfyui_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("comfyui_dir", "COMFYUI_DIR"),
        description="ComfyUI checkout for the managed server (COMFYUI_DIR; default ~/ComfyUI).",
    )
    comfyui_port: int = Field(
        0, ge=0, le=65535, validation_alias=AliasChoices("comfyui_port", "COMFYUI_PORT"),
        description="Port of the managed ComfyUI (COMFYUI_PORT; 0 picks a free one).",
    )
    comfyui_cpu: bool | None = Field(
        None, validation_alias=AliasChoices("comfyui_cpu", "COMFYUI_CPU"),
        description="Run the managed ComfyUI with --cpu (COMFYUI_CPU; unset: only when no GPU is present).",
    )
    comfyui_extra_model_paths: Path | None = Field(
        None, validation_alias=AliasChoices("comfyui_extra_model_paths", "COMFYUI_EXTRA_MODEL_PATHS"),
        description="extra_model_paths.yaml for the managed ComfyUI (COMFYUI_EXTRA_MODEL_PATHS).",
    )
    comfyui_args: StrList = Field(
        default_factory=list, validation_alias=AliasChoices("comfyui_args", "COMFYUI_ARGS"),
        description="Extra command-line arguments for the managed ComfyUI, comma-separated (COMFYUI_ARGS).",
    )
    comfyui_start_timeout: float = Field(
        300.0, gt=0, validation_alias=AliasChoices("comfyui_start_timeout", "COMFYUI_START_TIMEOUT"),
        description="Seconds to wait for the managed ComfyUI to answer (COMFYUI_START_TIMEOUT).",
    )

    api_keys: StrList = Field(default_factory=list, repr=False, description="Accepted API keys; empty: no auth.")
    auth_exempt: StrList = Field(
        default_factory=lambda: ["/", "/health", "/metrics", "/docs", "/docs/*", "/openapi.json"],
        description="Paths served without an API key (a trailing * matches a prefix).",
    )
    cors_origins: StrList = Field(default_factory=list, description="Allowed browser origins, or '*'.")
    cors_credentials: bool = Field(False, description="Send Access-Control-Allow-Credentials (no '*' then).")
    max_body_mb: float = Field(32.0, gt=0, description="Largest request body in MiB (413 beyond).")
    rate_limit: float = Field(0.0, ge=0, description="Requests per second per API key, or per client address for "
                                                     "requests without a valid key (counted before authentication); "
                                                     "0: off.")
    # The bound: buckets are floats, and 10**309 stopped the start with an OverflowError.
    rate_burst: int = Field(20, ge=1, le=10**9,
                            description="Token-bucket size: requests allowed at once before 429.")
    auth_max_failures: int = Field(10, ge=0, description="Failed authentications from one address within "
                                                        "BRIDGE_AUTH_FAILURE_WINDOW that lock it out; 0: off.")
    auth_failure_window: float = Field(60.0, gt=0, description="Seconds over which failed authentications count.")
    auth_lockout: float = Field(60.0, gt=0, description="Seconds an address stays locked out (429).")
    rate_exempt: StrList = Field(
        default_factory=lambda: ["/health", "/metrics"], description="Paths that the rate limit skips."
    )

    header_timeout: float = Field(10.0, gt=0, description="Seconds a connection has to send a request's headers "
                                                         "(from opening, or from the previous answer); slower ones "
                                                         "are closed.")
    body_timeout: float = Field(60.0, gt=0, description="Seconds a request has to send its whole body (408 after).")
    max_connections: int = Field(1000, ge=1, description="Open connections; one more is answered 503 and closed.")
    max_queue: int = Field(100, ge=1, description="Jobs waiting or running before submissions get 503.")
    max_request_pixels: int = Field(2 * 4096 * 4096, ge=1, description=(
        "Pixels all the images of one request may have together, checked on their headers before any is decoded "
        "(413 beyond): what one request can make the bridge hold in memory."))
    max_jobs_per_client: int = Field(0, ge=0, description="Jobs one API key (or, without keys, one address) may "
                                                          "have waiting or running (429 beyond); 0: only "
                                                          "BRIDGE_MAX_QUEUE.")
    max_streams_per_client: int = Field(16, ge=0, description=(
        "`GET /events` streams one API key (or, without keys, one address) may hold open on a replica (429 "
        "beyond); 0: no bound but BRIDGE_MAX_CONNECTIONS."))
    max_request_cost: int = Field(2_000_000_000, ge=0, description=(
        "Largest width x height x steps x images one request may ask for (400 beyond); the default is 2048x2048 at "
        "150 steps x 3 images, more than any real client sends; 0: no bound."))
    max_output_bytes: int = Field(2 * 1024 ** 3, ge=1, description=(
        "Bytes of result images one job may have, all its outputs together (2 GiB); a ComfyUI that sends or lists "
        "more fails the job (as one of more than 10,000 images does)."))
    queue_poll_interval: float = Field(5.0, gt=0, description="Seconds between looks at a backend's queue for jobs "
                                                             "removed there outside the bridge.")
    queue_timeout: float = Field(3600.0, ge=0, description="Seconds a job may wait in the queue before it fails; "
                                                           "0: no limit.")
    output_metadata: Literal["infotext", "none", "comfyui"] = Field("infotext", description=(
        "What stored and served PNGs carry in place of ComfyUI's graph chunks (which reveal server paths and model "
        "names): infotext (default: A1111's `parameters` text, what the image was made with), none, or comfyui (the "
        "whole graph, as ComfyUI saved it)."))
    public_url: str = Field("", description=(
        "The bridge's address as clients reach it (https://pixart.example.com); result links in webhook messages "
        "are made absolute with it. Empty: links are paths."))
    webhook_url: str = Field("", description="A receiver told about every job (Standard Webhooks); empty: none. "
                                             "Requests can name their own receiver in `webhook`.")
    webhook_events: StrList = Field(["job.completed", "job.failed", "job.cancelled"], description=(
        "Events sent to BRIDGE_WEBHOOK_URL: job.completed, job.failed, job.cancelled, job.progress."))
    webhook_secret: str = Field("", repr=False, description=(
        "Signing secret (whsec_<base64>, as Standard Webhooks libraries take it); empty: one is made on first "
        "start and kept in the data directory (`python -m bridge --print-webhook-secret` prints it)."))
    webhook_timeout: float = Field(10.0, gt=0, description="Seconds one delivery attempt may take.")
    webhook_retry_for: float = Field(86400.0, ge=0, description="Seconds during which failed deliveries are "
                                                               "retried (exponential back-off with jitter).")
    webhook_retry_base: float = Field(5.0, gt=0, description="First retry delay in seconds; it doubles per attempt "
                                                            "up to an hour.")
    webhook_progress_interval: float = Field(1.0, ge=0, description="Least seconds between two job.progress "
                                                                    "messages for one job and receiver.")
    trusted_proxies: StrList = Field(default_factory=list, description=(
        "Proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For names the client: the load "
        "balancer in front of several replicas, so rate limits and lock-outs count clients, not the proxy."))
    database: str = Field("", repr=False, description=(
        "The job store: empty (default) for the SQLite file under the data directory, a path to another SQLite "
        "file, or postgresql://user:password@host:5432/db, which any number of bridge replicas can share "
        "(docs/scaling.md)."))
    lease: float = Field(15.0, ge=2, description=(
        "Shared store: seconds a replica holds its jobs without renewing; a replica that dies leaves them to the "
        "others this long after."))
    storage: str = Field("local", description=(
        "Where result and input images are kept: `local` (files under the data directory) or `s3://bucket/prefix` "
        "on any S3-compatible service (BRIDGE_S3_*)."))
    s3_endpoint: str = Field("", description="S3 service URL (https://s3.example.com, http://127.0.0.1:8333); "
                                             "empty: AWS S3 of BRIDGE_S3_REGION.")
    s3_region: str = Field("", description="S3 region; empty: us-east-1.")
    s3_access_key_id: str = Field("", description="S3 access key; empty: the AWS_* environment variables.")
    s3_secret_access_key: str = Field("", repr=False, description="S3 secret key.")
    url_lifetime: float = Field(3600.0, gt=0, le=7 * 24 * 3600, description=(
        "Seconds a presigned result URL stays valid (response_format=url, webhook links); S3 allows a week at "
        "most."))
    outbound_allow: StrList = Field(default_factory=list, description=(
        "Hosts, addresses or CIDR networks that image URLs and webhook receivers may reach although they are "
        "loopback, private or link-local (refused otherwise), comma-separated: 127.0.0.1,10.0.0.0/8,hooks.lan."))
    fetch_timeout: float = Field(20.0, gt=0, description="Seconds an image URL has to arrive whole (redirects "
                                                         "included).")
    result_max_age: float = Field(7 * 24 * 3600.0, ge=0, description=(
        "Seconds a finished job, its row and its result images are kept (a week); 0: forever."))
    result_max_bytes: int = Field(10 * 1024 ** 3, ge=0, description=(
        "Stored result bytes in all (10 GiB); beyond, the oldest finished jobs are removed; 0: no bound."))
    retention_interval: float = Field(300.0, gt=0, description="Seconds between two retention sweeps.")
    comfyui_output_dir: Path | None = Field(None, validation_alias=AliasChoices(
        "comfyui_output_dir", "COMFYUI_OUTPUT_DIR"), description=(
        "Output folder of a ComfyUI on this machine (COMFYUI_OUTPUT_DIR): its copy of each result is removed once "
        "the bridge holds it. The managed ComfyUI's folder is known without it."))
    comfyui_input_dir: Path | None = Field(None, validation_alias=AliasChoices(
        "comfyui_input_dir", "COMFYUI_INPUT_DIR"), description=(
        "Input folder of a ComfyUI on this machine (COMFYUI_INPUT_DIR): the input images the bridge uploads there "
        "are removed once no prompt will read them (their job ended or went back to the queue). The managed "
        "ComfyUI's folder is known without it."))
    job_timeout: float = Field(600.0, ge=0, description="Seconds a job may run; 0: no limit.")
    requeue_on_backend_death: bool = Field(False, description="Re-queue a job once when its ComfyUI dies.")
    keep_jobs_on_disconnect: bool = Field(False, description="Let the jobs of a synchronous request (A1111, Pico, "
                                                             "/generate, AleaArt) run on when its client goes away; "
                                                             "off: they are cancelled.")
    adapters: StrList | None = Field(None, description="Adapter modules to enable; unset: every listed one.")

    adapter_overrides: dict[str, str] = Field(default_factory=dict, exclude=True,
                                              description="--set NAME=VALUE pairs, read by adapter settings.")

    _env_file: Path | None = PrivateAttr(default=None)

    @field_validator("comfyui_urls", "comfyui_args", "api_keys", "auth_exempt", "cors_origins", "rate_exempt",
                     "extra_workflows_dirs", "webhook_events", "outbound_allow", "trusted_proxies", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        host = host.strip()
        if not host:
            # asyncio reads an empty host as "every interface": a `BRIDGE_HOST=` left in a .env file would expose
            # the bridge to the network.
            raise ValueError("empty, which would listen on every interface; write 0.0.0.0 (or ::) to mean that, or "
                             "leave it unset for 127.0.0.1")
        return host

    @field_validator("data_dir", "workflows_dir", mode="before")
    @classmethod
    def _dir(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            # Path("") is the current directory: the jobs database and results would land wherever it was started.
            raise ValueError("empty; leave it unset for the default")
        return value

    @field_validator("comfyui_dir", "comfyui_extra_model_paths", "comfyui_output_dir", "comfyui_input_dir",
                     "comfyui_cpu", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        # Empty means unset, as comfyui_home reads COMFYUI_DIR; Path("") would be the current directory, whose files
        # the output and input folders' clean-up would remove.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("adapters", mode="before")
    @classmethod
    def _adapters(cls, value: Any) -> Any:
        return None if value is None else _split_list(value)

    @field_validator("comfyui_urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        cleaned: list[str] = []
        seen: dict[tuple[str, str, int, str], str] = {}
        for url in urls:
            problem = _url_problem(url, query=False)
            if problem:
                raise ValueError(f"COMFYUI_URL entry {redact(url)!r} {problem}")
            parts = urlsplit(url)
            # One ComfyUI listed twice would get two connections with one client id (and the jobs of both) where the
            # bridge counts one backend; spellings differ in case, default port and trailing slash.
            key = (parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                   parts.path.rstrip("/"))
            if key in seen:
                raise ValueError(f"COMFYUI_URL lists one ComfyUI twice: {seen[key]!r} and {url!r}")
            seen[key] = url
            cleaned.append(url.rstrip("/"))
        return cleaned

    @field_validator("comfyui_args")
    @classmethod
    def _comfyui_args(cls, args: list[str]) -> list[str]:
        from bridge.comfyui_process import BRIDGE_FLAGS

        for arg in args:
            flag = arg.split("=", 1)[0]
            # ComfyUI's argparse takes any unambiguous start of a flag: --output-dir is --output-directory
            taken = [f for f in BRIDGE_FLAGS if f.startswith(flag)] if flag.startswith("--") and len(flag) > 2 else []
            if taken:
                raise ValueError(f"{flag} ({taken[0]}) is set by the bridge: {BRIDGE_FLAGS[taken[0]]}")
        return args

    @field_validator("webhook_events")
    @classmethod
    def _events(cls, events: list[str]) -> list[str]:
        from bridge.webhooks import EVENTS

        unknown = [e for e in events if e not in EVENTS]
        if unknown:
            raise ValueError(f"unknown webhook events {unknown}; choose from {', '.join(EVENTS)}")
        return events

    @field_validator("webhook_url", "public_url", "s3_endpoint")
    @classmethod
    def _http_url(cls, url: str, info: ValidationInfo) -> str:
        url = url.strip()
        # A receiver's query string is its own (?token=...); links are appended to the public URL and the S3 endpoint.
        problem = url and _url_problem(url, query=info.field_name == "webhook_url")
        if problem:
            raise ValueError(f"{redact(url)!r} {problem}")
        return url.rstrip("/")

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, secret: str) -> str:
        if secret:
            from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

            try:
                Webhook(secret)  # what the engine builds at start: a bad secret stopped it there with a traceback
            except (EmptyWebhookSecretError, ValueError):
                raise ValueError("not a signing secret: whsec_ and base64 bytes, or unset for the kept one "
                                 "(`python -m bridge --print-webhook-secret`)") from None
        return secret

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, entries: list[str]) -> list[str]:
        import ipaddress

        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an address or CIDR network") from None
        return entries

    @field_validator("outbound_allow")
    @classmethod
    def _allow(cls, entries: list[str]) -> list[str]:
        import ipaddress

        for entry in entries:
            # No host name has a ':' or '/': such an entry is a mistyped address or network (10.0.0.0/33,
            # hooks.lan:8080) that would be kept as a name nothing matches, and refuse what it meant to admit.
            if ":" in entry or "/" in entry:
                try:
                    ipaddress.ip_network(entry.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an address, CIDR network or host name (no port)") from None
        return entries

    @field_validator("database")
    @classmethod
    def _database(cls, spec: str) -> str:
        spec = spec.strip()
        if spec.startswith(("postgresql://", "postgres://")):
            parts = urlsplit(spec)
            if not parts.hostname and "host=" not in spec:
                raise ValueError("a postgresql:// URL needs a host: postgresql://user:password@host:5432/db")
            if "," not in parts.netloc:  # libpq's host1:port1,host2:port2 is no single port
                try:
                    parts.port
                except ValueError as exc:  # the pool would retry the connection for 30 s, then fail unclearly
                    raise ValueError(f"the URL's port is not valid ({exc})") from None
        elif "://" in spec and not spec.startswith("sqlite:"):
            raise ValueError(f"{spec.split('://')[0]}:// is not a database the bridge knows; use a SQLite file path "
                             "or postgresql://...")
        return spec

    @field_validator("storage")
    @classmethod
    def _storage(cls, spec: str) -> str:
        spec = spec.strip() or "local"
        if spec != "local":
            from bridge.storage.s3 import parse_spec

            parse_spec(spec)
        return spec

    @field_validator("log_level")
    @classmethod
    def _level(cls, level: str) -> str:
        name = level.upper()
        if not isinstance(logging.getLevelName(name), int):
            raise ValueError(f"unknown log level {level!r}")
        return name

    @field_validator("cors_credentials")
    @classmethod
    def _cors(cls, credentials: bool, info: ValidationInfo) -> bool:
        # Browsers reject '*' with credentials; refusing it here beats a CORS failure nobody can debug.
        if credentials and "*" in info.data.get("cors_origins", []):
            raise ValueError("'*' in BRIDGE_CORS_ORIGINS cannot be combined with credentials; list the origins")
        return credentials

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def managed_comfyui(self) -> bool:
        """No ComfyUI URL given: the bridge runs its own ComfyUI child."""
        return not self.comfyui_urls

    @property
    def env_file(self) -> Path | None:
        return self._env_file


def load_settings(
    flags: Mapping[str, Any] | None = None,
    overrides: Mapping[str, str] | None = None,
    env_file: Path | None = DEFAULT_ENV_FILE,
) -> Settings:
    """Build Settings: `flags` (field names) beat `overrides` (`--set`, env names) beat environment beat `.env`.

    Raises SettingsError naming the variable when a value is invalid.
    """
    values = {k: v for k, v in (flags or {}).items() if v is not None}
    pairs = dict(overrides or {})
    if env_file == DEFAULT_ENV_FILE:  # a named one is checked where it is named (check_env_file(named=True))
        check_env_file(env_file)
    try:
        with _overrides(pairs):
            settings = Settings(_env_file=env_file, adapter_overrides=pairs, **values)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise _settings_error(Settings, exc) from None
    except (OSError, UnicodeDecodeError) as exc:  # only the env file is read here
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise SettingsError("--env-file", f"{env_file}: {reason}") from None
    settings._env_file = env_file
    return settings


def check_env_file(env_file: Path | None, *, named: bool = False) -> None:
    """The default env file may be missing (or a directory: a virtual environment is often named .env) and must
    otherwise be a file: a FIFO there was read forever. One `named` on the command line must be there (a mistyped
    path started the bridge on defaults, without its API keys), and may be /dev/null or a pipe (`<(...)`)."""
    if env_file is None:
        return
    try:
        mode = os.stat(Path(env_file).expanduser()).st_mode
    except FileNotFoundError:
        if named:
            raise SettingsError("--env-file", f"{env_file}: no such file") from None
        return
    except OSError as exc:
        raise SettingsError("--env-file", f"{env_file}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        if named:
            raise SettingsError("--env-file", f"{env_file} is a directory")
        return  # pydantic-settings skips it
    if not (stat.S_ISREG(mode) or named and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode))):
        raise SettingsError("--env-file", f"{env_file} is not a regular file")


A = TypeVar("A", bound="AdapterSettings")


class AdapterSettings(_LayeredSettings):
    """Base for an adapter's own settings. Subclass with `model_config = SettingsConfigDict(env_prefix="A1111_")`
    (keep `extra="ignore"`), then `MySettings.from_settings(app[SETTINGS])` in `setup(app)`."""

    model_config = SettingsConfigDict(extra="ignore", env_file_encoding="utf-8", populate_by_name=True)

    @classmethod
    def from_settings(cls: type[A], settings: Settings) -> A:
        """Read this adapter's settings from the environment, the bridge's `.env` file and `--set` overrides."""
        try:
            with _overrides(settings.adapter_overrides):
                return cls(_env_file=settings.env_file)  # type: ignore[call-arg]
        except ValidationError as exc:
            raise _settings_error(cls, exc) from None


def env_name(settings_cls: type[BaseSettings], field: str) -> str:
    """The environment variable a user sets for `field` (its alias when there is one)."""
    info = settings_cls.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, AliasChoices):
        for choice in info.validation_alias.choices:
            if isinstance(choice, str) and choice.isupper():
                return choice
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    return (prefix + field).upper()


def setting_names() -> set[str]:
    """Every variable name a setting class of the bridge reads (core and the adapters imported so far)."""
    names: set[str] = set()
    classes: list[type[BaseSettings]] = [Settings, AdapterSettings]
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        for field, info in cls.model_fields.items():
            if info.exclude:
                continue  # adapter_overrides: set by --set itself
            names.update((env_name(cls, field), (str(cls.model_config.get("env_prefix", "")) + field).upper()))
            if isinstance(info.validation_alias, AliasChoices):
                names.update(c.upper() for c in info.validation_alias.choices if isinstance(c, str))
    return names


def _settings_error(settings_cls: type[BaseSettings], exc: ValidationError) -> SettingsError:
    first = exc.errors()[0]
    loc = first.get("loc") or ()
    field = str(loc[0]) if loc else ""
    name = env_name(settings_cls, field) if field else settings_cls.__name__
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return SettingsError(name, message)
