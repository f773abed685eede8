"""One frozen settings object, built once in `main()` and passed down.

Values come from `MOMENTS_*` environment variables and an optional `.env` file;
a bad value stops start-up with the variable's name and what to write instead.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from moments import redisurl
from moments.errortext import error_text
from moments.exceptions import ConfigError

_BOOTSTRAP_HELP = "write host:port[,host:port], e.g. 127.0.0.1:9092"


TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
"""What Kafka accepts as a topic name (its legal characters and length)."""


def _topic_name(value: str) -> str:
    if not TOPIC_NAME.fullmatch(value):
        raise ValueError(
            "not a Kafka topic name: letters, digits, '.', '_' and '-' only, 1 to 249 of them"
        )
    return value


class Topics(BaseModel):
    """Topic names before the prefix; set with e.g. `MOMENTS_TOPICS__TOPUP=billing.topup`."""

    model_config = ConfigDict(frozen=True)

    _names = field_validator("*")(_topic_name)

    topup: str = "telecom.topup"
    roaming: str = "telecom.roaming"
    complaint: str = "telecom.complaint"
    usage: str = "telecom.usage"
    profile: str = "telecom.profile"
    tasks: str = "moments.tasks"
    task_outcomes: str = "moments.task-outcomes"
    task_withdrawals: str = "moments.task-withdrawals"
    deadletter: str = "moments.deadletter"


def split_host_port(server: str) -> tuple[str, int]:
    """`"host:port"` (an IPv6 host in brackets) -> `("host", port)`; ValueError if it is not
    one, or the port is out of range."""
    host, sep, port = server.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{server.strip()!r} is not host:port")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        # aiokafka reads an unbracketed IPv6 address as a host on the default port, and
        # `kafka:9092:9092` as host `kafka:9092`: neither is what was meant.
        raise ValueError(
            f"{server.strip()!r} holds more than one ':' (an IPv6 address goes in brackets, "
            "[::1]:9092)"
        )
    return host.strip("[]"), int(port)


class Settings(BaseSettings):
    """Effective configuration of a worker or CLI command."""

    model_config = SettingsConfigDict(
        env_prefix="MOMENTS_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]"
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis URL")
    rules: Path | None = Field(
        default=None, description="Rules file or folder; the packaged default catalog when unset"
    )
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=9308, description="Port of /metrics (0 turns the endpoint off)"
    )
    metrics_host: str = Field(default="0.0.0.0", description="Bind address of /metrics")  # noqa: S104 - containers need all interfaces; documented
    health_stall_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0,
        description="/livez fails once the event loop has not run for this long (a blocked "
        "or deadlocked worker); /readyz and /livez are served beside /metrics",
    )
    stop_grace_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=50.0,
        description="A worker still running this long after SIGTERM or SIGINT (its event loop "
        "stuck) logs where the loop is and exits with code 70; keep it below the "
        "orchestrator's grace period (Kubernetes: terminationGracePeriodSeconds, 60)",
    )
    app_id: str = Field(
        default="moments",
        min_length=1,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Faust application id: consumer group and state prefix",
    )
    data_dir: Path = Field(default=Path("./.moments-data"), description="Local state directory")
    topic_prefix: str = Field(
        default="", pattern=r"^[A-Za-z0-9._-]*$", description="Prefix added to every topic name"
    )
    topics: Topics = Field(default_factory=Topics)
    partitions: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=4, description="Partitions of topics the worker creates (input and tables)"
    )
    replication_factor: Annotated[int, Field(ge=1, le=16)] = Field(
        default=1,
        description="Replicas of topics the worker creates (changelog, outputs): 1 on a "
        "single broker, the cluster's factor (usually 3) in production",
    )
    rebalance_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        default=30.0,
        description="Consumer-group rebalance timeout in seconds (a few seconds on Tansu)",
    )
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=20_000,
        description="Most events the detector takes in one batch (queued fetches are taken "
        "together up to it; a larger fetch is handled in batches of it)",
    )
    fetch_wait_ms: Annotated[int, Field(ge=1, le=5000)] = Field(
        default=100,
        description="Longest a fetch waits for new events, milliseconds: the delay a quiet "
        "stream adds before an event is read (on Tansu up to half of it)",
    )
    batch_within: Annotated[float, Field(gt=0, le=10)] = Field(
        default=0.05,
        description="Not used by the worker any more (a batch is what the broker fetched, "
        "never waited for); kept so existing configurations still load",
    )
    store: Literal["memory", "rocksdb"] = Field(
        default="memory", description="Faust table store; rocksdb keeps state on local disk"
    )
    standby_replicas: Annotated[int, Field(ge=0, le=3)] | None = Field(
        default=None,
        description="Standby copies of each state partition kept by other workers; unset "
        "means 0 with the memory store (Faust's memory store drops them when a recovery "
        "ends, so they only cost CPU) and 1 with rocksdb (a failover reads only the tail)",
    )
    rocksdb_block_cache_mib: Annotated[int, Field(ge=8, le=65_536)] = Field(
        default=256,
        description="With rocksdb: MiB of the one block cache every partition's database in "
        "the worker shares, their index and filter blocks included (Faust gave each "
        "database its own of 2 GiB)",
    )
    rocksdb_write_buffer_mib: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=16,
        description="With rocksdb: MiB of one write buffer (memtable) of a partition's "
        "database, flushed to disk when full (Faust's default 64)",
    )
    rocksdb_write_buffers: Annotated[int, Field(ge=2, le=16)] = Field(
        default=2,
        description="With rocksdb: most write buffers a partition's database holds in memory "
        "(one filling, the others flushing; Faust's default 3)",
    )
    rocksdb_max_open_files: Annotated[int, Field(ge=20, le=1_000_000)] = Field(
        default=256,
        description="With rocksdb: most files a partition's database keeps open, 20 at least "
        "(RocksDB's floor; Faust's "
        "default: 90% of the process's open-file limit for each database)",
    )
    idempotent_producer: bool | None = Field(
        default=None,
        description="Kafka idempotent producer; unset means on for Apache Kafka, off for Tansu",
    )
    leave_group_on_stop: bool | None = Field(
        default=None,
        description="A stopping worker leaves the consumer group at once (LeaveGroup), so its "
        "partitions move without waiting for its session to time out; unset means on where "
        "the broker granted the idempotent producer (Apache Kafka), off where it refused it "
        "(Tansu, which keeps a leader that left mid-rebalance as the group's leader: "
        "docs/tansu.md)",
    )
    ledger_ttl_seconds: Annotated[int, Field(ge=60)] = Field(
        default=400 * 24 * 3600, description="How long the dedup ledger remembers a sent task"
    )
    pending_redrive_seconds: Annotated[float, Field(gt=0)] = Field(
        default=30.0, description="Age after which a pending (unconfirmed) task is sent again"
    )
    lateness_seconds: Annotated[int, Field(ge=0, le=7 * 86400)] = Field(
        default=3600,
        description="Out-of-order events this much older than a subscriber's latest of the same "
        "topic still count",
    )
    idle_after_seconds: Annotated[float, Field(gt=0)] = Field(
        default=60.0,
        description="A partition quiet this long lets the wall clock close windows",
    )
    rules_reload_seconds: Annotated[float, Field(ge=0)] = Field(
        default=2.0,
        description="How often the rules files are checked for a change (0: never); a change "
        "is loaded once two checks in a row see it the same",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="The worker's log lines: text, or one JSON object per line (time, level, "
        "logger, process, message, exception) for a log collector",
    )
    dispatch_policy: Path | None = Field(
        default=None,
        description="YAML file of the dispatch policy (capacity, overflow, contact cap, merge "
        "window, outcomes); built-in defaults when unset",
    )
    live_from: str | None = Field(
        default=None,
        description="Going live with no history: moments dated before this (a date, midnight "
        "in the dispatch policy's time zone, or RFC 3339 with its offset) make no task, every "
        "rule runs as in mode: shadow; unset: live at once (docs/operations.md, Going live)",
    )

    # -- security (issue 9); see docs/security.md ------------------------------------ #
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How clients talk to Kafka: TLS (SSL), SASL, or both"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism when the protocol is SASL_*"
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="CA bundle (PEM) that signed the brokers' certificates"
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS"
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="Private key (PEM) of the client certificate"
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of the client private key, if encrypted"
    )
    redis_username: str | None = Field(
        default=None, description="Redis ACL user (overrides a user in MOMENTS_REDIS_URL)"
    )
    redis_password: SecretStr | None = Field(
        default=None, description="Redis password (overrides a password in MOMENTS_REDIS_URL)"
    )
    redis_ssl_cafile: Path | None = Field(
        default=None, description="CA bundle (PEM) for a rediss:// server"
    )
    metrics_username: str | None = Field(
        default=None, description="User for basic auth on /metrics (with MOMENTS_METRICS_PASSWORD)"
    )
    metrics_password: SecretStr | None = Field(
        default=None, description="Password for basic auth on /metrics"
    )
    log_pii: bool = Field(
        default=False, description="Log subscriber numbers unmasked (for debugging only)"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        from moments.secret_files import FileVariablesSource

        files = FileVariablesSource(settings_cls)
        return init_settings, env_settings, files, dotenv_settings, file_secret_settings

    @model_validator(mode="after")
    def _security(self) -> Settings:
        from moments.connections import security_problems

        problems = security_problems(self)
        if problems:  # a line each: `load_settings` says where each value named came from
            raise ValueError("\n".join(problems))
        return self

    @field_validator("log_level", "kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        """`info`, `sasl_ssl`, `scram-sha-256` mean what their upper case does."""
        return value.upper() if isinstance(value, str) else value

    @field_validator("store", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        if "@" in value:  # first: the messages below quote the server, password and all
            raise ValueError(
                "a login (user:password@) in the Kafka bootstrap servers is no Kafka "
                "setting: it was taken for a host name and shown, password and all; write "
                "the bare host:port (e.g. kafka-1:9093) and set MOMENTS_KAFKA_SASL_USERNAME "
                "and MOMENTS_KAFKA_SASL_PASSWORD_FILE (docs/security.md)"
            )
        for server in value.split(","):
            scheme, sep, rest = server.strip().partition("://")
            if sep:  # passed as host "http", port 39092, and waited for ever on the name
                bare = rest.split("/")[0]
                raise ValueError(
                    f"no scheme ({scheme}://) in Kafka bootstrap servers: write the bare "
                    f"host:port, {bare} (the protocol is MOMENTS_KAFKA_SECURITY_PROTOCOL)"
                )
            try:
                split_host_port(server)
            except ValueError as exc:
                raise ValueError(f"{exc}; {_BOOTSTRAP_HELP}") from None
        return value

    @field_validator("live_from")
    @classmethod
    def _live_from(cls, value: str | None) -> str | None:
        from moments.livefrom import check_live_from

        return check_live_from(value)

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "must start with redis://, rediss:// or unix://, e.g. redis://127.0.0.1:6379/0"
            )
        if (said := redisurl.problem(value)) is not None:
            raise ValueError(said)
        return value

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            from moments.filenames import close_rules_path

            raise ValueError(
                f"{value} does not exist"
                + (close_rules_path(value) or "; point it at a rules .yaml file or folder")
            )
        return value

    @field_validator("dispatch_policy")
    @classmethod
    def _dispatch_policy(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file; point it at a dispatch policy .yaml file")
        return value

    def secret_values(self) -> list[str]:
        """Every password set (SecretStr fields, and in MOMENTS_REDIS_URL's user part or
        query, as written and decoded), for log redaction."""
        values = [
            value.get_secret_value()
            for value in (
                self.kafka_sasl_password,
                self.kafka_ssl_key_password,
                self.redis_password,
                self.metrics_password,
            )
            if value is not None
        ]
        values += redisurl.passwords(self.redis_url)
        return [v for v in values if v]

    def log_names(self) -> list[str]:
        """The names a log line may hold that are no one's number (the app id, the topic
        prefix, each topic's name), whose digits the log masker leaves as written."""
        topics = list(self.topics.model_dump())
        names = [self.app_id, self.topic_prefix]
        names += [getattr(self.topics, key) for key in topics]  # as a topic_prefix-less log says
        names += [self.topic(key) for key in topics]  # digits across prefix and name: `t12` `345.x`
        return [name for name in names if name]

    def topic(self, name: str) -> str:
        """Full topic name for a key of `Topics`, with the prefix."""
        return self.topic_prefix + str(getattr(self.topics, name))

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",")]

    @property
    def redis_prefix(self) -> str:
        """Where the app's keys live in Redis (`moments:<app id>:`): the ledger, the
        deferral queue, the facts and the counters of the workers and the commands."""
        return f"moments:{self.app_id}:"

    def rocksdb_memory_mib(self, databases: int) -> int:
        """The most memory, MiB, RocksDB takes in one worker holding `databases` partitions
        (active and standby): the shared block cache, which also holds index and filter
        blocks, plus each database's write buffers. RocksDB's own bookkeeping (some MiB)
        and the Python heap come on top."""
        buffers = databases * self.rocksdb_write_buffer_mib * self.rocksdb_write_buffers
        return self.rocksdb_block_cache_mib + buffers

    @property
    def standby_copies(self) -> int:
        """`standby_replicas`, or when unset what the store makes worth keeping.

        Faust's memory store deletes every key outside the worker's active partitions
        when a recovery ends, and a memory standby starts from the beginning of the
        changelog after every rebalance: each worker read the others' changelogs record
        by record (~4% of its CPU in a two-worker bench) for a copy nothing could use.
        A RocksDB standby stays on disk with its offset, so a failover reads only the tail."""
        if self.standby_replicas is not None:
            return self.standby_replicas
        return 0 if self.store == "memory" else 1


