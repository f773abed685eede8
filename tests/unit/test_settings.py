"""Settings are validated at start with a message naming the variable and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moments.cli import main
from moments.exceptions import ConfigError
from moments.settings import load_settings, unknown_variables


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MOMENTS_KAFKA_BOOTSTRAP", "MOMENTS_REDIS_URL", "MOMENTS_TOPIC_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.metrics_port == 9308
    assert settings.topic("tasks") == "moments.tasks"


def test_a_bad_bootstrap_names_the_variable_and_the_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_KAFKA_BOOTSTRAP", "localhost")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "MOMENTS_KAFKA_BOOTSTRAP" in str(err.value)
    assert "host:port" in str(err.value)


@pytest.mark.parametrize(
    ("value", "bare"),
    [
        ("http://127.0.0.1:39092", "127.0.0.1:39092"),
        ("kafka-1:9092,PLAINTEXT://kafka-2:9092/", "kafka-2:9092"),
        ("SASL_SSL://[::1]:9093", "[::1]:9093"),
    ],
)
def test_a_bootstrap_with_a_scheme_is_refused_with_the_bare_form(
    monkeypatch: pytest.MonkeyPatch, value: str, bare: str
) -> None:
    """`http://127.0.0.1:39092` passed (host "http://127.0.0.1") and the worker waited for
    ever on a name that does not resolve, while a bare `kafka-1` was refused."""
    monkeypatch.setenv("MOMENTS_KAFKA_BOOTSTRAP", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "MOMENTS_KAFKA_BOOTSTRAP" in message
    assert "no scheme" in message
    assert f"write the bare host:port, {bare} " in message


@pytest.mark.parametrize("value", ["kafka-1:9092:9092", "::1:9092", "kafka-1:9092,fe80::1:9093"])
def test_a_host_with_a_colon_outside_brackets_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """`kafka-1:9092:9092` passed (aiokafka took host `kafka-1:9092`, port 9092) and the
    check said only "no answer ... Name or service not known"; an IPv6 address without
    brackets (`::1:9092`) was read as host `::1` by the settings and as the address
    `::1:9092` on the default port by aiokafka. Kafka's own form puts IPv6 in brackets."""
    monkeypatch.setenv("MOMENTS_KAFKA_BOOTSTRAP", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "MOMENTS_KAFKA_BOOTSTRAP" in message
    assert "more than one ':'" in message
    assert "[::1]:9092" in message


def test_an_ipv6_host_in_brackets_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_KAFKA_BOOTSTRAP", "[::1]:9092,[fe80::1]:9093")
    assert load_settings().kafka_bootstrap == "[::1]:9092,[fe80::1]:9093"


def test_a_topics_section_that_is_not_json_says_how_to_set_one_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOMENTS_TOPICS", "billing.topup")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "MOMENTS_TOPICS__TOPUP=" in str(err.value)


def test_one_topic_is_renamed_with_the_nested_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_TOPICS__TOPUP", "billing.topup")
    monkeypatch.setenv("MOMENTS_TOPIC_PREFIX", "staging.")
    settings = load_settings()
    assert settings.topic("topup") == "staging.billing.topup"
    assert settings.topic("usage") == "staging.telecom.usage"


@pytest.mark.parametrize(
    ("variable", "given", "field", "meant"),
    [
        ("MOMENTS_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("MOMENTS_LOG_LEVEL", "Warning", "log_level", "WARNING"),
        ("MOMENTS_LOG_FORMAT", "JSON", "log_format", "json"),
        ("MOMENTS_STORE", "RocksDB", "store", "rocksdb"),
        ("MOMENTS_KAFKA_SECURITY_PROTOCOL", "sasl_ssl", "kafka_security_protocol", "SASL_SSL"),
        ("MOMENTS_KAFKA_SASL_MECHANISM", "scram-sha-512", "kafka_sasl_mechanism", "SCRAM-SHA-512"),
    ],
)
def test_choices_are_read_whatever_their_case(
    monkeypatch: pytest.MonkeyPatch, variable: str, given: str, field: str, meant: str
) -> None:
    if field.startswith("kafka_s"):  # SASL, which needs its login
        monkeypatch.setenv("MOMENTS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
        monkeypatch.setenv("MOMENTS_KAFKA_SASL_USERNAME", "moments")
        monkeypatch.setenv("MOMENTS_KAFKA_SASL_PASSWORD", "secret")
    monkeypatch.setenv(variable, given)
    assert getattr(load_settings(), field) == meant


def test_a_choice_that_is_none_of_them_is_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_LOG_LEVEL", "verbose")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "MOMENTS_LOG_LEVEL" in str(err.value)
    assert "'DEBUG', 'INFO', 'WARNING' or 'ERROR'" in str(err.value)


@pytest.mark.parametrize("name", ["", "bad topic!", "x" * 250, "billing/topup"])
def test_a_topic_name_kafka_would_refuse_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Such a topic was accepted, the worker logged Faust's error and never read it."""
    monkeypatch.setenv("MOMENTS_TOPICS__TOPUP", name)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert (
        "MOMENTS_TOPICS__TOPUP: not a Kafka topic name: letters, digits, '.', '_' and '-' "
        "only, 1 to 249 of them"
    ) in str(err.value)


def test_variables_that_set_nothing_are_named_with_the_closest_setting() -> None:
    environ = {
        "MOMENTS_KAFKA_BOOTSTRAPS": "x",
        "MOMENTS_TOPICS__TOPUPS": "x",
        "MOMENTS_FOO": "1",
        "MOMENTS_KAFKA_SASL_PASSWORD_FILE": "/run/secrets/kafka",  # known: a secret file
        "MOMENTS_TOPICS__USAGE": "x",
        "PATH": "/usr/bin",
    }
    assert unknown_variables(environ) == [
        "MOMENTS_FOO is not a setting and is ignored; `moments config show` lists them",
        "MOMENTS_KAFKA_BOOTSTRAPS is not a setting and is ignored; did you mean "
        "MOMENTS_KAFKA_BOOTSTRAP?",
        "MOMENTS_TOPICS__TOPUPS is not a setting and is ignored; did you mean "
        "MOMENTS_TOPICS__TOPUP?",
    ]


def test_config_show_warns_of_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOMENTS_LOG_LEVL", "DEBUG")
    assert main(["config", "show"]) == 0
    assert (
        "warning: MOMENTS_LOG_LEVL is not a setting and is ignored; did you mean "
        "MOMENTS_LOG_LEVEL?" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("url", "said", "fix"),
    [
        ("redis://redis:port/0", "port", "redis://127.0.0.1:6379/0"),
        ("redis://redis:63790000/0", "port", "redis://127.0.0.1:6379/0"),
        ("redis://redis:0/0", "port", "redis://127.0.0.1:6379/0"),
        ("redis://redis:6379/moments", "database", "redis://127.0.0.1:6379/0"),
        ("redis://redis:6379/0?db=one", "database", "redis://127.0.0.1:6379/0"),
        ("redis:///0", "host", "redis://127.0.0.1:6379/0"),
        ("unix://?db=0", "socket", "unix:///path/to/redis.sock"),
    ],
)
def test_a_redis_url_redis_py_cannot_read_as_meant_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, url: str, said: str, fix: str
) -> None:
    """Only the scheme was checked: a port that is no number stopped the worker, `moments
    check` and every Redis command with redis-py's traceback (`ValueError: Port could not
    be cast to integer value as 'port'`, exit code 1), and a path that is no database
    number (`/moments`), a port 0 or a missing host were ignored by redis-py without a
    word (database 0, port 6379, localhost)."""
    monkeypatch.setenv("MOMENTS_REDIS_URL", url)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "MOMENTS_REDIS_URL" in message
    assert said in message
    assert f"write {fix}" in message or f"write e.g. {fix}" in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://redis:6379/0",
        "redis://redis",
        "redis://redis:6379/",
        "rediss://moments@redis-master.redis.svc:6379/1",
        "redis://:pw@redis:6379/2?socket_timeout=5",
        "redis://redis:6379/?db=3",
        "redis://[::1]:6379/0",
        "unix:///run/redis/redis.sock?db=2",
    ],
)
def test_redis_urls_redis_py_reads_load(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("MOMENTS_REDIS_URL", url)
    assert load_settings().redis_url == url


@pytest.mark.parametrize(
    "url",
    [
        "redis://moments:s3/cr3t@redis:6379/0",
        "redis://:s3?cr3t@redis:6379/0",
        "rediss://moments:s3#cr3t@redis:6380/0",
        "redis://moments:s3/cr3t@redis:6379/0?password=s3?cr3t",
        "redis://moments:s3@x/cr3t@redis:6379/0",
    ],
)
def test_a_password_with_a_slash_question_mark_or_hash_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """A URL's host part ends at the first `/`, `?` or `#`: redis-py reads
    `moments:s3/cr3t@redis` as host `moments`, port `s3`. The check refused it as a port
    that is no number ("the port in moments:s3"), and the refusal's `(got ...)` printed the
    whole URL, password and all: redaction looked for the password where the host part
    ends. It says to percent-encode them, and shows no part of the password."""
    monkeypatch.setenv("MOMENTS_REDIS_URL", url)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "percent-encode" in message
    assert "cr3t" not in message
    assert ":s3" not in message
    assert "://moments:****@redis:63" in message or "://:****@redis:6379" in message


def test_config_show_warns_of_them_in_the_env_file_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The README says a `MOMENTS_*` variable that is no setting is named in a warning,
    and that a `.env` file is read too; one misspelt there was ignored without a word,
    `MOMENTS_LIVE_FORM` (operations.md: the go-live date in "its environment or `.env`")
    leaving the workers live from their first event."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MOMENTS_LIVE_FORM=2027-02-15\nMOMENTS_LOG_LEVEL=INFO\n")
    assert main(["config", "show"]) == 0
    err = capsys.readouterr().err
    assert (
        "warning: MOMENTS_LIVE_FORM (in .env) is not a setting and is ignored; did you mean "
        "MOMENTS_LIVE_FROM?" in err
    )
    assert "MOMENTS_LOG_LEVEL" not in err


