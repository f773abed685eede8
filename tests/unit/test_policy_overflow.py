"""sinks.policy.DispatchPolicy.overflow_for: a rule's overflow, the policy's `"*"`, or the
default."""

from __future__ import annotations

from sinks.policy import DispatchPolicy, Overflow, OverflowPolicy


class TestOverflowFor:
    def test_a_rule_named_takes_its_own_then_the_star_then_the_default(self) -> None:
        policy = DispatchPolicy.model_validate(
            {
                "overflow": {
                    "vip": {"policy": "fallback", "channel": "sms"},
                    "*": {"policy": "drop"},
                }
            }
        )
        assert policy.overflow_for("vip").channel == "sms"
        assert policy.overflow_for("other").policy is OverflowPolicy.DROP
        assert DispatchPolicy().overflow_for("any") == Overflow()

    def test_the_default_is_one_object_not_a_model_made_per_call(self) -> None:
        """Dispatch asks for a task's overflow at every task it reads: a policy naming
        none built a model each time."""
        policy = DispatchPolicy()
        first = policy.overflow_for("a")
        assert policy.overflow_for("b") is first
        assert first == Overflow()
        assert first.policy is OverflowPolicy.DEFER
        assert first.channel is None
