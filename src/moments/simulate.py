"""`moments simulate`: a realistic synthetic event stream, to Kafka or to a JSON-lines file.

Pure generators (`make_profiles`, `EventGenerator`) decide everything from a seeded
`random.Random`, so a seed gives the same stream; `produce_stream` and `write_jsonl` are
the thin outputs. The mix is mostly usage, fewer top-ups, rare roaming and complaints,
and each subscriber's profile first; its later profile updates change the tier, suspend
or reactivate the line, and a few opt out of a channel or close the line after tasks
went out (a backtest of a few weeks withdraws some). Moments are *planted* at a known rate
(`plant_rate`): first international roaming, a low balance, a call to a competitor's
hotline, a complaint; `SimStats.planted` counts them so a run can be checked against
what the detector found.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import gzip
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

import orjson

from moments.filenames import gzipped
from moments.models import EVENT_MODELS, EventType
from moments.settings import Settings
from sinks.base import acknowledged_each

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from sinks.metrics import Metrics

REGIONS = ("NJ", "SZ", "SH", "BJ", "GZ", "HZ", "CD", "WH")
TIERS = (("standard", 0.55), ("silver", 0.25), ("gold", 0.15), ("diamond", 0.05))
TIMEZONES = (("Asia/Shanghai", 0.9), ("Asia/Urumqi", 0.05), ("Asia/Hong_Kong", 0.05))
TOPUP_CHANNELS = ("app", "bank", "card", "store", "auto")
COUNTRIES = ("JP", "TH", "KR", "SG", "US", "FR", "DE", "GB", "AU", "MY", "VN", "IT")
COUNTRY_ZONES = {
    "JP": "Asia/Tokyo",
    "TH": "Asia/Bangkok",
    "KR": "Asia/Seoul",
    "SG": "Asia/Singapore",
    "US": "America/Los_Angeles",
    "FR": "Europe/Paris",
    "DE": "Europe/Berlin",
    "GB": "Europe/London",
    "AU": "Australia/Sydney",
    "MY": "Asia/Kuala_Lumpur",
    "VN": "Asia/Ho_Chi_Minh",
    "IT": "Europe/Rome",
}
COMPETITOR_HOTLINES = ("10010", "10000")
QUIET_HOURS = (["22:00-08:00"], ["23:00-07:30"], ["21:30-08:30", "12:30-13:30"])
CONTRACT_SHARE = 0.4
"""Subscribers on a contract, ending within the next two years (contract-expiry rules)."""
OPT_OUTS = ((None, 0.92), ("outbound_call", 0.05), ("sms", 0.03))
SUSPEND_SHARE = 0.05
"""Profile updates that suspend an active line (arrears)."""
REACTIVATE_SHARE = 0.5
"""Profile updates that reactivate a suspended line (topped up)."""
OPT_OUT_LATER_SHARE = 0.002
"""Profile updates that opt out of one more channel (about 4% of customers in three
simulated weeks): an opt-out read after a task of that channel was published withdraws
it (`moments.task-withdrawals`)."""
CLOSE_SHARE = 0.0005
"""Profile updates that close the line (about 1% of customers in three simulated weeks):
its published tasks are withdrawn; its later records are still generated (late billing)."""
LATER_OPT_OUTS = (("sms", 0.45), ("outbound_call", 0.35), ("app_push", 0.15), ("manager", 0.05))
"""The channel a later opt-out names."""
USAGE_KINDS = (
    ("voice", 0.40),
    ("data", 0.35),
    ("sms", 0.17),
    ("bill_query", 0.04),
    ("service_order", 0.02),
    ("service_failure", 0.02),
)
LOW_BALANCE_YUAN = Decimal("5.00")
"""Below every low-balance threshold of the default catalog (10, 20 and 30 yuan)."""
SAFE_BALANCE_YUAN = Decimal("40.00")
"""Above every low-balance threshold: ordinary subscribers top up before going under it."""


class Plant:
    """Kinds of planted moments."""

    ROAMING = "first_international_roaming"
    LOW_BALANCE = "low_balance"
    HOTLINE = "competitor_hotline_call"
    COMPLAINT = "complaint"

    ALL = (ROAMING, LOW_BALANCE, HOTLINE, COMPLAINT)


@dataclass(frozen=True, slots=True)
class Mix:
    """Share of each event type among the events after the profiles (sums to 1)."""

    usage: float = 0.82
    topup: float = 0.12
    roaming: float = 0.02
    complaint: float = 0.01
    profile: float = 0.03

    def weights(self) -> tuple[list[EventType], list[float]]:
        types = [EventType.USAGE, EventType.TOPUP, EventType.ROAMING, EventType.COMPLAINT]
        types.append(EventType.PROFILE)
        return types, [self.usage, self.topup, self.roaming, self.complaint, self.profile]


@dataclass(slots=True)
class Profile:
    """One simulated subscriber: what CRM knows, and what the generator keeps track of."""

    subscriber_id: str
    region: str
    tier: str
    birthday: str
    timezone: str
    quiet_hours: list[str]
    joined_on: dt.date
    imei: str
    balance: Decimal
    contract_end: dt.date | None = None
    opt_out: str | None = None
    opted_out: list[str] = field(default_factory=list)
    """Channels opted out of after the first profile (`OPT_OUT_LATER_SHARE`)."""
    status: str = "active"
    """`active` or `suspended`: the status a closed line would have had (`closed`)."""
    closed: bool = False
    """The line was closed (`CLOSE_SHARE`): its status says nothing more."""
    visited: set[str] = field(default_factory=set)
    complaints: int = 0


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One event: its type (topic), key and JSON-ready value; `planted` names the moment."""

    event_type: EventType
    key: str
    value: dict[str, Any]
    planted: str | None = None

    def to_json_line(self) -> bytes:
        """The `moments rules test` file format: the event with its `type` beside its fields."""
        return orjson.dumps({"type": self.event_type.value, **self.value})


