"""Whether the topics that must be compacted are, beyond their partition counts
(`moments.topiclayout`): the state changelog and the profile input topic
(`cleanup.policy=compact`), as the broker reports it (DescribeConfigs). What `moments
check` says and a worker's start refuses (the changelog) or warns of (the profile topic).

A changelog deleted under running workers is made again by the next write on a broker
that creates topics on use (Tansu; Apache Kafka with `auto.create.topics.enable=true`),
with the broker's own partition count and no `cleanup.policy=compact`: the broker's
retention then deletes state records (Kafka's default `retention.ms`: 7 days), and a
worker restoring a partition from it knows none of the subscribers whose records went.
Nothing said so. The profile topic is compacted in the contract (a subscriber's latest
record kept however old: its whole profile where producers send it whole; a field only an
earlier partial update carried is gone from it either way): made otherwise, a replay of
the input rebuilds no profile update older than the retention; the workers running lose
nothing, so that is a warning.
Apache Kafka reports every topic's `cleanup.policy` (its broker default where the topic
sets none); Tansu reports only what the topic was created with, so a topic it made on a
write reports nothing: that is "could not tell", neither a pass nor a refusal. Without
importing Faust (`moments check` stays quick)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moments.settings import Settings


class Shape(Enum):
    """What the broker's configs say of a topic that must be compacted: compacted, not,
    or nothing to tell by. Not `moments.check.Verdict` (ok, warn, FAIL): that is how much
    a finding matters to a start, and one shape matters differently by topic (a changelog
    not compacted stops a start and fails the check, the profile topic only warns), while
    a could-not-tell is a warning for both; each caller maps a shape to its verdict."""

    OK = "ok"
    WRONG = "wrong"
    UNKNOWN = "could not tell"


@dataclass(frozen=True)
class Compacted:
    """A topic that must be compacted, for the words of its verdicts: `what` names it
    ("the state changelog"), `loses` says what the broker deleting its records costs,
    `lost_old` what deleting those older than a retention costs, `unknown` the note
    after "the broker reports no cleanup.policy for it", `after` what to do once it is
    compacted."""

    what: str
    loses: str
    lost_old: str
    unknown: str
    after: str


CHANGELOG = Compacted(
    what="the state changelog",
    loses=(
        "a worker restoring a partition loses those subscribers' state (made again by a "
        "broker that creates topics on use, after a deletion?)"
    ),
    lost_old="a subscriber's record left unchanged that long is lost at the next restore",
    unknown=(
        "a changelog a worker made is compacted, one a broker made again on a write after "
        "a deletion is not: docs/operations.md, MomentsTopicMissing"
    ),
    after=', then check that no state was lost (docs/operations.md, "MomentsTopicMissing")',
)

PROFILE = Compacted(
    what="the profile topic",
    loses=(
        "a replay of the input from its start (a new MOMENTS_APP_ID: docs/operations.md, "
        "Scaling) rebuilds no profile update older than that, opt-outs, quiet hours, "
        "birthdays and tiers included; the workers running lose nothing (their state is in "
        "the changelog); the contract has the topic compacted, which keeps each "
        "subscriber's latest record however old: the whole profile where its producers send "
        "it whole, while a field only an earlier partial update carried is lost to a replay "
        'either way (docs/producing-events.md, "Profile updates")'
    ),
    lost_old=(
        "a replay of the input rebuilds no profile unchanged that long, opt-outs and quiet "
        "hours included"
    ),
    unknown=(
        "the contract has it compacted: create it with --config cleanup.policy=compact, "
        'docs/operations.md, "Against a managed Kafka"'
    ),
    after="",
)


@dataclass(frozen=True)
class PolicyVerdict:
    """What the broker's configs of the changelog say: `shape`, and `detail` naming the
    topic, what was reported and (when `WRONG`) the fix command."""

    shape: Shape
    detail: str


def compact_command(settings: Settings, topic: str) -> str:
    """The command that makes `topic` compacted, with this worker's bootstrap."""
    return (
        f"kafka-configs.sh --bootstrap-server {settings.kafka_bootstrap} --alter "
        f"--entity-type topics --entity-name {topic} --add-config cleanup.policy=compact"
    )


def create_compacted_command(settings: Settings, topic: str) -> str:
    """The command that creates `topic` compacted, with MOMENTS_PARTITIONS partitions."""
    return (
        f"kafka-topics.sh --bootstrap-server {settings.kafka_bootstrap} --create --topic "
        f"{topic} --partitions {settings.partitions} --replication-factor "
        f"{settings.replication_factor} --config cleanup.policy=compact"
    )


def remake_changelog_command(settings: Settings, topic: str) -> str:
    """The commands that delete the changelog `topic` and create it again with the shape
    the state needs (the workers stopped first)."""
    tool = f"kafka-topics.sh --bootstrap-server {settings.kafka_bootstrap}"
    return f"{tool} --delete --topic {topic}; {create_compacted_command(settings, topic)}"


