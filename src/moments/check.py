"""`moments check`: what a worker checks before it starts, run on demand with the
worker's own settings and credentials, each step's answer in a table.

For on-call: from a worker's pod or host (the image has no redis-cli or Kafka tools),
"can this worker reach Kafka and Redis with what it is given, and would it load its
rules and dispatch policy?", without starting a worker that joins the consumer group
(which makes the group rebalance).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from moments.exceptions import ConfigError
from moments.settings import Settings

if TYPE_CHECKING:
    from rules.catalog import RuleSet
    from sinks.policy import DispatchPolicy


class Verdict(Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    step: str
    verdict: Verdict
    detail: str


async def run_checks(settings: Settings, timeout_s: float = 10.0) -> list[Finding]:
    """Every step, in order; a step that needs Kafka is skipped when Kafka failed."""
    found = _settings_names()
    rules, rules_loaded = _rules(settings)
    policy, policy_loaded = _policy(settings)
    if rules_loaded is not None and policy_loaded is not None:
        policy = _policy_names(settings, policy_loaded, rules_loaded) or policy
    found += [rules, policy]
    if rules_loaded is not None and policy_loaded is not None:
        said = zones_differ(rules_loaded.gating.timezone, policy_loaded.timezone)
        if said is not None:
            found.append(Finding("time zones", Verdict.WARN, said))
    found.append(_state_format())
    found.append(_store(settings))
    found.append(data_dir_finding(settings.data_dir))
    kafka, counts = await _kafka(settings, timeout_s)
    found.append(kafka)
    if kafka.verdict is not Verdict.FAIL:
        found.extend(_topics(settings, counts))
        found.extend(await _compaction(settings, counts, timeout_s))
        found.append(await _idempotence(settings, 2 * timeout_s))
    found.append(await _redis(settings, timeout_s))
    return found


def _settings_names() -> list[Finding]:
    """A `settings` row naming each `MOMENTS_*` variable of the environment or `.env` that
    sets nothing (a misspelt name leaves the default in force), as a starting worker logs
    them; none when every one is a setting."""
    from moments.settings import dotenv_variables, unknown_variables

    unknown = unknown_variables(os.environ, dotenv_variables())
    return [Finding("settings", Verdict.WARN, "; ".join(unknown))] if unknown else []


def zones_differ(customers: str, operator: str) -> str | None:
    """Said when the rules' `gating.timezone` and the dispatch policy's `timezone` differ:
    a deliberate choice only where the operator's day is not its customers'."""
    if customers == operator:
        return None
    return (
        f"customers' days and quiet hours are judged in {customers} (the rules' "
        f"gating.timezone), capacity days and channel hours in {operator} (the dispatch "
        "policy's timezone); "
        "set both alike unless the operator's day is not its customers' (docs/gating.md)"
    )


def _rules(settings: Settings) -> tuple[Finding, RuleSet | None]:
    from rules.catalog import load_rules
    from rules.exceptions import RulesError

    where = str(settings.rules) if settings.rules else "the packaged catalog"
    try:
        rules = load_rules(settings.rules)
    except RulesError as exc:
        shown = [str(p) for p in exc.problems[:5]]
        more = len(exc.problems) - len(shown)
        # The first five in a table cell, and the command that says them all (a check
        # cut at five said only "... and N more", and nothing of where to read them).
        said = f"`moments rules validate {settings.rules or 'PATH'}`"
        tail = (
            f"... and {more} more: {said} lists them all"
            if more > 0
            else f"{said} checks the rules again as you fix them"
        )
        detail = "\n".join([*shown, tail])
        return Finding("rules", Verdict.FAIL, detail), None
    return Finding("rules", Verdict.OK, f"{len(rules)} rule(s) from {where}"), rules


def _policy(settings: Settings) -> tuple[Finding, DispatchPolicy | None]:
    from sinks.policy import load_policy

    try:
        policy = load_policy(settings.dispatch_policy)
    except ConfigError as exc:
        return Finding("dispatch policy", Verdict.FAIL, str(exc)), None
    where = settings.dispatch_policy or "the defaults (MOMENTS_DISPATCH_POLICY unset)"
    return Finding("dispatch policy", Verdict.OK, f"{where}; {policy.describe()}"), policy


def _policy_names(settings: Settings, policy: DispatchPolicy, rules: RuleSet) -> Finding | None:
    """The policy's `overflow:`/`relevance:` keys against the rules' ids (a misspelt one
    applied to no rule); a Finding only when one names none."""
    from sinks.policy import check_rule_ids

    try:
        check_rule_ids(
            settings.dispatch_policy,
            policy,
            (r.id for r in rules.rules),
            (r.task.moment_type for r in rules.rules),
        )
    except ConfigError as exc:
        return Finding("dispatch policy", Verdict.FAIL, str(exc))
    return None


def data_dir_finding(path: Path) -> Finding:
    """Whether a worker could use MOMENTS_DATA_DIR (`moments.worker.ensure_data_dir`),
    judged without creating it: the directory, or the nearest one that exists above it."""
    step = f"data directory {path}"
    probe = path
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    fix = (
        f"point MOMENTS_DATA_DIR at a directory this user (uid {os.getuid()}) may write, "
        "e.g. a volume mounted there (Kubernetes: the pod's fsGroup)"
    )
    if probe.is_symlink() and not probe.exists():  # mkdir stops there: "File exists"
        return Finding(step, Verdict.FAIL, f"{probe} is a link to nothing; {fix}")
    if not probe.is_dir():
        return Finding(step, Verdict.FAIL, f"{probe} is not a directory; {fix}")
    if not os.access(probe, os.W_OK | os.X_OK):
        return Finding(step, Verdict.FAIL, f"{probe} is not writable by this user; {fix}")
    if probe != path:
        return Finding(step, Verdict.OK, f"not there yet: made at start, in {probe.absolute()}")
    return Finding(step, Verdict.OK, "writable")


def _state_format() -> Finding:
    from moments import statezip

    try:
        statezip.check()
    except statezip.StateFormatError as exc:
        return Finding("state format", Verdict.FAIL, str(exc))
    return Finding("state format", Verdict.OK, "the record dictionary is installed")


def _store(settings: Settings) -> Finding:
    from moments.store import store_problem

    step = f"state store {settings.store}"
    problem = store_problem(settings.store)
    if problem is not None:
        return Finding(step, Verdict.FAIL, problem)
    detail = (
        "bindings installed" if settings.store == "rocksdb" else "in memory, from the changelog"
    )
    return Finding(step, Verdict.OK, detail)


async def _kafka(settings: Settings, timeout_s: float) -> tuple[Finding, dict[str, int]]:
    from moments.connections import check_kafka

    step = f"Kafka {settings.kafka_bootstrap}"
    try:
        counts = await check_kafka(settings, timeout_s, report=False)
    except ConfigError as exc:
        return Finding(step, Verdict.FAIL, str(exc)), {}
    except ConnectionError as exc:
        detail = f"{exc}; start it, or set MOMENTS_KAFKA_BOOTSTRAP to where it listens"
        return Finding(step, Verdict.FAIL, detail), {}
    counts = counts or {}
    login = f" as {settings.kafka_sasl_username}" if settings.kafka_sasl_username else ""
    detail = f"answered{login} ({settings.kafka_security_protocol}); {len(counts)} topic(s)"
    return Finding(step, Verdict.OK, detail), counts


def _topics(settings: Settings, counts: dict[str, int]) -> list[Finding]:
    from moments.topiclayout import partition_layout, topic_types

    problem, warning = partition_layout(settings, counts)
    if problem is not None:
        return [Finding("topics", Verdict.FAIL, problem)]
    if warning is not None:
        return [Finding("topics", Verdict.WARN, warning)]
    inputs = len(topic_types(settings))
    return [Finding("topics", Verdict.OK, f"{inputs} input topic(s) partitioned alike")]


async def _compaction(
    settings: Settings, counts: dict[str, int], timeout_s: float
) -> list[Finding]:
    """Whether the state changelog and the profile topic are compacted, as the broker
    reports (`topicshape`): a changelog not compacted fails (a start refuses it), the
    profile topic warns (a start goes on); could not tell warns for both."""
    from moments.stateview import changelog_topic
    from moments.topicshape import Shape, compaction, create_compacted_command

    found = await compaction(settings, counts, timeout_s)
    changelog, profile = changelog_topic(settings), settings.topic("profile")
    rows: list[Finding] = []
    if found.changelog is None:
        said = "not there yet: a worker's start makes it, compacted"
        rows.append(Finding(f"changelog {changelog}", Verdict.OK, said))
    else:
        shown = {Shape.OK: Verdict.OK, Shape.UNKNOWN: Verdict.WARN, Shape.WRONG: Verdict.FAIL}
        rows.append(
            Finding(f"changelog {changelog}", shown[found.changelog.shape], found.changelog.detail)
        )
    if found.profile is None:
        said = (
            "not there yet: create it compacted (the contract's), with MOMENTS_PARTITIONS "
            f"partitions: {create_compacted_command(settings, profile)}"
        )
        rows.append(Finding(f"profile topic {profile}", Verdict.WARN, said))
    else:
        verdict = Verdict.OK if found.profile.shape is Shape.OK else Verdict.WARN
        rows.append(Finding(f"profile topic {profile}", verdict, found.profile.detail))
    return rows


async def _idempotence(settings: Settings, within_s: float) -> Finding:
    from moments.producer import idempotence_refused, refused_message

    step = "idempotent producer"
    wanted = settings.idempotent_producer is not False
    try:
        why = await asyncio.wait_for(idempotence_refused(settings), within_s)
    except TimeoutError:
        return Finding(
            step,
            Verdict.FAIL,
            f"no producer started within {within_s:.0f} s though Kafka answered: check "
            "the brokers' advertised listeners (they must be reachable from here)",
        )
    except Exception as exc:  # aiokafka's errors: a broker that answered, then did not
        return Finding(step, Verdict.FAIL, f"could not start a producer: {exc!r}")
    if why is None:
        off = " (MOMENTS_IDEMPOTENT_PRODUCER=false keeps it off)"
        return Finding(step, Verdict.OK, "granted by the broker" + off * (not wanted))
    if settings.idempotent_producer:
        return Finding(step, Verdict.FAIL, refused_message(settings, why))
    return Finding(
        step,
        Verdict.OK,
        (
            f"refused by the broker ({why}): the worker goes without it; tasks are deduplicated "
            "by the Redis ledger either way"
        ),
    )


async def _redis(settings: Settings, timeout_s: float) -> Finding:
    from moments.connections import REDIS_TIMEOUT_S, check_redis
    from moments.redisurl import redacted_url

    step = f"Redis {redacted_url(settings.redis_url)}"
    warnings: list[str] = []
    try:
        # The worker's own bound (its client's timeout), not more: a Redis slower than that
        # passes for the check and fails the worker (re-check).
        await check_redis(settings, min(timeout_s, REDIS_TIMEOUT_S), False, warnings)
    except ConfigError as exc:
        return Finding(step, Verdict.FAIL, str(exc))
    except ConnectionError as exc:
        detail = f"{exc}; start it, or set MOMENTS_REDIS_URL to where it listens"
        return Finding(step, Verdict.FAIL, detail)
    if warnings:
        return Finding(step, Verdict.WARN, "; ".join(warnings))
    return Finding(step, Verdict.OK, "PONG with the configured credentials")
