"""`SubscriberState.shadowed`: what a rule in `mode: shadow` last judged, read when the
rule, gone live, judges the moment first (moments.sweep)."""

from __future__ import annotations

from moments.state import SubscriberState


class TestShadowedOccasions:
    """What a rule in `mode: shadow` last judged is kept per kind of occurrence, so a
    trial of several occasions keeps each; a note kept per rule tag (records written
    before) is still read and removed by a live judgement of it."""

    def test_each_kind_is_kept_and_a_live_judgement_removes_its_own(self) -> None:
        state = SubscriberState()
        state.note_judged("ab12cd", "contract_expiry:2027-01-15", shadow=True)
        state.note_judged("ab12cd", "holiday:new_year:2027", shadow=True)
        assert state.shadow_judged("ab12cd", "contract_expiry:2027-01-15")
        assert state.shadow_judged("ab12cd", "holiday:new_year:2027")
        state.note_judged("ab12cd", "holiday:new_year:2027", shadow=False)
        assert not state.shadow_judged("ab12cd", "holiday:new_year:2027")
        assert state.shadow_judged("ab12cd", "contract_expiry:2027-01-15")

    def test_a_note_written_per_rule_tag_is_read(self) -> None:
        state = SubscriberState(shadowed={"ab12cd": "silent:1764547200"})
        assert state.shadow_judged("ab12cd", "silent:1764547200")
        assert not state.shadow_judged("ab12cd", "birthday:2026")
        state.note_judged("ab12cd", "silent:1764547200", shadow=False)
        assert state.shadowed == {}