LOGIN_NOTE = (
    " (with SASL or TLS, give the tool the worker's login: --command-config, as for "
    "kafka-topics.sh)"
)


def judge_policy(
    settings: Settings,
    topic: str,
    reported: Mapping[str, str | None],
    kind: Compacted = CHANGELOG,
) -> PolicyVerdict:
    """The shape of `topic` (`kind`: the changelog unless said) from the configs the broker
    reported for it."""
    policy = reported.get("cleanup.policy")
    if policy is None:
        return PolicyVerdict(
            Shape.UNKNOWN,
            f"could not tell whether {topic} is compacted: the broker reports no "
            "cleanup.policy for it (Tansu reports only what a topic was created with; "
            f"{kind.unknown})",
        )
    kinds = {p.strip() for p in policy.split(",")}
    retention = reported.get("retention.ms")
    fix = f"{compact_command(settings, topic)}{LOGIN_NOTE}"
    if "compact" not in kinds:
        return PolicyVerdict(
            Shape.WRONG,
            f"{kind.what} {topic} has cleanup.policy={policy}, not compact: the broker "
            f"deletes its records after retention.ms and {kind.loses}; make it compacted: "
            f"{fix}{kind.after}",
        )
    if "delete" in kinds and retention != "-1":
        return PolicyVerdict(
            Shape.WRONG,
            f"{kind.what} {topic} has cleanup.policy={policy} (retention.ms "
            f"{retention or 'not reported'}): the broker deletes records older than the "
            f"retention, and {kind.lost_old}; make it compacted only: {fix}",
        )
    return PolicyVerdict(Shape.OK, f"{topic} is compacted (cleanup.policy={policy})")


class ConfigsUnansweredError(Exception):
    """The broker did not answer DescribeConfigs, or refused it (an ACL)."""


async def topic_configs(
    settings: Settings, topics: list[str], timeout_s: float
) -> dict[str, dict[str, str | None]]:
    """The configs the broker reports for each of `topics` (name -> value); a topic it
    answers with an error is left out. `ConfigsUnansweredError` when it does not answer."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.errors import KafkaError

    from moments.connections import kafka_client_kwargs

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="moments-topic-shape",
        request_timeout_ms=int(timeout_s * 1000),
        **kafka_client_kwargs(settings),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            resources = [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
            responses = await admin.describe_configs(resources)
    except TimeoutError:
        raise ConfigsUnansweredError(f"no answer within {timeout_s:g} s") from None
    except KafkaError as exc:
        raise ConfigsUnansweredError(f"{type(exc).__name__}: {exc}") from None
    finally:
        await admin.close()
    return _reported(responses)


def _reported(responses: list[Any]) -> dict[str, dict[str, str | None]]:
    """DescribeConfigs answers as name -> {config: value}; a resource answered with an
    error code (an ACL: TOPIC_AUTHORIZATION_FAILED) left out."""
    found: dict[str, dict[str, str | None]] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                continue
            found[resource["resource_name"]] = {
                entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]
            }
    return found


@dataclass(frozen=True)
class Compaction:
    """The verdicts of the topics that must be compacted; None: the topic does not exist
    yet (a worker's start makes the changelog, compacted; the profile topic is the
    producers' to make, which the partition layout's warning of missing input topics
    says)."""

    changelog: PolicyVerdict | None
    profile: PolicyVerdict | None


async def compaction(settings: Settings, counts: Mapping[str, int], timeout_s: float) -> Compaction:
    """The changelog's and the profile topic's policies as the broker reports them, in one
    DescribeConfigs request."""
    from moments.stateview import changelog_topic

    wanted = {changelog_topic(settings): CHANGELOG, settings.topic("profile"): PROFILE}
    there = [topic for topic in wanted if topic in counts]
    verdicts: dict[str, PolicyVerdict] = {}
    if there:
        try:
            reported = await topic_configs(settings, there, timeout_s)
        except ConfigsUnansweredError as exc:
            reported = {}
            for topic in there:
                verdicts[topic] = PolicyVerdict(
                    Shape.UNKNOWN,
                    f"could not tell whether {topic} is compacted: DescribeConfigs failed ({exc})",
                )
        for topic in there:
            if topic in verdicts:
                continue
            if topic not in reported:
                verdicts[topic] = PolicyVerdict(
                    Shape.UNKNOWN,
                    f"could not tell whether {topic} is compacted: the broker refused to "
                    "describe its configs (grant the worker's principal DescribeConfigs on "
                    'it: docs/operations.md, "Against a managed Kafka")',
                )
            else:
                verdicts[topic] = judge_policy(settings, topic, reported[topic], wanted[topic])
    changelog, profile = wanted
    return Compaction(verdicts.get(changelog), verdicts.get(profile))
