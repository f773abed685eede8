"""A page that sends the reader to a section of another by its title names one that is
there. The docs, docstrings, error messages, deploy comments and alert annotations say
`docs/gating.md, "Open complaint"`, `(consuming-tasks.md, "Reporting back")` or
`"What the goals would take" (in performance.md)`, and on the same page `see "Health
probes" above`. Some pointed at nothing: `docs/architecture.md, "Deferral"` (no such
section), `"Health probes" below` (it is 1,100 lines above), `"Fencing the state
changelog" above` in performance-log.md (a section of performance.md), `"Dispatch"` (two
of architecture.md's start so). `test_doc_links.py` checks the links, `[...](x.md#a)`.

What counts as a reference, in README.md and docs/, src/, deploy/ and tests/ (all but
this file, whose examples are made up): a page's file name (`x.md`, `docs/x.md`, in
backticks or not, maybe followed by `says` or `measured`) and then, after at most a comma,
a parenthesis or a list number (`7.,`), a quoted phrase: `"..."`, or `'...'` inside a
string that cannot hold a double quote. Further phrases joined to it by `and`, `or` or a
comma count too (`"Exactly once out" and "The deferral queue"`). So does a quoted phrase
followed by `in x.md` or `of x.md`, and on a page, one followed by `above` or `below`
(`see "State" and "Risk score" above`), which must name a section on that side of it. A
colon after the name introduces a quotation of its text (`moments.md: "capacity is
scarce"`), not a section, and is not read; nor are unquoted names (`docs/operations.md,
Scaling`). Text is read where people read it: Markdown as it is; in Python the string
constants (docstrings, messages; adjacent literals joined) and the comments; in JSON its
strings; in YAML the lines joined, comment marks dropped. Line breaks count as spaces.

What counts as a section: a heading outside code blocks, or a bold run-in title, the bold
phrase that starts a paragraph or a list item (`- **A suspended line withdraws
nothing.**`, `4. **Frequency cap, then contact cap**`): the docs use these as the
sub-sections of a heading, and a reader finds them by eye. The quoted phrase names one
when it is its title, or the start of one section's title only, up to a word's end;
letter case, backticks and a heading's number (`### 4. Open complaint`) aside. "Time
zones" names `## Time zones: gating.timezone and ...`; "Dispatch" names neither of
`## Dispatch: deferral, ...` and `### Dispatch policy`.
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = {page.name: page for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".json"}

QUOTED = r"(?:\"(?P<{0}>[^\"]{{2,120}})\"|'(?P<{0}s>[^']{{2,120}})')"
PAGE_THEN_TITLE = re.compile(
    r"(?<![\w./-])(?:[\w./-]*/)?(?P<page>[\w-]+\.md)`?\)?"  # the page, maybe `x.md` or (x.md)
    r"(?:\s+(?:says|measured))?"  # `x.md says ("...")`
    r"(?:\s*,)?(?:\s*\d+\.,)?\s*\(?\s*"  # then a comma, a list number, a parenthesis
    + QUOTED.format("title")
)
MORE_TITLES = re.compile(r"\s*(?:,\s*)?(?:and|or|,)\s+" + QUOTED.format("title"))
TITLE_THEN_PAGE = re.compile(
    r"\"(?P<title>[^\"]{2,120})\"\s*\(?(?:in|of)\s+[`\[]?(?:[\w./-]*/)?(?P<page>[\w-]+\.md)\b"
)
SAME_PAGE = re.compile(  # see "State" and "Risk score" above
    r"(?P<titles>\"[^\"]{2,120}\"(?:\s*(?:,|,?\s*and|,?\s*or)\s+\"[^\"]{2,120}\")*)"
    r"[)`,]?\s+(?P<where>above|below)\b"
)
HEADING = re.compile(r"#{1,6}\s+(?:\d+\.\s+)?(?P<title>.+)")
RUN_IN = re.compile(r"\s*(?:[-*+]\s+|\d+\.\s+)?\*\*(?P<title>[^*]+)\*\*")


def sources() -> list[Path]:
    """The files whose text may send a reader to a section: the pages, the docs' other
    files, `src/`, `deploy/` and the tests (all but this one, whose examples are made up)."""
    found = [ROOT / "README.md"]
    for folder in ("docs", "src", "deploy", "tests"):
        found += sorted(
            path
            for path in (ROOT / folder).rglob("*")
            if path.suffix in TEXT_SUFFIXES
            and path.is_file()
            and ".egg-info" not in str(path)
            and path != Path(__file__).resolve()
        )
    return found


def flat(text: str) -> str:
    """Text with every run of white space, line breaks included, one space."""
    return " ".join(text.split())


def python_prose(source: str) -> list[str]:
    """The string constants of a Python file (adjacent literals come joined) and its
    comments, each run of comment lines one piece."""
    pieces = [
        flat(node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    comments: list[str] = []
    last_line = -2
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        line = token.start[0]
        words = token.string.lstrip("#").strip()
        if line == last_line + 1 and comments:
            comments[-1] += " " + words
        else:
            comments.append(words)
        last_line = line
    return pieces + [flat(comment) for comment in comments]


def json_strings(value: object) -> Iterator[str]:
    """Every string in a JSON document (a dashboard's descriptions), escapes read."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_strings(item)


def prose(path: Path) -> list[str]:
    """The text a reader of this file reads, in pieces a reference cannot span."""
    text = path.read_text()
    if path.suffix == ".py":
        return python_prose(text)
    if path.suffix == ".md":
        return [flat(text)]
    if path.suffix == ".json":
        return [flat(value) for value in json_strings(json.loads(text))]
    return [flat(re.sub(r"\n\s*#+", "\n", text))]


def _title(match: re.Match[str]) -> str:
    return match.group("title") or match.group("titles")


def references(text: str) -> Iterator[tuple[str, str]]:
    """Each (page, quoted title) the text sends its reader to."""
    for match in PAGE_THEN_TITLE.finditer(text):
        yield match["page"], _title(match)
        end = match.end()
        while more := MORE_TITLES.match(text, end):
            yield match["page"], _title(more)
            end = more.end()
    for match in TITLE_THEN_PAGE.finditer(text):
        yield match["page"], match["title"]


def comparable(title: str) -> str:
    return flat(title.replace("`", "")).casefold()


def section_lines(markdown: str) -> list[tuple[int, str]]:
    """The line and title of a page's headings (numbers dropped) and bold run-in titles,
    outside its code blocks."""
    found, fenced = [], False
    for number, line in enumerate(markdown.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(line) or RUN_IN.match(line)):
            found.append((number, comparable(match["title"])))
    return found


def section_titles(markdown: str) -> list[str]:
    return [title for _, title in section_lines(markdown)]


def same_page_references(markdown: str) -> Iterator[tuple[int, str, str]]:
    """Each (line, quoted title, "above" or "below") a page sends its reader to on itself."""
    for match in SAME_PAGE.finditer(markdown):
        line = markdown.count("\n", 0, match.start("where")) + 1
        for title in re.findall(r"\"([^\"]+)\"", match["titles"]):
            yield line, title, match["where"]


def broken_same_page_references(markdown: str) -> list[str]:
    """The `"title" above` or `below` that name no section on that side of them."""
    sections = section_lines(markdown)
    broken = []
    for line, title, where in same_page_references(markdown):
        side = [name for at, name in sections if (at < line if where == "above" else at > line)]
        if not names_a_section(title, side):
            broken.append(f'line {line}: "{flat(title)}" {where}')
    return broken


def names_a_section(title: str, sections: list[str]) -> bool:
    """Whether the title is a section's, or the start of one section's only, up to the
    end of a word ("Dispatch" starts two of architecture.md's: which?)."""
    wanted = comparable(title)
    starting = {
        section
        for section in sections
        if section.startswith(wanted)
        and (len(section) == len(wanted) or not section[len(wanted)].isalnum())
    }
    return wanted in starting or len(starting) == 1


def broken_references() -> tuple[list[str], int]:
    """The references that name no section (`file: page, "title"`), and how many were read."""
    sections = {name: section_titles(page.read_text()) for name, page in PAGES.items()}
    broken, seen = [], 0
    for path in sources():
        for piece in prose(path):
            for page, title in references(piece):
                seen += 1
                if page not in sections:
                    broken.append(f'{path.relative_to(ROOT)}: {page} is no page of ours, "{title}"')
                elif not names_a_section(title, sections[page]):
                    broken.append(f'{path.relative_to(ROOT)}: {page}, "{title}"')
    return broken, seen


def test_every_section_named_above_or_below_is_there() -> None:
    broken = [
        f"{name}: {problem}"
        for name, page in PAGES.items()
        for problem in broken_same_page_references(page.read_text())
    ]
    assert broken == []


def test_every_quoted_section_reference_names_a_section() -> None:
    broken, seen = broken_references()
    assert broken == []
    assert seen > 60  # the test reads the references


def test_the_finder_reads_each_form_and_no_quotation() -> None:
    text = flat(
        """(docs/gating.md, "Open complaint") `docs/gating.md`, 7., "Quiet
        hours" docs/consuming-tasks.md "Withdrawn tasks"; [x](docs/performance.md) ("What
        the goals would take"); docs/architecture.md, "Exactly once out" and "Deferral";
        "Restoring the state" (in performance.md); (docs/security.md, 'Forgetting a
        subscriber'); docs/moments.md: "capacity is scarce"; `report.md` and "it waited"
        """
    )
    assert list(references(text)) == [
        ("gating.md", "Open complaint"),
        ("gating.md", "Quiet hours"),
        ("consuming-tasks.md", "Withdrawn tasks"),
        ("performance.md", "What the goals would take"),
        ("architecture.md", "Exactly once out"),
        ("architecture.md", "Deferral"),
        ("security.md", "Forgetting a subscriber"),
        ("performance.md", "Restoring the state"),
    ]


def test_python_strings_are_read_joined_and_comments_by_run() -> None:
    source = (
        'MESSAGE = ("see docs/security.md, "\n'
        "           \"'Forgetting a subscriber')\")\n"
        "# the worker's peak (docs/operations.md,\n"
        '# "Kubernetes").\n'
    )
    found = [ref for piece in python_prose(source) for ref in references(piece)]
    assert found == [
        ("security.md", "Forgetting a subscriber"),
        ("operations.md", "Kubernetes"),
    ]


def test_a_title_names_the_start_of_a_heading_or_run_in_title() -> None:
    page = (
        "## Time zones: `gating.timezone` and the policy's\n"
        "### 4. Open complaint\n"
        "- **A suspended line withdraws nothing.** A withdrawal is final\n"
        "```yaml\n# Fenced heading\n```\n"
    )
    sections = section_titles(page)
    assert names_a_section("Time zones", sections)
    assert names_a_section("open complaint", sections)
    assert names_a_section("A suspended line\nwithdraws nothing", sections)
    assert not names_a_section("Time zone", sections)  # not up to a word's end
    assert not names_a_section("4. Open complaint", sections)
    assert not names_a_section("Fenced heading", sections)
    assert not names_a_section("Health probes", sections)


def test_above_and_below_are_read_on_their_side() -> None:
    page = (
        "## Health probes\n"
        'Served beside the metrics (see "Health probes" above,\n'
        '"Scaling" below, and "State" and "Risk\n'
        'score" below).\n'
        "## Scaling\n"
        "## Risk score\n"
    )
    assert list(same_page_references(page)) == [
        (2, "Health probes", "above"),
        (3, "Scaling", "below"),
        (4, "State", "below"),
        (4, "Risk\nscore", "below"),
    ]
    assert broken_same_page_references(page) == ['line 4: "State" below']
    assert broken_same_page_references(page.replace("above", "below")) == [
        'line 2: "Health probes" below',
        'line 4: "State" below',
    ]
