"""The state changelog's shape (`moments.topicshape`, `moments.topiclayout`): what
`moments check` fails and a worker's start refuses, with the command that fixes it.

A changelog deleted under running workers is made again by the next write on a broker
that creates topics on use (Tansu; Kafka with `auto.create.topics.enable=true`), with the
broker's partition count and without `cleanup.policy=compact`: its records then go at the
broker's retention, and the state with them at the next restore. Nothing said so; and a
changelog alone of another count than the input was told to "set MOMENTS_PARTITIONS" to
its count, which parts the state from the input (the next start refuses that too)."""

from __future__ import annotations

from typing import Any

import pytest

from moments.settings import Settings, load_settings
from moments.stateview import changelog_topic, returns_topic
from moments.topiclayout import partition_layout, topic_types
from moments.topicshape import PROFILE, Shape, _reported, judge_policy

TOPIC = "moments-subscribers-changelog"


@pytest.fixture
def settings() -> Settings:
    return load_settings(kafka_bootstrap="kafka-1:9092", partitions=12, replication_factor=3)


class TestTheChangelogPolicy:
    def test_compacted_is_fine(self, settings: Settings) -> None:
        verdict = judge_policy(settings, TOPIC, {"cleanup.policy": "compact"})
        assert verdict.shape is Shape.OK

    def test_delete_fails_with_the_command_that_compacts_it(self, settings: Settings) -> None:
        """Kafka's broker default, reported for a topic made on a write."""
        verdict = judge_policy(
            settings, TOPIC, {"cleanup.policy": "delete", "retention.ms": "604800000"}
        )
        assert verdict.shape is Shape.WRONG
        assert f"{TOPIC} has cleanup.policy=delete, not compact" in verdict.detail
        assert (
            "kafka-configs.sh --bootstrap-server kafka-1:9092 --alter --entity-type topics "
            f"--entity-name {TOPIC} --add-config cleanup.policy=compact" in verdict.detail
        )

    @pytest.mark.parametrize(
        ("retention", "shape"), [("604800000", Shape.WRONG), ("-1", Shape.OK), (None, Shape.WRONG)]
    )
    def test_compact_and_delete_fails_unless_kept_for_ever(
        self, settings: Settings, retention: str | None, shape: Shape
    ) -> None:
        reported = {"cleanup.policy": "compact,delete", "retention.ms": retention}
        assert judge_policy(settings, TOPIC, reported).shape is shape

    def test_nothing_reported_is_could_not_tell(self, settings: Settings) -> None:
        """Tansu reports only the configs a topic was created with."""
        verdict = judge_policy(settings, TOPIC, {})
        assert verdict.shape is Shape.UNKNOWN
        assert verdict.detail.startswith(f"could not tell whether {TOPIC} is compacted")


class Answer:
    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.resources = resources

    def to_object(self) -> dict[str, Any]:
        return {"resources": self.resources}


def test_describe_configs_answers_are_read_per_topic_and_refusals_left_out() -> None:
    entry = {"config_names": "cleanup.policy", "config_value": "compact"}
    answer = Answer(
        [
            {"error_code": 0, "resource_name": "a", "config_entries": [entry]},
            {"error_code": 0, "resource_name": "b", "config_entries": []},
            {"error_code": 29, "resource_name": "c", "config_entries": []},
        ]
    )
    assert _reported([answer]) == {"a": {"cleanup.policy": "compact"}, "b": {}}


class TestTheChangelogAloneOfAnotherCount:
    def counts(self, settings: Settings, inputs: int, changelog: int) -> dict[str, int]:
        held = dict.fromkeys([*topic_types(settings), returns_topic(settings)], inputs)
        return held | {changelog_topic(settings): changelog}

    def test_the_fix_makes_it_again_at_the_inputs_count(self, settings: Settings) -> None:
        """Made again by the broker (4, Tansu's count) under inputs of 12: setting
        MOMENTS_PARTITIONS=4 would part the state from the input."""
        problem, _ = partition_layout(settings, self.counts(settings, 12, 4))
        assert problem is not None
        assert "MOMENTS_PARTITIONS=4" not in problem
        assert f"{TOPIC} has 4 partitions, the input topics and MOMENTS_PARTITIONS 12" in problem
        tool = "kafka-topics.sh --bootstrap-server kafka-1:9092"
        assert (
            f"{tool} --delete --topic {TOPIC}; {tool} --create --topic {TOPIC} --partitions 12 "
            "--replication-factor 3 --config cleanup.policy=compact" in problem
        )
        assert "moments state seed" in problem

    def test_inputs_of_another_count_still_say_set_moments_partitions(
        self, settings: Settings
    ) -> None:
        """Inputs and changelog alike at 4 with MOMENTS_PARTITIONS 12: the setting is wrong."""
        problem, _ = partition_layout(settings, self.counts(settings, 4, 4))
        assert problem is not None
        assert "set MOMENTS_PARTITIONS=4" in problem
        assert "--delete" not in problem


class TestTheProfileTopicPolicy:
    """`telecom.profile` is compacted in the contract: a subscriber's latest record is
    kept however old. Deleted at the retention, a replay of the input (a new
    MOMENTS_APP_ID) rebuilds no profile older than that, opt-outs and quiet hours included.
    Nothing looked at it. The workers running lose nothing (their state is in the
    changelog), so it is a warning, not a refusal."""

    def test_delete_is_wrong_with_the_command_that_compacts_it(self, settings: Settings) -> None:
        verdict = judge_policy(settings, "telecom.profile", {"cleanup.policy": "delete"}, PROFILE)
        assert verdict.shape is Shape.WRONG
        assert "the profile topic telecom.profile has cleanup.policy=delete" in verdict.detail
        assert "opt-outs" in verdict.detail
        assert (
            "kafka-configs.sh --bootstrap-server kafka-1:9092 --alter --entity-type topics "
            "--entity-name telecom.profile --add-config cleanup.policy=compact" in verdict.detail
        )
        assert "state changelog" not in verdict.detail

    def test_nothing_reported_is_could_not_tell(self, settings: Settings) -> None:
        verdict = judge_policy(settings, "telecom.profile", {}, PROFILE)
        assert verdict.shape is Shape.UNKNOWN
        assert verdict.detail.startswith("could not tell whether telecom.profile is compacted")
        assert "changelog" not in verdict.detail

    def test_the_fix_says_compaction_keeps_a_subscribers_latest_record_not_every_field(
        self, settings: Settings
    ) -> None:
        """A profile update changes only the fields it carries (docs/producing-events.md,
        "Profile updates"), and compaction keeps a key's latest record alone: an opt-out
        sent in one update and a tier in a later one leave the tier alone to a replay of a
        compacted topic. The warning told compaction as what keeps the opt-outs for a
        replay; it says what it keeps, and what it does not."""
        verdict = judge_policy(settings, "telecom.profile", {"cleanup.policy": "delete"}, PROFILE)
        assert "keeps each subscriber's latest record" in verdict.detail
        assert "a field only an earlier partial update carried" in verdict.detail