def dotenv_variables(path: Path = Path(".env")) -> dict[str, str]:
    """The variables a `.env` file sets (none when there is no such file), names in upper
    case: `Settings` reads them in any case."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k.upper(): v for k, v in dotenv_values(path).items() if v is not None}


def unknown_variables(
    environ: Mapping[str, str], dotenv: Mapping[str, str] | None = None
) -> list[str]:
    """A line for each `MOMENTS_*` variable that sets nothing (pydantic ignores it, so a
    misspelt name would silently leave the default in force), with the closest name; of
    the environment, and of the `.env` file's variables in `dotenv` (said as `(in .env)`)."""
    known = {f"MOMENTS_{name.upper()}" for name in Settings.model_fields}
    known |= {f"MOMENTS_TOPICS__{name.upper()}" for name in Topics.model_fields}
    known |= {f"{name}_FILE" for name in known}
    names = sorted(k.removeprefix("MOMENTS_") for k in known)
    in_file = set(dotenv or ()) - set(environ)
    lines = []
    for variable in sorted({*environ, *in_file}):
        if not variable.startswith("MOMENTS_") or variable in known:
            continue
        close = difflib.get_close_matches(variable.removeprefix("MOMENTS_"), names, n=1)
        hint = f"did you mean MOMENTS_{close[0]}?" if close else "`moments config show` lists them"
        where = " (in .env)" if variable in in_file else ""
        lines.append(f"{variable}{where} is not a setting and is ignored; {hint}")
    return lines


