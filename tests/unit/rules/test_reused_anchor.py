"""An anchor defined twice in a rules file (a rule block copied with its `&task`): YAML
lets the second replace the first for the aliases after it, so the file loads, but ruamel
printed its own warning to stderr, `ReusedAnchorWarning` with `<unicode string>` and a
library path, at every `rules validate` and every reload. It is a lint warning at the
second anchor's line now, saying which one an alias takes."""

from __future__ import annotations

import warnings

from rules.catalog import load_texts
from rules.lint import warnings as lint_warnings

RULES = """\
rules:
  - id: roaming_a
    description: a
    on: [roaming]
    condition: {first_time: country}
    task: &welcome
      family: first_time
      type: roaming_a
      channel: sms
      priority: 3
      action: roaming_welcome
      ttl: 24h
      description: "Welcome to {country}"
  - id: roaming_b
    description: b
    on: [roaming]
    condition: {first_time: country}
    task: &welcome
      family: first_time
      type: roaming_b
      channel: sms
      priority: 3
      action: roaming_welcome
      ttl: 24h
      description: "Welcome again to {country}"
"""


def test_a_reused_anchor_is_a_lint_warning_at_its_line_not_a_library_dump() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping the loader fails the test
        rules = load_texts([("rules.yaml", RULES)])
    said = [w for w in lint_warnings(rules) if "&welcome" in w]
    assert len(said) == 1
    assert said[0].startswith("rules.yaml:18:11: ")
    assert "first at line 6" in said[0]
    assert "give each anchor its own name" in said[0]


def test_no_reused_anchor_no_warning() -> None:
    second = "task: &welcome\n      family: first_time\n      type: roaming_b"
    text = RULES.replace(second, second.replace(" &welcome", ""))
    assert text != RULES
    rules = load_texts([("rules.yaml", text)])
    assert not [w for w in lint_warnings(rules) if "anchor" in w]


def test_an_anchor_named_with_a_quote_is_warned_of_too() -> None:
    """ruamel quotes the name as Python's repr does (`"welcome's"` for a name holding a
    `'`): read as `'...'` alone, such a name's warning matched nothing and was dropped,
    neither a lint warning nor ruamel's own."""
    for name in ("welcome's", "a\\b"):
        text = RULES.replace("&welcome", f"&{name}")
        with warnings.catch_warnings(record=True) as escaped:
            warnings.simplefilter("always")
            rules = load_texts([("rules.yaml", text)])
        said = [w for w in lint_warnings(rules) if "is defined again" in w]
        assert [s.split(": ")[1] for s in said] == [
            f"anchor &{name} is defined again (first at line 6)"
        ], said
        assert said[0].startswith("rules.yaml:18:11: ")
        assert not [w for w in escaped if "anchor" in str(w.message)]
