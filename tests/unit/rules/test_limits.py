"""A hostile or runaway rules file is refused quickly, with its file, line and the fix,
before the loader recurses into it or expands its aliases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moments.cli import main
from moments.exceptions import ConfigError
from rules import yamllimits
from rules.calendar import CalendarError, load_calendar, parse_calendar
from rules.catalog import load_rules, load_texts
from rules.exceptions import RulesError
from sinks.policy import load_policy

DEEP = "rules: " + "[" * 5000 + "]" * 5000
"""The review's file: every worker watching it crashed with RecursionError."""

LAUGHS = "lol0: &l0 [a,a,a,a,a,a,a,a,a,a]\n" + "".join(
    f"lol{i}: &l{i} [{','.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 8)
)
"""The review's "billion laughs": ~400 bytes standing for 10 million values."""

RULE = """\
rules:
  - id: r
    description: d
    on: [usage]
    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a, description: d}
"""


def refused(text: str, name: str = "r.yaml") -> list[str]:
    with pytest.raises(RulesError) as err:
        load_texts([(name, text)])
    return [str(p) for p in err.value.problems]


class TestRefusedBeforeLoading:
    def test_nesting_thousands_deep_is_refused_where_it_passes_the_limit(self) -> None:
        assert refused(DEEP) == [
            "r.yaml:1:71: nested more than 64 levels deep (the default catalog nests 7); "
            "check the brackets and the indentation here"
        ]

    def test_an_alias_bomb_is_refused_where_its_aliases_pass_the_limit(self) -> None:
        """Counted, not expanded: lol4 would stand for 111,111 values."""
        assert refused(LAUGHS) == [
            "r.yaml:5:24: more than 50,000 YAML values in one file, each alias counting as "
            "the values it stands for (the default catalog holds under 1,000); split the "
            "rules into several files of a rules folder"
        ]

    def test_an_alias_of_a_long_text_counts_its_characters_where_it_is_used(self) -> None:
        """5,000 aliases of a 100,000-character value (a 120 KB file) took 2 GB and froze a
        worker's event loop for a minute while it loaded (security re-check)."""
        value = "x" * 100_000
        text = (
            RULE.replace("description: d}", f"description: &a {value}}}")
            + "x: ["
            + (", ".join(["*a"] * 30))
            + "]\n"
        )
        (problem,) = refused(text)
        assert problem.startswith("r.yaml:")
        assert problem.endswith(
            "more than 2,097,152 characters of text in one file, each alias counting as the "
            "text it stands for; write shorter values, or split the rules into several files "
            "of a rules folder"
        )

    def test_an_alias_inside_the_value_it_names_is_refused(self) -> None:
        """The loader would build a value that contains itself, and walking it recurses."""
        (found,) = refused(RULE + "series:\n  s: &s {on: [usage], when: {x: *s}}\n")
        assert found == (
            "r.yaml:7:33: YAML alias *s is inside the value it names (&s), which would never "
            "end; write the value out"
        )

    def test_an_alias_counts_its_levels_where_it_is_used(self) -> None:
        deep = "[" * 40 + "]" * 40
        (found,) = refused(f"a: &d {deep}\nb: " + "[" * 30 + "*d" + "]" * 30 + "\n")
        assert found.startswith("r.yaml:2:34: nested more than 64 levels deep once *d is expanded")

    def test_anchors_aliases_and_merges_within_the_limits_load(self) -> None:
        """Sharing a task block between rules is plain YAML, and stays allowed."""
        text = (
            "rules:\n"
            "  - id: a\n    description: d\n    on: [usage]\n"
            "    task: &t {family: anomaly, type: t, channel: sms, priority: 3, action: a, "
            "description: d}\n"
            "  - id: b\n    description: d\n    on: [usage]\n    task: *t\n"
            "  - id: c\n    description: d\n    on: [usage]\n    task: {<<: *t, priority: 1}\n"
        )
        rules = load_texts([("r.yaml", text)])
        assert [r.task.priority for r in rules.rules] == [3, 3, 1]

    def test_an_error_in_a_merged_key_is_reported_not_a_crash(self) -> None:
        """ruamel keeps no position of a key merged in with `<<:` (a KeyError before)."""
        text = (
            "rules:\n"
            "  - id: a\n    description: d\n    on: [usage]\n"
            "    task: &t {family: anomaly, type: t, channel: fax, priority: 3, action: a, "
            "description: d}\n"
            "  - id: c\n    description: d\n    on: [usage]\n    task: {<<: *t, priority: 1}\n"
        )
        found = refused(text)
        assert [f.split(": ")[1] for f in found] == ["rules.0.task.channel", "rules.1.task.channel"]
        assert found[1].startswith("r.yaml:9:5: ")  # the task that merges it

    def test_a_file_over_1_mib_is_refused_naming_the_limit(self) -> None:
        text = RULE + "#" * yamllimits.MAX_FILE_BYTES
        (found,) = refused(text)
        assert found == (
            f"r.yaml:1:1: file is {len(text):,} bytes, over the limit of 1,048,576 (1 MiB); "
            "split the rules into several files of a rules folder"
        )

    def test_a_file_over_1_mib_on_disk_is_refused_unread(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        big = tmp_path / "big.yaml"
        big.write_text(RULE + "#" * yamllimits.MAX_FILE_BYTES)

        def no_read(*_: object, **__: object) -> str:
            raise AssertionError("an oversize file was read")

        monkeypatch.setattr(Path, "open", no_read)
        monkeypatch.setattr(Path, "read_text", no_read)
        monkeypatch.setattr(Path, "read_bytes", no_read)
        with pytest.raises(RulesError) as err:
            load_rules(tmp_path)
        (problem,) = err.value.problems
        assert (problem.file, problem.line) == (str(big), 1)
        assert "over the limit of 1,048,576 (1 MiB)" in problem.message

    @pytest.mark.timeout(20)
    @pytest.mark.parametrize("kind", ["fifo", "device"])
    def test_a_path_that_is_not_a_regular_file_is_refused_unread(
        self, kind: str, tmp_path: Path
    ) -> None:
        """A FIFO blocked the reader until something wrote to it; /dev/zero, whose size
        `stat` gives as 0, was read until the memory ran out (security re-check, left then).
        Rules, calendar and dispatch policy files are all read the same way."""
        if kind == "fifo":
            path = tmp_path / "rules.yaml"
            os.mkfifo(path)
        else:
            path = Path("/dev/zero")
        with pytest.raises(RulesError) as err:
            load_rules(path)
        assert [str(p) for p in err.value.problems] == [
            f"{path}:1:1: not a regular file; name a YAML file or a folder"
        ]
        with pytest.raises(CalendarError, match="not a regular file"):
            load_calendar(path)
        with pytest.raises(ConfigError, match=f"{path}:1:1: not a regular file"):
            load_policy(path)

    def test_the_files_of_a_folder_have_a_total_beside_each_ones_limit(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Twenty files each near the limits took 114 s of CPU to validate (security
        re-check, left then): a folder holds at most FOLDER_FACTOR files' worth."""
        monkeypatch.setattr(yamllimits, "MAX_NODES", 30)
        monkeypatch.setattr(yamllimits, "FOLDER_FACTOR", 2)
        for n in range(3):  # 25 values each: within one file's 30, but not three in 60
            (tmp_path / f"{n}.yaml").write_text(RULE.replace("- id: r", f"- id: r{n}"))
        with pytest.raises(RulesError) as err:
            load_rules(tmp_path)
        (problem,) = err.value.problems
        assert problem.file == str(tmp_path / "2.yaml")
        assert problem.message == (
            "this file and the 2 before it in the folder hold more than 60 YAML values or "
            "4,194,304 characters of text together, the most a worker loads; remove the "
            "rules no longer in use"
        )
        (tmp_path / "2.yaml").unlink()
        assert [r.id for r in load_rules(tmp_path).rules] == ["r0", "r1"]

    def test_too_many_values_are_refused_at_the_first_past_the_limit(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(yamllimits, "MAX_NODES", 10)
        (found,) = refused("rules: [" + "a, " * 20 + "]\n")
        assert found == (
            "r.yaml:1:30: more than 10 YAML values in one file, each alias counting as the "
            "values it stands for (the default catalog holds under 1,000); split the rules "
            "into several files of a rules folder"
        )

    def test_the_default_catalog_is_well_within_the_limits(self) -> None:
        text = (Path(yamllimits.__file__).parent / "catalog" / "default.yaml").read_text()
        assert yamllimits.beyond_limits("default.yaml", text) is None
        assert len(text.encode()) < yamllimits.MAX_FILE_BYTES / 50

    def test_a_yaml_syntax_error_is_left_to_the_loader_and_its_position(self) -> None:
        assert refused("rules:\n  - id: [unclosed\n")[0].startswith("r.yaml:3:1: YAML syntax")

    def test_a_calendar_file_is_held_to_the_same_limits(self) -> None:
        with pytest.raises(CalendarError) as err:
            parse_calendar("op.yaml", "holidays: " + "[" * 5000 + "]" * 5000)
        assert str(err.value).startswith("op.yaml:1:74: nested more than 64 levels deep")


class TestCommand:
    @pytest.mark.parametrize(
        ("text", "expected"), [(DEEP, ":1:71: nested"), (LAUGHS, ":5:24: more than 50,000")]
    )
    def test_validate_refuses_with_the_position_not_a_traceback(
        self, text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        assert main(["rules", "validate", str(path)]) == 1
        assert capsys.readouterr().out.startswith(f"{path}{expected}")

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (
                b"rules:\n  - id: a\x01b\n",
                ":2:10: YAML: unacceptable character #x0001: special characters are not allowed",
            ),
            (b"\xff\xferules: []\n", ":1:1: byte 0xff is not UTF-8: save the file as UTF-8"),
            (b"rules: []\n# caf\xe9\n", ":2:6: byte 0xe9 is not UTF-8: save the file as UTF-8"),
        ],
    )
    def test_a_file_yaml_or_utf_8_cannot_read_is_refused_with_its_position(
        self, raw: bytes, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A control character or a byte that is not UTF-8 ended validation, and a
        worker's start, in a traceback (security re-check)."""
        path = tmp_path / "bad.yaml"
        path.write_bytes(raw)
        assert main(["rules", "validate", str(path)]) == 1
        assert capsys.readouterr().out.splitlines()[0] == f"{path}{expected}"
        calendar = tmp_path / "calendar.yaml"
        calendar.write_bytes(raw)
        with pytest.raises(RulesError, match=r"YAML|not UTF-8"):
            load_calendar(calendar)

    def test_a_worker_started_on_a_deep_file_stops_with_the_message(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Before any connection: start-up loads the rules first."""
        path = tmp_path / "deep.yaml"
        path.write_text(DEEP)
        monkeypatch.chdir(tmp_path)  # no .env of the developer's
        monkeypatch.setenv("MOMENTS_RULES", str(path))
        assert main(["worker"]) == 1
        err = capsys.readouterr().err
        assert f"moments: rules refused:\n{path}:1:71: nested more than 64 levels" in err
        assert "Traceback" not in err
