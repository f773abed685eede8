"""What one dispatch decision judges by: one dispatch policy and the helpers built from it
(time gates, contact caps, capacity fitting), with one frequency cap of the rule set's.
The sink makes one per policy (`TaskSink.use_policy`, so a reload swaps them together)
and, when the rules' frequency cap is another, per cap (`Judging.under`); each decision
takes the one in force when it begins and keeps it to its end: a reload (of the policy
or of the rules) is installed from the event loop, so it lands whenever a decision awaits
its stores, and a decision that read the sink's policy at each step judged its first
steps by one policy and the rest by another (the rules' cap, read at each call, the
same)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rules.gating import FrequencyCap
from sinks.caps import ContactCaps
from sinks.fitting import CapacityFitting, Gone
from sinks.metrics import DispatchMetrics
from sinks.policy import DispatchPolicy
from sinks.retry import Retrying
from sinks.stores import DispatchStores
from sinks.timegates import Drop, TimeGates


@dataclass(frozen=True)
class Judging:
    policy: DispatchPolicy
    timetable: str
    """`policy.timetable()`, the hours parked tasks are marked as judged by."""
    gates: TimeGates
    caps: ContactCaps
    fitting: CapacityFitting

    def under(self, frequency_cap: FrequencyCap | None) -> Judging:
        """This judging with the rule set's `frequency_cap` (itself when it has that one)."""
        caps = self.caps.under(frequency_cap)
        return self if caps is self.caps else dataclasses.replace(self, caps=caps)


def judging_by(
    policy: DispatchPolicy,
    stores: DispatchStores,
    frequency_cap: FrequencyCap | None,
    drop: Drop,
    gone: Gone,
    dm: DispatchMetrics,
    redis: Retrying,
) -> Judging:
    """The helpers of `policy` and the rule set's `frequency_cap` over the sink's stores;
    `drop` and `gone` are the sink's (a route dropped whole, a moment dropped for good)."""
    gates = TimeGates(policy, drop)
    caps = ContactCaps(stores.contacts, stores.frequency, policy, frequency_cap, redis)
    fitting = CapacityFitting(stores.slots, policy, gates.opening, gone, dm, redis)
    return Judging(policy, policy.timetable(), gates, caps, fitting)