_KINDS = {
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
}


_NAME_ERRORS = frozenset({"string_pattern_mismatch", "string_too_short"})
"""The errors of a name setting (`MOMENTS_APP_ID`, `MOMENTS_TOPIC_PREFIX`): a regular
expression, or "at least 1 character", is not what to write."""
_BOUND_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def _what_to_write(error_type: str, loc: tuple[int | str, ...]) -> str:
    """The fix, which pydantic's message leaves out, for a value of the wrong kind ("Input
    should be a valid boolean, unable to interpret input"): `; write true or false
    (default false)`, `; write a whole number, e.g. 4`; for a number out of bounds ("Input
    should be greater than or equal to 1": one bound of two), `; write a whole number
    from 1 to 1024, e.g. 4`; for a name with other characters, the characters it takes;
    empty for other errors."""
    field = Settings.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    if field is None:
        return ""
    default = field.get_default(call_default_factory=True)
    example = f", e.g. {default}" if default not in (None, "") else ""
    if error_type in _NAME_ERRORS:
        return f"; write letters, digits, '.', '_' and '-' only{example}"
    if error_type in _BOUND_ERRORS:
        metadata, whole = _bounded(field)
        return _bounds(metadata, whole) + (example or ", or leave it unset")
    kind = _KINDS.get(error_type)
    if kind is None:
        return ""
    if default is None:
        return f"; write {kind}, or leave it unset"
    if isinstance(default, bool):
        return f"; write {kind} (default {str(default).lower()})"
    return f"; write {kind}, e.g. {default}"


