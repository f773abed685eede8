"""The contract's closed vocabularies: event types, task channels, moment families and
outcome statuses, withdrawal reasons (re-exported by `moments.models`, which uses them).

Apart from the models so that the command line's parser offers them as choices without
importing pydantic (~0.15 s of CPU at every command's start)."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema


class Vocabulary(StrEnum):
    """A closed vocabulary of the contract: a `StrEnum` that pydantic writes to JSON as
    its text (`str()`, in C) instead of through the enum's `value` property, a Python
    call at each field of each model written (~10 a task, ~390,000 in a 300,000-event
    backtest). The same bytes: a `StrEnum` member's text is its value. Validation and
    the JSON Schema stay those of an enum (its `$defs` entry, in both modes), and a
    Python-mode dump keeps the members."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema  # here: the parser imports no pydantic

        schema = handler(source)
        plain = {key: value for key, value in schema.items() if key != "ref"}

        def as_enum(made: CoreSchema, to_json: GetJsonSchemaHandler) -> JsonSchemaValue:
            # The serialization schema's would be any string: the enum's own instead.
            return to_json(plain) if to_json.mode == "serialization" else to_json(made)

        return {
            **schema,
            "serialization": core_schema.to_string_ser_schema(),
            "metadata": {"pydantic_js_functions": [as_enum]},
        }


class EventType(Vocabulary):
    """The kinds of input event, one per input topic."""

    TOPUP = "topup"
    ROAMING = "roaming"
    COMPLAINT = "complaint"
    USAGE = "usage"
    PROFILE = "profile"


class Channel(Vocabulary):
    """Where a task is executed."""

    SMS = "sms"
    OUTBOUND_CALL = "outbound_call"
    MANAGER = "manager"
    APP_PUSH = "app_push"


class Family(Vocabulary):
    """The families of moments that create tasks (do-not-disturb only gates them)."""

    FIRST_TIME = "first_time"
    ANOMALY = "anomaly"
    SPECIAL_DAY = "special_day"


class OutcomeStatus(Vocabulary):
    """What the people acting on a task report back."""

    IN_PROGRESS = "in_progress"
    DONE_NO_CHANGE = "done_no_change"
    DONE_NEW_ALERT = "done_new_alert"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    UNREACHABLE = "unreachable"
    FAILED = "failed"


class WithdrawReason(Vocabulary):
    """Why a published task was withdrawn (`TaskWithdrawal.reason`)."""

    OPT_OUT = "opt_out"
    """The customer opted out of the channel the task went out on."""
    CLOSED = "closed"
    """The line was closed."""
    FORGOTTEN = "forgotten"
    """A profile tombstone erased the subscriber."""


REACHED = (
    OutcomeStatus.DONE_NO_CHANGE,
    OutcomeStatus.DONE_NEW_ALERT,
    OutcomeStatus.ACCEPTED,
    OutcomeStatus.DECLINED,
)
"""Outcomes that say the customer was reached: an `unreachable` of the same task, read
before or after one (outcomes come out of order), makes no retry, and a retry waiting
for an earlier attempt answered so is dropped (`reached`)."""
ENDS_RETRIES = (*REACHED, OutcomeStatus.FAILED)
"""Outcomes after which a task is not sent again: `REACHED`, and `failed` (the attempt
failed for good: a number not in service, a task dropped unattempted; the contract's
"a failed task is not sent again"). As for `REACHED`, in either order: an `unreachable`
read after (or beside) a `failed` makes no retry, and a retry waiting when one comes is
dropped (`failed`)."""


class DeferralReason(Vocabulary):
    """Why a task was held back before it was published (`Deferral.reason`; their
    meanings: `moments.models.DEFERRAL_REASONS`). Every one the detector writes: each
    series of `moments_tasks_deferred_total` starts at 0, so `rate()` sees the first."""

    QUIET_HOURS = "quiet_hours"
    SUSPENDED = "suspended"
    MERGE_WINDOW = "merge_window"
    FREQUENCY_CAP = "frequency_cap"
    CONTACT_CAP = "contact_cap"
    CAPACITY = "capacity"
    CHANNEL_HOURS = "channel_hours"
    UNREACHABLE_RETRY = "unreachable_retry"
    DELIVER_AFTER = "deliver_after"


class ReturnResult(Vocabulary):
    """What the engine made of a cooldown return (`BatchResult.returns`, the `result`
    label of `moments_cooldown_returns_total`, each series from 0)."""

    GIVEN_BACK = "given_back"
    """The cooldown mark removed."""
    STALE = "stale"
    """The mark had moved on, or the subscriber has no record: nothing to give back."""
    MALFORMED = "malformed"
    """No cooldown return could be read from the record."""


class StateDamage(Vocabulary):
    """The `kind` of `moments_state_records_damaged_total` (moments.statedamage)."""

    UNREADABLE = "unreadable"
    """Bytes that hold no record (not zstd or JSON, cut short): begun afresh."""
    MALFORMED = "malformed"
    """Fields of shapes the detector never writes: those reset, the rest kept."""
