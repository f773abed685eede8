"""Subscriber records are stored compressed against a shipped dictionary, and read back
whether compressed or written before compression (plain JSON)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from moments import statezip
from moments.backtest import Backtest
from moments.backtest_input import EventFile, merged
from moments.backtest_state import BacktestState
from moments.simulate import limit, simulate, write_jsonl
from moments.state import SubscriberState
from moments.statezip import CURRENT_DICTIONARY, ZSTD_MAGIC, StateFormatError, unpack

from .catalogs import default_rules

STATE_GOAL_BYTES = 512
"""The proof issue's goal for state per subscriber."""

texts = st.text(max_size=12)
epochs = st.integers(min_value=0, max_value=2**40)
states = st.builds(
    SubscriberState,
    first_seen=st.dictionaries(texts, epochs, max_size=6),
    offsets=st.dictionaries(
        st.builds("{}{}".format, st.sampled_from("purtc"), st.integers(0, 63)), epochs, max_size=5
    ),
    recent=st.dictionaries(
        st.sampled_from("purtc"),
        st.lists(st.text(alphabet="0123456789abcdef", min_size=12, max_size=12), max_size=8),
        max_size=5,
    ),
    profile=st.dictionaries(texts, st.one_of(texts, st.lists(texts, max_size=2)), max_size=5),
    series=st.dictionaries(
        texts, st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=9), max_size=4
    ),
    watermark=epochs,
    special_day=st.integers(min_value=0, max_value=800_000),
    changed_after_look=st.integers(min_value=0, max_value=800_000),
    complaints=st.dictionaries(texts, epochs, max_size=3),
    shadowed=st.dictionaries(texts, texts, max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(states)
def test_a_record_reads_back_as_it_was_saved(state: SubscriberState) -> None:
    stored = state.to_bytes()
    assert stored[:4] == ZSTD_MAGIC
    assert zstandard.get_frame_parameters(stored).dict_id == CURRENT_DICTIONARY
    assert SubscriberState.from_bytes(stored) == state


@settings(max_examples=50, deadline=None)
@given(states)
def test_a_record_written_before_compression_is_still_read(state: SubscriberState) -> None:
    """A changelog from before compression restores as is."""
    plain = state.to_json()
    assert plain[:1] == b"{"
    assert SubscriberState.from_bytes(plain) == state


def test_open_complaints_written_before_their_times_date_from_the_latest_complaint() -> None:
    """A record from before the times were kept lists ids: each still loads, dated at the
    subscriber's latest complaint record (the latest it can be: none lapses too soon), and
    is written back with its time."""
    older = b'{"o":{"c0":4},"r":{},"n":{"c":1764900000,"u":1765000000},"k":["c1","c2"]}'
    for stored in (older, statezip.pack(older)):
        state = SubscriberState.from_bytes(stored)
        assert state.complaints == {"c1": 1764900000, "c2": 1764900000}
        assert SubscriberState.from_bytes(state.to_bytes()) == state
    assert SubscriberState.from_bytes(b'{"o":{},"r":{},"k":["c1"]}').complaints == {"c1": 0}


def test_a_record_of_an_unknown_dictionary_is_refused_with_what_to_do() -> None:
    samples: list[bytes | bytearray | memoryview[int]] = [
        SubscriberState(watermark=i, recent={"u": [f"{i:012x}"]}).to_json() for i in range(400)
    ]
    other = zstandard.train_dictionary(1024, samples, dict_id=3)
    stored = zstandard.ZstdCompressor(dict_data=other, write_dict_id=True).compress(samples[0])
    with pytest.raises(StateFormatError, match=r"dictionary 3.*run the version that wrote it"):
        SubscriberState.from_bytes(stored)


@pytest.mark.parametrize("stored", [b"\x00\x01garbage", b"", b"\x28\xb5\x2f\xfd\x00\x00"])
def test_bytes_that_are_no_record_are_refused_clearly(stored: bytes) -> None:
    with pytest.raises(
        StateFormatError, match=r"not a subscriber record|could not be decompressed"
    ):
        unpack(stored)


def test_what_a_refused_record_starts_with_is_said_with_its_numbers_masked() -> None:
    """`moments state decode '["13800138001"]'` printed six of the number's digits."""
    with pytest.raises(StateFormatError) as refused:
        unpack(b'["13800138001"]')
    assert "138001" not in str(refused.value)
    assert "starts with b'[\"" in str(refused.value)


def test_a_simulated_days_records_are_within_the_state_goal(tmp_path: Path) -> None:
    """Records of subscribers with a day of events behind them (about 70 each), not the
    handful a benchmark gives: in plain JSON they were about twice the goal."""
    start = dt.datetime(2026, 5, 11, tzinfo=dt.UTC)
    # 100 subscribers, ~72 events each in the day: a realistic record is a matter of the
    # events per subscriber, not of how many subscribers are averaged over.
    subscribers, rate = 100, 100 * 72 / 86400
    events = simulate(subscribers, rate, seed=5, start=start)
    path = tmp_path / "day.jsonl"
    write_jsonl(path, events, limit(events, rate, 86400) or 0)
    backtest = Backtest(default_rules())
    asyncio.run(backtest.run(merged([EventFile(path)]), None, None))
    assert isinstance(backtest.state, BacktestState)
    held = list(backtest.state.records.values())
    assert len(held) == subscribers
    plain = sum(len(s.to_json()) for s in held) / len(held)
    stored = sum(len(s.to_bytes()) for s in held) / len(held)
    assert plain > STATE_GOAL_BYTES, plain  # the records are of a realistic size
    assert stored <= STATE_GOAL_BYTES, (stored, plain)
    assert stored < plain / 2, (stored, plain)


def test_an_installation_without_its_dictionary_fails_at_start_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    statezip.check()  # the installed package is whole

    def missing(dict_id: int) -> zstandard.ZstdCompressionDict:
        raise FileNotFoundError(f"state-dict-{dict_id}.zstd")

    monkeypatch.setattr(statezip, "dictionary", missing)
    monkeypatch.setattr(statezip._codecs, "compress", None)
    with pytest.raises(StateFormatError, match="missing or damaged: reinstall moments"):
        statezip.check()