def _bounded(field: FieldInfo) -> tuple[list[object], bool]:
    """A field's bounds (its metadata) and whether it holds a whole number; of one that may
    be unset (`Annotated[int, Field(ge=0, le=3)] | None`), those of the number it holds:
    the field's own metadata has none."""
    kinds = [field.annotation, *typing.get_args(field.annotation)]
    for kind in kinds:
        if typing.get_origin(kind) is typing.Annotated and not field.metadata:
            base, *extras = typing.get_args(kind)
            metadata = [m for extra in extras for m in getattr(extra, "metadata", [extra])]
            return metadata, base is int
    return field.metadata, int in kinds


def _bounds(metadata: list[object], whole: bool) -> str:
    """`; write a whole number from 1 to 1024` (`a number above 0 and at most 600`) from a
    field's `Ge`, `Gt`, `Le` and `Lt`."""
    found = {
        name: getattr(item, name)
        for item in metadata
        for name in ("ge", "gt", "le", "lt")
        if getattr(item, name, None) is not None
    }
    kind = "a whole number" if whole else "a number"
    if "ge" in found and "le" in found:
        return f"; write {kind} from {found['ge']} to {found['le']}"
    words = {"ge": "at least {}", "gt": "above {}", "le": "at most {}", "lt": "below {}"}
    said = " and ".join(words[name].format(value) for name, value in found.items())
    return f"; write {kind} {said}" if said else ""


