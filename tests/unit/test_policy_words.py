"""The dispatch policy in words, as `moments check` and a reload say it: a manager who
changed a capacity saw only the channel hours, nothing of the limits they had changed
(policy walk)."""

from __future__ import annotations

from pathlib import Path

from sinks.policy import DispatchPolicy


def test_the_capacity_is_said_per_region_with_the_shared_pool_and_the_hours() -> None:
    policy = DispatchPolicy.model_validate(
        {
            "capacity": {
                "NJ": {"manager": 4, "outbound_call": 20},
                "*": {"manager": 2},
                "SZ": {"manager": 3},
            },
            "hours": {"outbound_call": "09:00-21:00"},
        }
    )
    assert policy.describe() == (
        "tasks a day: NJ manager 4, outbound_call 20; SZ manager 3; all the rest together "
        "(other regions, channels a region does not list) manager 2; no limit otherwise; "
        "the last 20% of each limit kept for priorities 1-2; channels worked outbound_call "
        "09:00-21:00 (Asia/Shanghai), any other all day"
    )


def test_the_defaults_say_there_is_no_limit() -> None:
    assert DispatchPolicy().describe() == ("no capacity limit; every channel worked all day")


def test_moments_check_and_a_reload_say_the_capacity(tmp_path: Path) -> None:
    from moments.check import _policy
    from moments.reload import PolicyReloader
    from moments.settings import Settings

    path = tmp_path / "policy.yaml"
    path.write_text("capacity: {NJ: {manager: 6}}\nreserved_share: 0\n")
    finding, policy = _policy(Settings(dispatch_policy=path))
    assert finding.detail == (
        f"{path}; tasks a day: NJ manager 6; no limit otherwise; every channel worked all day"
    )
    assert policy is not None
    said, _ = PolicyReloader.describe(policy)
    assert "tasks a day: NJ manager 6" in said
