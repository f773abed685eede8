"""Every command has --help with examples, the README's command list names real ones, and
`--version` and `moments_build_info` say what runs."""

from __future__ import annotations

import argparse
import platform
import re
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from ruamel.yaml import YAML

from moments.buildinfo import build_labels
from moments.cli import build_parser, main
from sinks.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(words after `moments`, parser) for every command that runs something."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from commands(child, (*path, name))


def test_every_command_has_help_with_examples_of_itself() -> None:
    found = dict(commands(build_parser()))
    assert ("events", "check") in found
    for path, parser in found.items():
        epilog = parser.epilog or ""
        assert epilog.startswith("examples:"), path
        assert f"moments {' '.join(path)}" in epilog, path
        assert parser.description, path


def test_every_option_and_argument_says_what_it_is() -> None:
    """`moments simulate --help` listed `--subscribers N` with no word (of the subscribers
    the stream holds, or the producers?), and `rules validate` its `PATH` bare (journey
    review)."""
    bare = [
        (path, action.option_strings or action.dest)
        for path, parser in commands(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert bare == []


def test_the_readme_lists_every_command_and_no_other() -> None:
    found = {path for path, _ in commands(build_parser())}
    groups = {path[0] for path in found if len(path) > 1}
    block = (ROOT / "README.md").read_text().split("## Commands", 1)[1].split("```")[1]
    listed = set()
    for line in block.splitlines():
        words = line.split()
        if words[:1] == ["moments"]:
            listed.add(tuple(words[1:3]) if words[1] in groups else (words[1],))
    assert listed <= found, listed - found
    assert found <= listed, f"commands missing from the README: {found - listed}"


def test_version_names_this_package_and_what_it_runs_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"moments {version('moments')} (Python {platform.python_version()}; ")
    assert f"faust-streaming {version('faust-streaming')}" in out


def test_the_build_info_metric_carries_the_versions() -> None:
    metrics = Metrics()
    metrics.build_info.labels(**build_labels()).set(1)
    text = generate_latest(metrics.registry).decode()
    expected = f'moments_build_info{{aiokafka="{version("aiokafka")}",'
    assert expected in text
    assert f'version="{version("moments")}"}} 1.0' in text


def test_no_example_lost_its_line_break() -> None:
    """An example continued on the next line needs `\\\\` in the Python string: a single
    `\\` joins the two lines, and the help showed one line with a gap of spaces in it."""
    for path, parser in commands(build_parser()):
        for line in (parser.epilog or "").splitlines():
            command = line.split("#", 1)[0]
            assert not re.search(r"\S {3,}-", command), (path, line)


def _alert_descriptions() -> dict[str, str]:
    """alert name -> its description, each `{{ $labels.x }}` written `<x>`."""
    rules = YAML(typ="safe").load(ROOT / "deploy/prometheus/alerts.yml")["groups"]
    return {
        f"alert {rule['alert']}": re.sub(
            r"\{\{\s*\$labels\.(\w+)\s*\}\}", r"<\1>", rule["annotations"]["description"]
        )
        for group in rules
        for rule in group["rules"]
    }


def _deployment_examples() -> Iterator[tuple[str, str]]:
    """(where, line) of every `docker compose` or `kubectl` command in a command's help,
    in the README and docs, and in the alerts' descriptions."""
    texts = {" ".join(path): parser.epilog or "" for path, parser in commands(build_parser())}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        texts[page.name] = page.read_text()
    texts |= _alert_descriptions()
    for where, text in texts.items():
        for match in re.finditer(r"(?:docker compose|kubectl) [^`\n|;)]*", text):
            yield where, match.group(0)


def test_deployment_examples_name_a_compose_service_and_the_namespace() -> None:
    """Copied from a help text into a shell, `docker compose exec worker` failed (the
    services are detector-1 and detector-2) and `kubectl exec moments-worker-0` looked in
    the default namespace (the manifests use `moments`). The alerts' descriptions, what
    on-call reads first, are held to the same: MomentsWorkerRestarting said `kubectl logs
    --previous`, which names no pod and looks in the default namespace. They name the
    namespace their series came from (`-n {{ $labels.namespace }}`), not the manifests':
    the alerts fire for an install in any namespace."""
    services = set(YAML(typ="safe").load(ROOT / "docker-compose.yml")["services"])
    namespace = YAML(typ="safe").load(ROOT / "deploy/k8s/namespace.yaml")["metadata"]["name"]
    checked = 0
    for where, line in _deployment_examples():
        words = line.split()
        if words[:3] == ["docker", "compose", "exec"]:
            checked += 1
            assert words[3] in services, (where, line)
        if words[0] == "kubectl" and {"exec", "logs", "describe", "cp", "run"} & set(words[1:4]):
            checked += 1
            wanted = "-n <namespace>" if where.startswith("alert ") else f"-n {namespace}"
            assert wanted in line, (where, line)
            for verb in [i for i, w in enumerate(words[:4]) if w in {"logs", "describe", "exec"}]:
                named = words[verb + 2 if words[verb] == "describe" else verb + 1 :][:1] or ["-"]
                assert not named[0].startswith("-"), (where, "names no pod", line)
    assert checked > 5


def _example_commands() -> Iterator[tuple[tuple[str, ...], str]]:
    """(command, example) for each `moments ...` example of each command's help, its
    continuation lines joined, from `moments` to a comment, pipe or redirection."""
    top = build_parser()
    (groups,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    command = re.compile(rf"(?<![\w-])moments (?=(?:{'|'.join(groups.choices)})\b)")
    for path, parser in commands(top):
        text = re.sub(r"\\\n\s*", " ", parser.epilog or "")
        for line in text.splitlines():
            if (at := command.search(line)) is None:
                continue
            yield path, re.split(r"\s+#|\s[|<>]\s|\s>", line[at.start() :])[0]


def test_every_example_in_a_help_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    """`moments tasks ack --help` showed `moments tasks ack 3f2a9c... --status ...`, which
    the command refuses ("not a task id"): an example is copied as it is, so each parses."""
    import shlex

    parser = build_parser()
    seen, refused = 0, []
    for path, example in _example_commands():
        seen += 1
        try:
            parser.parse_args(shlex.split(example)[1:])
        except SystemExit as exited:
            if exited.code:
                refused.append((path, example, capsys.readouterr().err.splitlines()[-1]))
    assert refused == []
    assert seen > 60  # the test reads the examples


def test_every_kcat_example_names_its_broker() -> None:
    """kcat has no default broker ("-b <brokers> is required" without a config file):
    `moments state decode --help` left `-b` out, the other examples give it."""
    texts = [parser.epilog or "" for _, parser in commands(build_parser())]
    texts += [p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]]
    found = [m.group(0) for t in texts for m in re.finditer(r"\bkcat -[^`\n|]*", t)]
    assert len(found) >= 4
    for command in found:
        assert " -b " in command, command


DOC_COMMAND = re.compile(r"(?<![\w./-])(?<!-n )moments ([a-z][\w-]*)(?: ([a-z][\w-]*))?")
"""A `moments` command as the docs write it (not `kubectl -n moments ...`, nor a path)."""
SHELL_BLOCKS = {"", "sh", "bash", "console", "shell"}
COMMAND_END = re.compile(r"\s#|\s[|<>]|;|&&|\s--(?:\s|$)")
"""Where a shell line's command ends: a comment, a pipe, a redirection, the next command,
or `--` (what follows goes to another program: `moments worker -- FAUST-OPTIONS`)."""


def _doc_commands() -> Iterator[tuple[str, tuple[str, ...], str, bool]]:
    """(where, command path, the command as written, whether it is a shell block's line)
    for each `moments` command in the README's and docs' shell blocks and inline code, and
    in the alerts' descriptions; `$(...)` in a block is given a date, as `date` prints."""
    parsers = dict(commands(build_parser()))
    texts = {
        p.name: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    }
    texts |= _alert_descriptions()
    for where, text in texts.items():
        prose, fence, spans = [], None, []
        for line in re.sub(r"\\\n", " ", text).splitlines():
            if line.lstrip().startswith("```"):
                fence = line.strip()[3:] if fence is None else None
            elif fence in SHELL_BLOCKS:
                spans.append((re.sub(r"\$\([^)]*\)", "2027-01-15", line), True))
            elif fence is None:
                prose.append(line)
        spans += [(s.replace("\n", " "), False) for s in re.findall(r"`([^`]+)`", "\n".join(prose))]
        for span, block in spans:
            for match in DOC_COMMAND.finditer(span):
                path = match.groups() if match.groups() in parsers else (match.group(1),)
                if path in parsers:
                    command = COMMAND_END.split(span[match.start() :])[0]
                    following = DOC_COMMAND.search(command, 1)
                    yield where, path, command[: following.start() if following else None], block


def test_the_docs_commands_take_the_options_they_show(capsys: pytest.CaptureFixture[str]) -> None:
    """A runbook step is copied as written: every `--option` a command of the docs (a
    shell block, inline code, an alert's description) shows is one of that command's,
    and each whole line of a shell block parses (bar a synopsis: `[--json]`, `FILE...`).
    Nothing held them: the help's own examples were parsed, the docs' only named a
    command."""
    import shlex

    parsers = dict(commands(build_parser()))
    parser = build_parser()
    unknown, refused, seen = [], [], 0
    for where, path, command, block in _doc_commands():
        known = set(parsers[path]._option_string_actions)
        for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", command):
            seen += 1
            if option not in known:
                unknown.append(f"{where}: `{command.strip()}`: {option}")
        synopsis = re.search(r"\[|\.\.\.|\b[A-Z][A-Z_]{2,}\b", command)
        if block and not synopsis:
            try:
                parser.parse_args(shlex.split(command)[1:])
            except SystemExit as exited:
                if exited.code:
                    refused.append((where, command, capsys.readouterr().err.splitlines()[-1]))
    assert unknown == []
    assert refused == []
    assert seen > 300  # the test reads the docs' commands


COMMAND_SPAN = re.compile(r"`moments ([a-z][\w-]*)(?: ([a-z][\w-]*))?")
QUOTES_WRONG_ONES = {"src/moments/cliparts.py"}
"""Where commands that are none are quoted on purpose (what a typo is told)."""


def test_the_docs_and_the_code_name_commands_that_exist() -> None:
    """A docstring sent readers to `moments deadletters show`, which is no command (it
    is `moments deadletter show`): every `moments ...` in backticks in src/, docs/ and
    the README names a command, and a subcommand of a group."""
    found = {path for path, _ in commands(build_parser())}
    top = {path[0] for path in found}
    subs: dict[str, set[str]] = {}
    for path in found:
        if len(path) > 1:
            subs.setdefault(path[0], set()).add(path[1])
    pages = [*sorted((ROOT / "src").rglob("*.py")), *sorted((ROOT / "docs").glob("*.md"))]
    wrong = []
    for page in [*pages, ROOT / "README.md"]:
        if str(page.relative_to(ROOT)) in QUOTES_WRONG_ONES:
            continue
        for match in COMMAND_SPAN.finditer(page.read_text(encoding="utf-8")):
            name, sub = match.groups()
            if name not in top or (name in subs and sub is not None and sub not in subs[name]):
                wrong.append(f"{page.relative_to(ROOT)}: {match.group(0)}")
    assert wrong == []


def test_no_help_example_gives_a_date_to_a_history_simulated_from_now() -> None:
    """A new user's first hour (review): `moments backtest --help` ended with `--events
    weeks.jsonl.gz --live-from 2026-12-20   # a cut-over, 14 days' warm-up`, the README's
    three weeks dated from the day they are simulated: 12 days of warm-up on the 8th, and
    a date before the history from the 21st on. A history simulated with no `--start` is
    given dates as the README gives them (`$(date ...)`), or not at all."""
    texts = [parser.epilog or "" for _, parser in commands(build_parser())]
    texts += [p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]]
    from_now = {
        written.group(1)
        for text in texts
        for line in re.sub(r"\\\n\s*", " ", text).splitlines()
        if "moments simulate" in line and "--start" not in line
        for written in re.finditer(r"--to-file (\S+)", line)
    }
    assert "weeks.jsonl.gz" in from_now  # the test reads the examples
    dated = [
        (path, example)
        for path, example in _example_commands()
        if set(_events_read(example)) & from_now and re.search(r"\b\d{4}-\d{2}-\d{2}\b", example)
    ]
    assert dated == []


def _events_read(example: str) -> list[str]:
    """The files an example's `--events` reads (up to its next option)."""
    words = example.split()
    if "--events" not in words:
        return []
    after = words[words.index("--events") + 1 :]
    return after[: next((i for i, w in enumerate(after) if w.startswith("-")), len(after))]