@dataclass(slots=True)
class SimStats:
    """What a run produced, by event type and by planted moment, and what it waits for."""

    events: Counter[str] = field(default_factory=Counter)
    planted: Counter[str] = field(default_factory=Counter)
    waiting_since: float | None = None
    """`time.monotonic()` when the events in flight were sent, until the broker took them."""
    last_error: str | None = None
    """Why the broker did not take them the last time, while they are retried."""

    def waiting_for_kafka(self, now: float, after_s: float = 5.0) -> str | None:
        """What the run waits for, once the broker has not acknowledged for `after_s`."""
        if self.waiting_since is None or now - self.waiting_since < after_s:
            return None
        why = f"; retrying after {self.last_error}" if self.last_error else ""
        return f"waiting {now - self.waiting_since:.0f} s for Kafka to take the events{why}"

    def add(self, event: SimEvent) -> None:
        self.events[event.event_type.value] += 1
        if event.planted:
            self.planted[event.planted] += 1


def _choose(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return _pick(weighted, rng.random())


def _pick(weighted: tuple[tuple[str, float], ...], draw: float) -> str:
    """The value `random.choices` picks with this `random()` draw (its own arithmetic),
    so a draw taken once can pick from one list or another without moving the stream."""
    cum = list(itertools.accumulate(w for _, w in weighted))
    return weighted[bisect.bisect(cum, draw * (cum[-1] + 0.0), 0, len(cum) - 1)][0]


def _imei(rng: random.Random) -> str:
    return "35" + "".join(str(rng.randrange(10)) for _ in range(13))


def make_profiles(count: int, rng: random.Random, today: dt.date) -> list[Profile]:
    """`count` subscribers with distinct MSISDNs, birthdays, time zones and quiet hours."""
    numbers = rng.sample(range(10**8), count)
    profiles = []
    for n in numbers:
        birthday = dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(366))
        profiles.append(
            Profile(
                subscriber_id=f"1{rng.choice('3589')}{rng.randrange(10)}{n:08d}",
                region=rng.choice(REGIONS),
                tier=_choose(rng, TIERS),
                birthday=birthday.strftime("%m-%d"),
                timezone=_choose(rng, TIMEZONES),
                quiet_hours=list(rng.choice(QUIET_HOURS)),
                joined_on=today - dt.timedelta(days=rng.randrange(30, 15 * 365)),
                imei=_imei(rng),
                balance=Decimal(rng.randrange(5000, 30000)) / 100,
                contract_end=(
                    today + dt.timedelta(days=rng.randrange(730))
                    if rng.random() < CONTRACT_SHARE
                    else None
                ),
                opt_out=rng.choices([c for c, _ in OPT_OUTS], [w for _, w in OPT_OUTS])[0],
            )
        )
    return profiles