def _without_login(bootstrap: str) -> str:
    """`bootstrap` as a refusal may show it: with a login (`user:password@`) in it, what
    follows its last `@` alone. A password may hold any character, a ',', a '/' or a
    space too: no mark but the last `@` says where it ends."""
    _, at, host = bootstrap.rpartition("@")
    return f"****@{host}" if at else bootstrap


class _LogFormatOnly(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MOMENTS_", env_file=".env", extra="ignore")
    log_format: str = "text"


def log_format_asked() -> str:
    """MOMENTS_LOG_FORMAT alone (lower case), read as `Settings` reads it, for a worker
    whose settings were refused: its reason is then one JSON record where the log is
    JSON; "text" when it cannot be read either."""
    try:
        return _LogFormatOnly().log_format.lower()
    except (ValidationError, SettingsError):
        return "text"


def _source_note(variable: str) -> str:
    """Where a refused value came from when not the environment, in the order `Settings`
    reads its sources: its `_FILE` variable's file, else the `.env` file. A value of either
    was refused with no word of them, and `moments config show` stops on the same refusal."""
    from moments.secret_files import SUFFIX

    environ = {k.upper() for k in os.environ}
    if variable in environ:
        return ""
    path = next((v for k, v in os.environ.items() if k.upper() == variable + SUFFIX), None)
    if path is not None:
        return f" (read from {variable}{SUFFIX}, {path})"
    return " (in .env)" if variable in dotenv_variables() else ""


_NAMED = re.compile(r"MOMENTS_[A-Z0-9_]+\*?(?:/[A-Z0-9_]+)*")
"""A variable a cross-field refusal names: `MOMENTS_KAFKA_SECURITY_PROTOCOL`, and the
shorthands `MOMENTS_KAFKA_SASL_USERNAME/PASSWORD` (two), `MOMENTS_KAFKA_SSL_*` (those set)."""


def _sources_of_named(problem: str) -> str:
    """`\n    where each came from: MOMENTS_X in .env; MOMENTS_Y in the environment; ...`
    for the settings a cross-field refusal names (a single setting's refusal says its
    own, `_source_note`): with one value in a `.env` file and the other in the
    environment, nobody could tell which to change. Empty when it names none."""
    known = [f"MOMENTS_{name.upper()}" for name in Settings.model_fields]
    named: list[str] = []
    for found in _NAMED.findall(problem):
        first, *others = found.split("/")
        if first.endswith("*"):  # a family: the members set, the others are no part of it
            prefix = first.rstrip("*")
            named += [v for v in known if v.startswith(prefix) and _source_said(v) != _NOT_SET]
            continue
        first = first.removesuffix("_FILE") if first.removesuffix("_FILE") in known else first
        named.append(first)
        stem = first.rsplit("_", 1)[0]
        named += [f"{stem}_{other}" for other in others]
    said = [
        f"{variable} {_source_said(variable)}"
        for variable in dict.fromkeys(named)
        if variable in known
    ]
    return "\n    where each came from: " + "; ".join(said) if said else ""


def _set_in_environment(variable: str) -> bool:
    return variable in {k.upper() for k in os.environ}


def _source_said(variable: str) -> str:
    """Where a setting's value came from, in the order `Settings` reads its sources."""
    if _set_in_environment(variable):
        return "in the environment"
    note = _source_note(variable)
    if note.startswith(" (read from"):
        return note.strip().removeprefix("(").removesuffix(")")
    return "in .env" if note else _NOT_SET


_NOT_SET = "not set (the default)"


def where_set(variable: str) -> str:
    """Where a setting's value came from: `in the environment`, `in .env`, `read from
    MOMENTS_X_FILE, PATH`, or `not set: the default`."""
    said = _source_said(variable)
    return "not set: the default" if said == _NOT_SET else said


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning validation errors into a `ConfigError`
    that names each `MOMENTS_*` variable and what is wrong with it."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = "__".join(str(p) for p in err["loc"]).upper()
            if not loc:  # a check across fields: its message names the variables
                for problem in error_text(err).splitlines():
                    lines.append(problem + _sources_of_named(problem))
                continue
            shown = repr(err.get("input"))
            if "PASSWORD" in loc:
                shown = "**********"
            elif loc == "REDIS_URL":
                shown = repr(redisurl.redacted_url(str(err.get("input"))))
            elif loc == "KAFKA_BOOTSTRAP":
                shown = repr(_without_login(str(err.get("input"))))
            message = error_text(err)
            message += _what_to_write(str(err["type"]), err["loc"])
            where = "" if err["loc"][0] in overrides else _source_note(f"MOMENTS_{loc}")
            lines.append(f"MOMENTS_{loc}{where}: {message} (got {shown})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except SettingsError as exc:  # a nested section (MOMENTS_TOPICS) that is not JSON
        match = re.search(r'field "(\w+)"', str(exc))
        var = f"MOMENTS_{match.group(1).upper()}" if match else "a MOMENTS_* variable"
        raise ConfigError(
            f"invalid configuration:\n  {var}: not a JSON object; set one key at a time "
            f"({var}__<KEY>=value, e.g. MOMENTS_TOPICS__TOPUP=billing.topup) or give JSON"
        ) from None
