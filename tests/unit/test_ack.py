"""`moments tasks ack` writes only task ids the worker takes: 32 lowercase hex."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from moments.ack import AckError, ack_task, build_outcome, check_subscriber
from moments.cli import main
from moments.embedded import free_port
from moments.models import OutcomeStatus, TaskOutcome
from moments.settings import Settings


class TestTaskIdForm:
    """An id of another form is refused before any connection, naming where ids are."""

    @pytest.mark.parametrize("task_id", ["nope", "ABC", "0" * 31, "0" * 32 + "\n"])
    def test_the_command_refuses_it(self, task_id: str, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["tasks", "ack", task_id, "--status", "accepted"])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "is not a task id (32 lowercase hex characters)" in err
        assert "moments tasks tail --json" in err

    def test_a_long_argument_is_cut_short(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A 200-character argument (a pasted page) was repeated whole in the error; one of
        a task id's length (in capitals) still shows whole."""
        with pytest.raises(SystemExit):
            main(["tasks", "ack", "z" * 200, "--status", "accepted"])
        err = capsys.readouterr().err
        assert f"'{'z' * 37}...' is not a task id (32 lowercase hex characters)" in err
        assert "z" * 38 not in err
        upper = "AB" * 16
        with pytest.raises(AckError, match=f"^'{upper}' is not a task id"):
            asyncio.run(ack_task(Settings(), upper, OutcomeStatus.DECLINED, "13800138001"))

    def test_the_function_refuses_it(self) -> None:
        with pytest.raises(AckError, match="32 lowercase hex"):
            asyncio.run(
                ack_task(
                    Settings(), "abc\n[CRITICAL] forged", OutcomeStatus.DECLINED, "13800138001"
                )
            )


class TestParts:
    """A `--subscriber` or `--agent` the outcome cannot hold is refused naming the option
    and the fix, before any connection: pydantic's traceback ended the command."""

    @pytest.mark.parametrize(
        ("option", "value", "said"),
        [
            (
                "--subscriber",
                "+8613800138001",
                "moments: --subscriber: write the subscriber number as 5 to 20 digits only",
            ),
            ("--agent", "a" * 129, "moments: --agent: String should have at most 128 characters"),
        ],
    )
    def test_the_command_names_the_option(
        self, option: str, value: str, said: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        unreachable = f"127.0.0.1:{free_port()}"
        argv = ["tasks", "ack", "0" * 32, "--status", "accepted", option, value]
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MOMENTS_KAFKA_BOOTSTRAP", unreachable)
            assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(said)
        assert "Traceback" not in err
        assert unreachable not in err  # refused before Kafka was asked

    def test_the_function_refuses_them(self) -> None:
        with pytest.raises(AckError, match=r"^--agent: String should have at most 128"):
            asyncio.run(
                ack_task(
                    Settings(), "0" * 32, OutcomeStatus.DECLINED, "13800138001", None, "a" * 200
                )
            )


class TestReceipt:
    """The outcome is echoed with the subscriber masked as the logs mask it (it printed
    the whole number into the terminal), unless MOMENTS_LOG_PII."""

    @pytest.fixture(autouse=True)
    def _no_broker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        async def written(
            settings: Settings,
            task_id: str,
            status: OutcomeStatus,
            subscriber_id: str | None = None,
            note: str | None = None,
            agent_id: str | None = None,
            warn: object = None,
        ) -> TaskOutcome:
            return build_outcome(task_id, "13800138001", status, note, agent_id)

        monkeypatch.setattr("moments.ack.ack_task", written)
        monkeypatch.setattr("moments.connections.require_kafka", lambda settings: None)
        monkeypatch.delenv("MOMENTS_LOG_PII", raising=False)

    def ack(self, capsys: pytest.CaptureFixture[str], *more: str) -> dict[str, str]:
        argv = ["tasks", "ack", "0" * 32, "--status", "accepted", "--subscriber", "13800138001"]
        assert main([*argv, *more]) == 0
        out = capsys.readouterr().out
        shown: dict[str, str] = orjson.loads(out)
        return shown

    def test_the_subscriber_is_masked(self, capsys: pytest.CaptureFixture[str]) -> None:
        shown = self.ack(capsys)
        assert shown["subscriber_id"] == "138****8001"
        assert (shown["task_id"], shown["status"]) == ("0" * 32, "accepted")

    def test_a_number_in_the_note_is_masked(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The receipt echoed the note whole (security review)."""
        shown = self.ack(capsys, "--note", "called back on 13912341234, fine")
        assert shown["note"] == "called back on 139****1234, fine"

    def test_log_pii_shows_it_whole(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("MOMENTS_LOG_PII", "true")
        assert self.ack(capsys)["subscriber_id"] == "13800138001"


class TestSubscriberCheck:
    """`--subscriber` is checked against the task's while the ledger keeps it (tests/
    integration/dispatch/test_outcomes.py); when the ledger cannot be read the outcome is
    written with a warning."""

    def test_an_unreachable_redis_is_a_warning(self) -> None:
        settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
        warning = asyncio.run(check_subscriber(settings, "0" * 32, "13800138001"))
        assert warning is not None
        assert warning.startswith(f"could not check task {'0' * 32}'s subscriber in redis://")
        assert "subscriber_mismatch" in warning


class ClusterNode:
    """A Redis in cluster mode, as `probe_redis` and the ledger's reads meet it."""

    async def ping(self) -> bool:
        return True

    async def info(self, section: str) -> dict[str, int]:
        return {"cluster_enabled": 1}

    async def eval(self, script: str, numkeys: int, *keys: str) -> int:
        from redis.exceptions import ClusterCrossSlotError

        raise ClusterCrossSlotError("Keys in request don't hash to the same slot")

    def register_script(self, script: str) -> object:  # the ledger's, never run here
        return object()

    async def get(self, key: str) -> bytes | None:
        from redis.exceptions import MovedError

        raise MovedError("3999 127.0.0.1:7001")

    async def aclose(self) -> None:
        return None


class TestSubscriberGivenAgainstACluster:
    """With --subscriber the Redis preflight of the other Redis commands was skipped: a
    Redis in cluster mode was only a warning ("could not check ...: MovedError; written as
    given"), and the outcome was written for a worker that refuses that Redis."""

    @pytest.fixture(autouse=True)
    def cluster(self, monkeypatch: pytest.MonkeyPatch) -> list[TaskOutcome]:
        written: list[TaskOutcome] = []

        async def write(settings: Settings, outcome: TaskOutcome) -> None:
            written.append(outcome)

        monkeypatch.setattr("moments.ack.redis_client", lambda settings: ClusterNode())
        monkeypatch.setattr("moments.ack.write_outcome", write)
        monkeypatch.setattr("moments.connections.require_kafka", lambda settings: None)
        return written

    def test_the_check_refuses_it(self) -> None:
        from moments.exceptions import RedisClusterError

        with pytest.raises(RedisClusterError) as err:
            asyncio.run(check_subscriber(Settings(), "0" * 32, "13800138001"))
        assert "MOMENTS_REDIS_URL to a Redis without cluster mode" in str(err.value)

    def test_the_command_exits_2_with_the_fix_and_writes_nothing(
        self, cluster: list[TaskOutcome], capsys: pytest.CaptureFixture[str]
    ) -> None:
        argv = ["tasks", "ack", "0" * 32, "--status", "accepted", "--subscriber", "13800138001"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "cluster mode" in err
        assert "MOMENTS_REDIS_URL to a Redis without cluster mode" in err
        assert "warning" not in err
        assert cluster == []