class EventGenerator:
    """An endless, seeded stream of valid events for `profiles`, one every `1/rate` s of
    event time from `start`. Each event is a planted moment with probability `plant_rate`."""

    def __init__(
        self,
        profiles: list[Profile],
        rng: random.Random,
        start: dt.datetime,
        rate: float,
        plant_rate: float = 0.01,
        mix: Mix | None = None,
        opt_out_share: float = OPT_OUT_LATER_SHARE,
        close_share: float = CLOSE_SHARE,
    ) -> None:
        if not profiles:
            raise ValueError("at least one subscriber is needed (--subscribers 1 or more)")
        if rate <= 0:
            raise ValueError("the rate must be above 0 events per second (--rate)")
        if not 0 <= plant_rate <= 1:
            raise ValueError("plant_rate is a share: between 0 and 1")
        if min(opt_out_share, close_share) < 0 or opt_out_share + close_share > 0.5:
            raise ValueError("opt_out_share and close_share are shares: 0 or more, 0.5 together")
        self.opt_out_share = opt_out_share
        self.close_share = close_share
        self.profiles = profiles
        self.rng = rng
        self.start = start
        self.step = dt.timedelta(seconds=1 / rate)
        self.plant_rate = plant_rate
        self.types, self.weights = (mix or Mix()).weights()
        self.count = 0

    def __iter__(self) -> Iterator[SimEvent]:
        for profile in self.profiles:
            yield self._profile_event(profile, self._now(), full=True)
        while True:
            profile = self.rng.choice(self.profiles)
            if self.rng.random() < self.plant_rate:
                yield self._planted(profile, self._now())
                continue
            event_type = self.rng.choices(self.types, self.weights)[0]
            yield self._ordinary(event_type, profile, self._now())

    def _now(self) -> dt.datetime:
        at = self.start + self.step * self.count
        self.count += 1
        return at

    def _event(
        self,
        event_type: EventType,
        profile: Profile,
        at: dt.datetime,
        planted: str | None = None,
        **fields: Any,
    ) -> SimEvent:
        local = at.astimezone(ZoneInfo(profile.timezone))
        value = {
            "event_id": f"sim-{event_type.value}-{self.count}-{self.rng.getrandbits(32):08x}",
            "subscriber_id": profile.subscriber_id,
            "occurred_at": local.isoformat(timespec="milliseconds"),
            "region": profile.region,
            **fields,
        }
        return SimEvent(event_type, profile.subscriber_id, value, planted)

    def _profile_event(self, profile: Profile, at: dt.datetime, full: bool) -> SimEvent:
        if full:
            extra: dict[str, Any] = {}
            if profile.contract_end is not None:
                extra["contract_end"] = profile.contract_end.isoformat()
            if profile.opt_out is not None:
                extra["opt_out"] = [profile.opt_out]
            return self._event(
                EventType.PROFILE,
                profile,
                at,
                birthday=profile.birthday,
                joined_on=profile.joined_on.isoformat(),
                tier=profile.tier,
                timezone=profile.timezone,
                quiet_hours=profile.quiet_hours,
                status=profile.status,
                **extra,
            )
        suspended, closed = profile.status == "suspended", profile.closed
        flip = REACTIVATE_SHARE if suspended else SUSPEND_SHARE
        status = self.rng.random()
        if status < flip:
            profile.status = "active" if suspended else "suspended"
            if closed:  # said no more, so that the draws go on as without the closing
                return self._event(EventType.PROFILE, profile, at, tier=profile.tier)
            return self._event(EventType.PROFILE, profile, at, status=profile.status)
        # One draw picks the tier, or the channel of an opt-out: an opt-out or a closing
        # takes the place of a tier update and the stream after it is drawn as before.
        draw = self.rng.random()
        change = status - flip
        if not closed and 0 <= change < self.opt_out_share:
            channel = _pick(LATER_OPT_OUTS, draw)
            if channel != profile.opt_out and channel not in profile.opted_out:
                profile.opted_out.append(channel)
            opt_out = sorted({*profile.opted_out, *([profile.opt_out] if profile.opt_out else [])})
            return self._event(EventType.PROFILE, profile, at, opt_out=opt_out)
        if not closed and 0 <= change - self.opt_out_share < self.close_share:
            profile.closed = True
            return self._event(EventType.PROFILE, profile, at, status="closed")
        profile.tier = _pick(TIERS, draw)
        return self._event(EventType.PROFILE, profile, at, tier=profile.tier)

    def _charge(self, profile: Profile, charge: Decimal) -> Decimal:
        profile.balance = max(Decimal("0.00"), profile.balance - charge)
        if profile.balance < SAFE_BALANCE_YUAN:
            # Ordinary subscribers top up before the balance gets low; only planted
            # events take it under the thresholds.
            profile.balance += Decimal(50)
        return profile.balance

    def _ordinary(self, event_type: EventType, profile: Profile, at: dt.datetime) -> SimEvent:
        rng = self.rng
        if event_type is EventType.USAGE:
            kind = _choose(rng, USAGE_KINDS)
            fields: dict[str, Any] = {"kind": kind, "imei": profile.imei}
            charge = Decimal(0)
            if kind == "voice":
                fields["quantity"] = rng.randrange(10, 900)
                fields["direction"] = rng.choice(("in", "out"))
                fields["counterparty"] = f"1{rng.randrange(3, 9)}{rng.randrange(10**9):09d}"
                charge = Decimal(rng.randrange(0, 60)) / 100
            elif kind == "sms":
                fields["quantity"] = 1
                fields["direction"] = rng.choice(("in", "out"))
                charge = Decimal("0.10")
            elif kind == "data":
                fields["quantity"] = rng.randrange(10_000, 50_000_000)
                charge = Decimal(rng.randrange(0, 200)) / 100
            elif kind in ("service_order", "service_failure"):
                fields["service_code"] = rng.choice(("5G-PLUS", "VIDEO-VIP", "MUSIC", "CLOUD-50G"))
            fields["charge"] = str(charge)
            fields["balance_after"] = str(self._charge(profile, charge))
            return self._event(EventType.USAGE, profile, at, **fields)
        if event_type is EventType.TOPUP:
            amount = Decimal(rng.choice((20, 30, 50, 100, 200)))
            if profile.balance + amount < SAFE_BALANCE_YUAN:  # back above every threshold
                amount = Decimal(100)
            profile.balance += amount
            return self._event(
                EventType.TOPUP,
                profile,
                at,
                amount=str(amount),
                balance_after=str(profile.balance),
                channel=rng.choice(TOPUP_CHANNELS),
            )
        if event_type is EventType.ROAMING:
            if profile.visited and rng.random() < 0.8:  # mostly places seen before
                country = rng.choice(sorted(profile.visited))
                return self._roaming(profile, at, country, planted=None)
            return self._event(
                EventType.ROAMING, profile, at, country="CN", roaming_type="domestic"
            )
        if event_type is EventType.COMPLAINT:
            # An update of an existing ticket: the opening ones are planted.
            return self._complaint(profile, at, status="updated", planted=None)
        return self._profile_event(profile, at, full=False)

    def _roaming(
        self, profile: Profile, at: dt.datetime, country: str, planted: str | None
    ) -> SimEvent:
        profile.visited.add(country)
        return self._event(
            EventType.ROAMING,
            profile,
            at,
            planted,
            country=country,
            roaming_type="international",
            operator=f"{country}-MOBILE",
            timezone=COUNTRY_ZONES[country],
        )

    def _complaint(
        self, profile: Profile, at: dt.datetime, status: str, planted: str | None
    ) -> SimEvent:
        if status == "opened":
            profile.complaints += 1
        return self._event(
            EventType.COMPLAINT,
            profile,
            at,
            planted,
            complaint_id=f"c-{profile.subscriber_id}-{max(1, profile.complaints)}",
            category=self.rng.choice(("network", "billing", "service", "product", "other")),
            severity=self.rng.choice((1, 2, 2, 3, 3)),
            status=status,
        )

    def _planted(self, profile: Profile, at: dt.datetime) -> SimEvent:
        kind = self.rng.choice(Plant.ALL)
        new = [c for c in COUNTRIES if c not in profile.visited]
        if kind == Plant.ROAMING and new:
            return self._roaming(profile, at, self.rng.choice(new), planted=Plant.ROAMING)
        if kind == Plant.LOW_BALANCE:
            profile.balance = Decimal(self.rng.randrange(0, int(LOW_BALANCE_YUAN * 100))) / 100
            return self._event(
                EventType.USAGE,
                profile,
                at,
                Plant.LOW_BALANCE,
                kind="data",
                quantity=self.rng.randrange(1_000_000, 20_000_000),
                charge="1.00",
                balance_after=str(profile.balance),
                imei=profile.imei,
            )
        if kind == Plant.HOTLINE:
            return self._event(
                EventType.USAGE,
                profile,
                at,
                Plant.HOTLINE,
                kind="voice",
                quantity=self.rng.randrange(60, 600),
                direction="out",
                counterparty=self.rng.choice(COMPETITOR_HOTLINES),
                charge="0.00",
                imei=profile.imei,
            )
        return self._complaint(profile, at, status="opened", planted=Plant.COMPLAINT)


