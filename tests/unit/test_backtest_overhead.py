"""The backtest's work outside the rules: what the sink, the state and the loop around the
engine do per event and per task, counted in calls (no timing: the machine's load does
not change a count). The decisions are the stream's; only how the backtest reaches its
in-memory stores differs."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

import sinks.retry
from moments.backtest import Backtest
from moments.backtest_input import EventFile
from moments.backtest_state import BacktestState
from moments.batchresult import StateChange
from moments.models import InputEvent
from moments.records import RawRecord
from moments.state import SubscriberState
from rules.catalog import load_rules
from sinks.base import acknowledged, acknowledged_each
from sinks.memory import MemoryLedger
from sinks.policy import DispatchPolicy

from .calls import counted_calls
from .test_backtest import capacity_policy, write_history, write_rules


class TestStoreCalls:
    def test_the_in_memory_stores_are_not_called_through_the_outage_retry(
        self, tmp_path: Path
    ) -> None:
        """`with_retry` backs off from a Redis away and sets `moments_dependency_up` at
        every call; the backtest's stores live in its own memory and cannot be away: it
        calls them directly. Only the produce of the tasks goes through it (the sink's
        `_publish`, the stream's path), so it runs no more often than that."""
        history = write_history(tmp_path / "h.jsonl", with_roaming=True)
        bt = Backtest(load_rules(write_rules(tmp_path / "r.yaml")), capacity_policy())
        result, calls = counted_calls(lambda: asyncio.run(bt.run(EventFile(history))))
        assert result.published
        retry_py = sys.modules[sinks.retry.__name__].__file__
        dispatch_py = sys.modules["sinks.dispatch"].__file__
        publishes = calls[f"{dispatch_py}:_publish"]
        assert publishes > 0
        assert calls[f"{retry_py}:with_retry"] == publishes

    def test_an_error_of_an_in_memory_store_is_raised_at_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An OSError is what `with_retry` takes for Redis away and retries for ever; from
        a store in memory it is a bug, and the backtest stops with it instead of hanging
        in back-off."""

        async def broken(*_args: object, **_kwargs: object) -> None:
            raise OSError("a store in memory failed")

        monkeypatch.setattr(MemoryLedger, "claim", broken)
        history = write_history(tmp_path / "h.jsonl")
        bt = Backtest(load_rules(write_rules(tmp_path / "r.yaml")), capacity_policy())

        async def within() -> object:
            return await asyncio.wait_for(bt.run(EventFile(history)), timeout=5)

        with pytest.raises(OSError, match="a store in memory failed"):
            asyncio.run(within())


class TestStateSave:
    def test_a_batch_s_records_are_noted_for_the_sweep_at_once(self) -> None:
        """`save` notes every record a batch wrote for the sweep's index in one step, not
        with a call per record: a backtest of 300k events saves a record ~300k times.
        Each record is noted all the same (the next sweep looks at it)."""
        store = BacktestState()
        changes = {f"1390000{n:04d}": StateChange(SubscriberState(), 0) for n in range(200)}
        changes["13900009999"] = StateChange(None, 0)  # a forgotten one is noted too
        _, calls = counted_calls(lambda: store.save(changes))
        assert calls.total() < 20
        assert len(store.records) == 200
        assert store.index._touched == set(changes)


class TestStateReads:
    def test_the_engine_reads_the_records_from_their_dict(self, tmp_path: Path) -> None:
        """The engine asks for a subscriber's record once an event and whether it has one
        once a batch's subscriber: it is handed the records' dict's own methods, not the
        store's wrappers of them (two calls where one does)."""
        history = write_history(tmp_path / "h.jsonl", with_roaming=True)
        bt = Backtest(load_rules(write_rules(tmp_path / "r.yaml")), capacity_policy())
        result, calls = counted_calls(lambda: asyncio.run(bt.run(EventFile(history))))
        state_py = sys.modules[BacktestState.__module__].__file__
        assert result.events > 0
        assert calls["dict.get"] > result.events
        assert calls[f"{state_py}:load"] == 0
        assert calls[f"{state_py}:has"] == 0


class TestDecisionReads:
    def test_a_decision_reads_the_stores_in_memory_one_after_the_other(
        self, tmp_path: Path
    ) -> None:
        """A decision reads the declines and the facts together from Redis (two round
        trips at once); from the backtest's stores in memory, which answer at once, it
        reads them in turn: no `asyncio.gather`, whose two tasks and turn of the event loop
        were most of the asyncio work of a backtest. The same tasks go out."""
        history = write_history(tmp_path / "h.jsonl", with_roaming=True)
        policy = DispatchPolicy.model_validate(  # facts read at each decision
            {"relevance": {"big_topup": "topped_up"}, "merge": {"hold_channels": []}}
        )
        bt = Backtest(load_rules(write_rules(tmp_path / "r.yaml")), policy)
        result, calls = counted_calls(lambda: asyncio.run(bt.run(EventFile(history))))
        dispatch_py = sys.modules["sinks.dispatch"].__file__
        assert result.published
        assert calls[f"{dispatch_py}:facts_of"] > 0
        assert calls[f"{dispatch_py}:declines"] > 0
        assert calls[f"{asyncio.tasks.__file__}:gather"] == 0


class TestPublishes:
    def test_a_publish_answered_at_once_waits_for_nothing(self, tmp_path: Path) -> None:
        """The backtest's producer answers each write as it takes it: the sink's produce
        (the stream's `produce_all`) finds every acknowledgement in and awaits no
        `asyncio.wait`, whose timer and turns of the event loop cost more than the write."""
        history = write_history(tmp_path / "h.jsonl", with_roaming=True)
        bt = Backtest(load_rules(write_rules(tmp_path / "r.yaml")), capacity_policy())
        result, calls = counted_calls(lambda: asyncio.run(bt.run(EventFile(history))))
        assert result.published
        assert calls[f"{sys.modules['sinks.base'].__file__}:produce_all"] > 0
        assert calls[f"{asyncio.tasks.__file__}:wait"] == 0

    def test_answers_in_already_are_given_in_order_with_their_errors(self) -> None:
        """`acknowledged_each` of futures already done: each one's answer or its error, in
        order, as after a wait; `acknowledged` raises the first error."""

        async def answers() -> tuple[list[object], BaseException | None]:
            loop = asyncio.get_running_loop()
            done: list[asyncio.Future[object]] = [loop.create_future() for _ in range(3)]
            done[0].set_result("first")
            done[1].set_exception(OSError("refused"))
            done[2].set_result("third")
            each = await acknowledged_each(object(), done, {"t"}, deadline_s=1)
            try:
                await acknowledged(object(), done, {"t"}, deadline_s=1)
            except OSError as exc:
                return each, exc
            return each, None

        each, raised = asyncio.run(answers())
        assert each[0] == "first"
        assert isinstance(each[1], OSError)
        assert each[2] == "third"
        assert raised is each[1]


def _topups(path: Path, seconds: list[int]) -> Path:
    """Top-ups of one subscriber, in this order, at these seconds after 10:00."""
    start = dt.datetime(2026, 11, 10, 10, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    docs = [
        {
            "type": "topup",
            "event_id": f"t{n}",
            "subscriber_id": "13900000001",
            "occurred_at": (start + dt.timedelta(seconds=s)).isoformat(),
            "amount": 10,
            "channel": "app",
        }
        for n, s in enumerate(seconds)
    ]
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    return path


class TestLoop:
    def test_a_batch_holds_batch_size_events_at_most(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Events within one tick go to the engine `batch_size` at a time, in their order,
        the last batch what is left (counted as they are read, not measured each time)."""
        history = _topups(tmp_path / "h.jsonl", [0, 1, 2, 3, 4, 5, 6])
        bt = Backtest(load_rules(write_rules(tmp_path / "r.yaml")), batch_size=3)
        sizes: list[int] = []
        step = bt._step

        async def recording(records: list[RawRecord]) -> None:
            sizes.append(len(records))
            await step(records)

        monkeypatch.setattr(bt, "_step", recording)
        asyncio.run(bt.run(EventFile(history)))
        assert sizes == [3, 3, 1]

    def test_a_batch_s_facts_are_recorded_one_by_one_in_time_order(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The facts of a batch are recorded each at its own time, earliest first; two of
        the same time in the order they were read."""
        history = _topups(tmp_path / "h.jsonl", [30, 10, 10, 20])
        bt = Backtest(load_rules(write_rules(tmp_path / "r.yaml")))
        recorded: list[list[str]] = []
        record = bt.sink.subscribers.record_facts

        async def recording(events: Sequence[InputEvent]) -> None:
            recorded.append([e.event_id for e in events])
            await record(events)

        monkeypatch.setattr(bt.sink.subscribers, "record_facts", recording)
        asyncio.run(bt.run(EventFile(history)))
        assert recorded == [["t1"], ["t2"], ["t3"], ["t0"]]
