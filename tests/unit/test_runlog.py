"""`moments run` follows its worker's log for what became of a rules reload: refused with
its `file:line:column` problems, or reloaded with what changed. Before, those records
went only to the log file, and the terminal said nothing of a refused file."""

from __future__ import annotations

import json
from pathlib import Path

from moments.runlog import LogRecord, ReloadFollower, is_reload, shown

REFUSED = (
    "[2026-12-06 20:54:01,687] [19560] [ERROR] moments.reload: rules reload refused (what is"
    " in force stays: the rules from /r, loaded at 2026-12-06T20:53:18Z; 6 rule(s)):\n"
    "/r/anomaly.yaml:11:18: override of unknown param 'threshold'; declare it under params:"
    " (known: treshold)\n"
    "/r/anomaly.yaml:7:39: unknown param '$threshold'; declare it under params: (known:"
    " treshold) \n"
)
CHANGED = (
    "[2026-12-06 20:54:17,768] [19560] [INFO] moments.runtime: rules change: changed"
    " low_balance (version 1 -> 2) \n"
)
RELOADED = (
    "[2026-12-06 20:54:17,769] [19560] [INFO] moments.reload: rules reloaded from /r: 6 rule(s) \n"
)
OTHER = (
    "[2026-12-06 20:53:26,625] [19560] [INFO] moments.runtime: window sweep of partition(s)"
    " 0,1,3: 4 record(s) in 0.0 s, 0 task(s) \n"
    "[2026-12-06 20:53:21,648] [19560] [INFO] moments.runtime: runtime ready: 6 rule(s), "
    "tasks to moments.tasks \n"
    "┌table of faust──┐\n"
)


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as log:
        log.write(text)


class TestReloadFollower:
    def test_a_refused_file_is_given_with_every_problem_line(self, tmp_path: Path) -> None:
        log = tmp_path / "worker.log"
        log.write_text(OTHER + REFUSED)
        follower = ReloadFollower(log)
        first = follower.poll()  # the record may go on: given at the next look
        records = first + follower.poll()
        assert [r.level for r in records] == ["ERROR"]
        text = shown(records[0])
        assert text.startswith("worker ERROR: rules reload refused (what is in force stays")
        assert "/r/anomaly.yaml:11:18: override of unknown param 'threshold'" in text
        assert text.endswith("(known: treshold)")  # the format's trailing space gone

    def test_a_record_ends_where_the_next_begins(self, tmp_path: Path) -> None:
        log = tmp_path / "worker.log"
        log.write_text(REFUSED + OTHER + CHANGED + RELOADED)
        follower = ReloadFollower(log)
        records = follower.poll() + follower.poll()
        assert [r.message.split(":")[0] for r in records] == [
            "rules reload refused (what is in force stays",
            "rules change",
            "rules reloaded from /r",
        ]
        assert "window sweep" not in "".join(r.message for r in records)
        assert "table of faust" not in records[0].message  # not a reload record's line

    def test_only_what_was_added_since_the_last_look(self, tmp_path: Path) -> None:
        log = tmp_path / "worker.log"
        log.write_text(REFUSED)
        follower = ReloadFollower(log)
        assert len(follower.poll() + follower.poll()) == 1
        assert follower.poll() == []
        _append(log, CHANGED[:40])  # a line half written: nothing yet
        assert follower.poll() == []
        _append(log, CHANGED[40:] + RELOADED)
        later = follower.poll() + follower.poll()
        assert [r.logger for r in later] == ["moments.runtime", "moments.reload"]
        assert later[0].message == "rules change: changed low_balance (version 1 -> 2) "

    def test_the_json_log_is_read_too(self, tmp_path: Path) -> None:
        log = tmp_path / "worker.log"
        lines = [
            {
                "time": "t",
                "level": "ERROR",
                "logger": "moments.reload",
                "process": 1,
                "message": "rules reload refused (...):\n/r/a.yaml:3:5: problem",
            },
            {
                "time": "t",
                "level": "INFO",
                "logger": "moments.app",
                "process": 1,
                "message": "state table holds 0 record(s)",
            },
        ]
        log.write_text("".join(json.dumps(line) + "\n" for line in lines) + "{not json\n")
        records = ReloadFollower(log).poll()
        assert [shown(r) for r in records] == [
            "worker ERROR: rules reload refused (...):\n/r/a.yaml:3:5: problem"
        ]

    def test_no_log_yet_is_nothing_to_show(self, tmp_path: Path) -> None:
        assert ReloadFollower(tmp_path / "none.log").poll() == []


def test_which_records_are_about_a_reload() -> None:
    assert is_reload(LogRecord("INFO", "moments.reload", "dispatch policy reloaded from p"))
    assert is_reload(
        LogRecord("WARNING", "moments.runtime", "rule(s) a changed but kept their version")
    )
    assert not is_reload(LogRecord("INFO", "moments.runtime", "runtime ready: 6 rule(s)"))
    assert not is_reload(LogRecord("INFO", "moments.app", "rules change: sounds alike"))