def validate(event: SimEvent) -> None:
    """Raise pydantic's ValidationError when the event does not fit the contract's model
    (read from its JSON, as the worker reads it)."""
    EVENT_MODELS[event.event_type].model_validate_json(orjson.dumps(event.value))


def simulate(
    subscribers: int,
    rate: float,
    seed: int | None = None,
    plant_rate: float = 0.01,
    start: dt.datetime | None = None,
    mix: Mix | None = None,
    opt_out_share: float = OPT_OUT_LATER_SHARE,
    close_share: float = CLOSE_SHARE,
) -> EventGenerator:
    """The event stream for a run: profiles, then the mix, dated from `start` (now); of
    the profile updates, `opt_out_share` opt out of one more channel and `close_share`
    close the line."""
    rng = random.Random(seed)  # noqa: S311 - simulation data, not cryptography
    start = start or dt.datetime.now(dt.UTC)
    profiles = make_profiles(subscribers, rng, start.date())
    return EventGenerator(profiles, rng, start, rate, plant_rate, mix, opt_out_share, close_share)


def limit(events: EventGenerator, rate: float, duration: float | None) -> int | None:
    """How many events a run of `duration` seconds at `rate` makes after the profiles."""
    if duration is None:
        return None
    return len(events.profiles) + max(1, round(rate * duration))