@pytest.mark.parametrize(
    ("variable", "value", "fix"),
    [
        ("MOMENTS_APP_ID", "bad id", "write letters, digits, '.', '_' and '-' only, e.g. moments"),
        ("MOMENTS_APP_ID", "", "write letters, digits, '.', '_' and '-' only, e.g. moments"),
        ("MOMENTS_TOPIC_PREFIX", "a b", "write letters, digits, '.', '_' and '-' only"),
        ("MOMENTS_PARTITIONS", "0", "write a whole number from 1 to 1024, e.g. 4"),
        ("MOMENTS_REPLICATION_FACTOR", "99", "write a whole number from 1 to 16, e.g. 1"),
        ("MOMENTS_REBALANCE_TIMEOUT", "0", "write a number above 0 and at most 600, e.g. 30.0"),
        # Bounded inside `int | None`: pydantic's "less than or equal to 3" alone.
        ("MOMENTS_STANDBY_REPLICAS", "5", "write a whole number from 0 to 3, or leave it unset"),
    ],
)
def test_a_value_out_of_bounds_or_with_other_characters_says_what_to_write(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fix: str
) -> None:
    """pydantic's "String should match pattern '^[A-Za-z0-9._-]+$'" and "Input should be
    greater than or equal to 1" named the variable but not the value to write: a regular
    expression, and one bound of two."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    line = next(line for line in str(err.value).splitlines() if variable in line)
    assert fix in line, line
    assert f"(got '{value}')" in line, line


@pytest.mark.parametrize(
    ("variable", "value", "fix"),
    [
        ("MOMENTS_IDEMPOTENT_PRODUCER", "maybe", "write true or false, or leave it unset"),
        ("MOMENTS_LOG_PII", "sometimes", "write true or false (default false)"),
        ("MOMENTS_PARTITIONS", "eight", "write a whole number, e.g. 4"),
        ("MOMENTS_METRICS_PORT", "9308.5", "write a whole number, e.g. 9308"),
        ("MOMENTS_REBALANCE_TIMEOUT", "30s", "write a number, e.g. 30.0"),
        ("MOMENTS_STANDBY_REPLICAS", "one", "write a whole number, or leave it unset"),
    ],
)
def test_a_value_of_the_wrong_kind_says_what_to_write(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fix: str
) -> None:
    """pydantic's "Input should be a valid boolean, unable to interpret input" named the
    variable but not what it takes."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    line = next(line for line in str(err.value).splitlines() if variable in line)
    assert fix in line, line
    assert f"(got '{value}')" in line, line


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redis://:s3cr3t@[::1/0", "IPv6"),
        ("rediss://moments:s3cr3t@redis]:6380/0", "IPv6"),
        ("redis://moments:s3cr3t@redis:6379/0?socket_timeout=5s", "?socket_timeout="),
        ("redis://redis:6379/0?password=s3cr3t&health_check_interval=often", "?health_check"),
    ],
)
def test_a_redis_url_redis_py_raises_on_is_refused_without_a_traceback_or_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, said: str
) -> None:
    """A stray '[' or ']' in the host part made `urlsplit` raise ("Invalid IPv6 URL") in
    the check and again in the redaction of the refusal: every command stopped with a
    traceback that printed pydantic's error, `input_value='redis://:s3cr3t@[::1/0'`, the
    password in clear. An option of the wrong kind in the query passed the load and
    stopped the worker, `moments check` and every Redis command at the first connection
    with redis-py's traceback ("Invalid value for 'socket_timeout' in connection URL")."""
    monkeypatch.setenv("MOMENTS_REDIS_URL", url)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "MOMENTS_REDIS_URL" in message
    assert said in message
    assert "write" in message
    assert "s3cr3t" not in message
    assert main(["config", "show"]) == 2
    out = capsys.readouterr()
    assert "MOMENTS_REDIS_URL" in out.err
    assert "s3cr3t" not in out.out + out.err
    assert "Traceback" not in out.err