@contextlib.contextmanager
def open_output(path: Path) -> Iterator[IO[bytes]]:
    """The file to write to; gzip-compressed when the name ends with .gz, its header
    without the time or the file's name (as `gzip -n`): the same events are the same
    bytes on any day, whatever the file is named."""
    with path.open("wb") as raw:
        if not gzipped(path):
            yield raw
            return
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
            yield cast(IO[bytes], packed)


PROGRESS_EVERY = 10_000
"""Events written between two calls of `write_jsonl`'s `progress`."""


def write_jsonl(
    path: Path,
    events: Iterable[SimEvent],
    count: int,
    progress: Callable[[int], None] | None = None,
) -> SimStats:
    """Write `count` events as JSON lines (the `moments rules test` format);
    `progress(written)` is told every `PROGRESS_EVERY` events and at the end."""
    stats = SimStats()
    written = 0
    with open_output(path) as out:
        for _, event in zip(range(count), events, strict=False):
            out.write(event.to_json_line() + b"\n")
            stats.add(event)
            written += 1
            if progress is not None and written % PROGRESS_EVERY == 0:
                progress(written)
    if progress is not None:
        progress(written)
    return stats


SEND_BATCH = 1000
"""Events sent before waiting for the broker's acknowledgement of them all."""
STOP_S = 5.0
"""Longest the producer's close may take: past it, what it still holds is dropped."""


async def produce_stream(
    settings: Settings,
    events: Iterator[SimEvent],
    rate: float,
    count: int | None,
    progress: Callable[[SimStats], None] | None = None,
    stats: SimStats | None = None,
) -> SimStats:
    """Produce events keyed by subscriber to the input topics, paced to `rate` per second;
    `count` None runs until cancelled. `progress(stats)` is called about 10 times a second
    while events go out; `stats`, when given, is the one filled in (for a display of its
    own, which also shows `stats.waiting_for_kafka`).

    Events the broker does not take (an outage: requests time out) are sent again with
    back-off, as the workers retry (`sinks.retry.with_retry`, which logs each retry), until
    it does; the ones held meanwhile then go out at once, so event time catches up."""
    from aiokafka import AIOKafkaProducer

    from moments.connections import kafka_client_kwargs
    from moments.producer import stop_within
    from sinks.metrics import Metrics

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        linger_ms=5,
        **kafka_client_kwargs(settings),  # TLS / SASL as the workers connect
    )
    await producer.start()
    stats = stats if stats is not None else SimStats()
    delivery = _Delivery(producer, settings, stats, Metrics())
    started = time.monotonic()
    shown = 0.0
    try:
        for n, event in enumerate(events):
            if count is not None and n >= count:
                break
            ahead = n / rate - (time.monotonic() - started)
            if ahead > 0:
                await delivery.flush()
                await asyncio.sleep(ahead)
            delivery.batch.append(event)
            stats.add(event)
            if len(delivery.batch) >= SEND_BATCH:
                await delivery.flush()
            if progress is not None and time.monotonic() - shown >= 0.1:
                progress(stats)
                shown = time.monotonic()
        await delivery.flush()
    finally:
        # Bounded: stopped during an outage (Ctrl-C), it waited out the request timeout
        # for batches that would be lost anyway.
        await stop_within(producer, STOP_S)
    if progress is not None:
        progress(stats)
    return stats


class _Delivery:
    """Events to send, sent as a batch; what the broker did not take is sent again."""

    def __init__(
        self, producer: AIOKafkaProducer, settings: Settings, stats: SimStats, metrics: Metrics
    ) -> None:
        self.producer = producer
        self.settings = settings
        self.stats = stats
        self.metrics = metrics
        self.batch: list[SimEvent] = []

    async def flush(self) -> None:
        """Send the batch and wait until the broker has taken all of it, retrying."""
        from sinks.metrics import Dependency
        from sinks.retry import with_retry

        if not self.batch:
            return
        self.stats.waiting_since = time.monotonic()
        try:
            await with_retry(self._attempt, Dependency.KAFKA, self.metrics, "producing events")
        finally:
            self.stats.waiting_since = None
            self.stats.last_error = None

    async def _attempt(self) -> None:
        """One try: the events the broker does not take stay in the batch, and the first
        error is raised (for `with_retry` to back off and call again)."""
        futures = []
        error: BaseException | None = None
        for event in self.batch:
            try:  # the producer's buffer full, or no metadata: it raises after its timeout
                futures.append(await self._send(event))
            except Exception as exc:  # with_retry decides which ones are retried
                error = exc
                break
        # Within the delivery deadline (those not acknowledged then stay in the batch): an
        # idempotent producer retries a batch to a topic deleted under it without end.
        topics = {self.settings.topic(e.event_type.value) for e in self.batch[: len(futures)]}
        results = await acknowledged_each(self.producer, futures, topics)
        failed = [n for n, result in enumerate(results) if isinstance(result, BaseException)]
        self.batch = [self.batch[n] for n in failed] + self.batch[len(futures) :]
        if error is None and failed:
            error = cast(BaseException, results[failed[0]])
        if error is not None:
            self.stats.last_error = f"{type(error).__name__}: {error}"
            raise error

    async def _send(self, event: SimEvent) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.producer.send(
            self.settings.topic(event.event_type.value),
            value=orjson.dumps(event.value),
            key=event.key.encode(),
        )
        return future