@pytest.mark.parametrize(
    "bootstrap",
    [
        "svc-moments:s3cr3t@kafka-1:9093",
        "kafka-0:9093,SASL_SSL://svc-moments:s3cr3t@kafka-1:9093",
        # A password holding a ',', a '/' or a space: the mask began after it, and the
        # refusal quoted the password's first part.
        "svc-moments:s3cr3t,x@kafka-1:9093",
        "svc-moments:s3cr3t/x@kafka-1:9093",
        "svc-moments:s3cr3t x@kafka-1:9093",
    ],
)
def test_a_login_in_the_bootstrap_servers_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bootstrap: str
) -> None:
    """`user:password@host:port` passed as a host name `svc-moments:s3cr3t@kafka-1`: no
    error at load, and `moments config show` and the worker's warnings while it waited for
    that "host" ("Kafka svc-moments:s3cr3t@kafka-1:9093 not reachable yet") printed it in
    clear; with a scheme in front, the refusal quoted it twice."""
    monkeypatch.setenv("MOMENTS_KAFKA_BOOTSTRAP", bootstrap)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "MOMENTS_KAFKA_BOOTSTRAP" in message
    assert "MOMENTS_KAFKA_SASL_PASSWORD_FILE" in message
    assert "****@kafka-1:9093" in message
    assert "s3cr3t" not in message
    assert main(["config", "show"]) == 2
    out = capsys.readouterr()
    assert "s3cr3t" not in out.out + out.err


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redis://redis:6379/0?socket_timout=5", "did you mean socket_timeout?"),
        ("redis://redis:6379/0?foo=bar", "?foo= is no option redis-py takes"),
        ("redis://redis:6379/0?ssl_cert_reqs=none", "?ssl_cert_reqs= is no option"),
        ("unix:///run/redis.sock?host=redis", "?host= is no option"),
    ],
)
def test_a_redis_url_option_redis_py_does_not_take_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, url: str, said: str
) -> None:
    """redis-py passes an option it does not know on to the connection it opens, which
    raised TypeError at the worker's first connection (a traceback, exit code 1): a typo
    of `socket_timeout`, or an `ssl_*` option on a redis:// URL (rediss:// takes them)."""
    monkeypatch.setenv("MOMENTS_REDIS_URL", url)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert said in str(err.value)
    assert "MOMENTS_REDIS_URL" in str(err.value)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "rediss://redis:6380/0?ssl_min_version=TLSv1_2",
            "write the TLS version's number, 771 for TLS 1.2 or 772 for TLS 1.3",
        ),
        (
            "rediss://redis:6380/0?ssl_min_version=1.2",
            "write the TLS version's number, 771 for TLS 1.2 or 772 for TLS 1.3",
        ),
        # A whole number, but no TLS version: the first connection raised
        # "Unsupported TLS/SSL version 0xc".
        (
            "rediss://redis:6380/0?ssl_min_version=12",
            "write the TLS version's number, 771 for TLS 1.2 or 772 for TLS 1.3",
        ),
        (
            "rediss://redis:6380/0?ssl_include_verify_flags=strict",
            "write names of Python's ssl.VerifyFlags, separated by commas, e.g. "
            "VERIFY_X509_STRICT,VERIFY_X509_PARTIAL_CHAIN",
        ),
        (
            "redis://redis:6379/0?retry_on_error=timeouts",
            "write names of redis-py's exceptions, separated by commas, e.g. "
            "ConnectionError,TimeoutError",
        ),
    ],
)
def test_a_redis_url_option_redis_py_reads_its_own_way_is_told_how(
    monkeypatch: pytest.MonkeyPatch, url: str, said: str
) -> None:
    """`?ssl_min_version=TLSv1_2` was told to "write a whole number (e.g. 5)": what
    redis-py reads there (`int`, then Python's `SSLContext.minimum_version`), but 5 is no
    TLS version, and `?ssl_min_version=12` passed the load and stopped the first
    connection ("Unsupported TLS/SSL version 0xc"). The flags and exceptions options
    were told to "write what redis-py documents for it", which is nothing there."""
    monkeypatch.setenv("MOMENTS_REDIS_URL", url)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert said in str(err.value)
    assert "MOMENTS_REDIS_URL" in str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        "rediss://redis:6380/0?ssl_cert_reqs=none",
        "redis://redis:6379/0?max_connections=20&health_check_interval=30",
        "redis://redis:6379/0?client_name=moments&protocol=3",
        "unix:///run/redis.sock?db=1&socket_timeout=2",
        "rediss://redis:6380/0?ssl_min_version=771",
        "rediss://redis:6380/0?ssl_min_version=772&ssl_include_verify_flags=VERIFY_X509_STRICT",
        "redis://redis:6379/0?retry_on_error=ConnectionError,TimeoutError",
    ],
)
def test_redis_url_options_redis_py_takes_load(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("MOMENTS_REDIS_URL", url)
    assert load_settings().redis_url == url


class TestWhereABadValueCameFrom:
    """`MOMENTS_STORE: Input should be 'memory' or 'rocksdb' (got 'rocks')` with nothing
    of the kind in the environment: the value was in a `.env` file or a `_FILE`, which the
    refusal did not say, and `moments config show`, the command that says where each value
    comes from, stops on the same refusal (journey review)."""

    @pytest.fixture(autouse=True)
    def _here(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.chdir(tmp_path)
        for name in ("MOMENTS_STORE", "MOMENTS_STORE_FILE"):
            monkeypatch.delenv(name, raising=False)

    def refusal(self) -> str:
        with pytest.raises(ConfigError) as err:
            load_settings()
        return str(err.value)

    def test_a_value_of_the_env_file(self, tmp_path: Path) -> None:
        (tmp_path / ".env").write_text("MOMENTS_STORE=rocks\n")
        assert "  MOMENTS_STORE (in .env): Input should be 'memory' or 'rocksdb'" in (
            self.refusal()
        )

    def test_a_value_of_a_file_variable(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        (tmp_path / "store").write_text("rocks\n")
        monkeypatch.setenv("MOMENTS_STORE_FILE", str(tmp_path / "store"))
        assert (
            f"  MOMENTS_STORE (read from MOMENTS_STORE_FILE, {tmp_path / 'store'}): Input "
            "should be 'memory' or 'rocksdb'"
        ) in self.refusal()

    def test_a_value_of_the_environment_is_said_as_before(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        (tmp_path / ".env").write_text("MOMENTS_STORE=memory\n")
        monkeypatch.setenv("MOMENTS_STORE", "rocks")
        assert "  MOMENTS_STORE: Input should be 'memory' or 'rocksdb'" in self.refusal()


class TestWhereCrossFieldValuesCameFrom:
    """A refusal of two settings that do not go together (`MOMENTS_KAFKA_SASL_USERNAME/
    PASSWORD are set but MOMENTS_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use them`) said
    nothing of where each value came from, unlike a single setting's refusal: with one in
    a `.env` file and the other in the environment, `moments config show` stopped on it
    and nobody could tell which to change. Each variable it names is said with its source."""

    @pytest.fixture(autouse=True)
    def _here(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.chdir(tmp_path)
        for name in list(os.environ):
            if name.upper().startswith("MOMENTS_"):
                monkeypatch.delenv(name)

    def test_each_value_named_says_its_source(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / ".env").write_text("MOMENTS_KAFKA_SASL_USERNAME=svc\n")
        monkeypatch.setenv("MOMENTS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
        assert main(["config", "show"]) == 2
        err = capsys.readouterr().err
        assert "does not use them; set it to SASL_SSL (or SASL_PLAINTEXT)\n" in err
        assert (
            "    where each came from: MOMENTS_KAFKA_SASL_USERNAME in .env; "
            "MOMENTS_KAFKA_SASL_PASSWORD not set (the default); "
            "MOMENTS_KAFKA_SECURITY_PROTOCOL in the environment\n"
        ) in err

    def test_a_file_variable_and_each_problem_on_its_own_line(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        (tmp_path / "user").write_text("svc\n")
        monkeypatch.setenv("MOMENTS_METRICS_USERNAME_FILE", str(tmp_path / "user"))
        monkeypatch.setenv("MOMENTS_KAFKA_SSL_CERTFILE", str(tmp_path / "user"))
        with pytest.raises(ConfigError) as err:
            load_settings()
        said = str(err.value)
        assert (
            "  MOMENTS_KAFKA_SSL_CERTFILE and MOMENTS_KAFKA_SSL_KEYFILE go together; set both "
            "or none\n    where each came from: MOMENTS_KAFKA_SSL_CERTFILE in the environment; "
            "MOMENTS_KAFKA_SSL_KEYFILE not set (the default)\n"
        ) in said
        assert (
            "  MOMENTS_METRICS_USERNAME and MOMENTS_METRICS_PASSWORD go together; set both or "
            "none\n    where each came from: MOMENTS_METRICS_USERNAME read from "
            f"MOMENTS_METRICS_USERNAME_FILE, {tmp_path / 'user'}; MOMENTS_METRICS_PASSWORD "
            "not set (the default)"
        ) in said


def test_a_rules_path_misspelt_is_told_the_close_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new user's first hour (review): `MOMENTS_RULES=my-rule/ moments run` of a folder
    my-rules/ said only "does not exist; point it at a rules .yaml file or folder", where
    `moments rules validate my-rule/` names the close one."""
    (tmp_path / "my-rules").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOMENTS_RULES", "my-rule/")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "MOMENTS_RULES: my-rule does not exist; did you mean 'my-rules'?" in str(err.value)
    monkeypatch.setenv("MOMENTS_RULES", "elsewhere/")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "elsewhere does not exist; point it at a rules .yaml file or folder" in str(err.value)
