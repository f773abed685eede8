"""What to look at for the YAML syntax errors rules files most often have: the parser's
words (`mapping values are not allowed here`) name what it met, not the mistake, which
is mostly a line indented unlike its neighbours, sometimes the line above the one it
points at (analyst review)."""

from __future__ import annotations

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.tokens import (
    FlowMappingEndToken,
    FlowMappingStartToken,
    FlowSequenceEndToken,
    FlowSequenceStartToken,
)


def yaml_hint(exc: MarkedYAMLError, text: str) -> str | None:
    """A hint for a common syntax error, naming the lines to check; None for others."""
    mark, context = exc.problem_mark, exc.context_mark
    if mark is None:
        return None
    problem = str(exc.problem or "")
    lines = text.splitlines()
    line = mark.line  # 0-based
    if problem.startswith("mapping values are not allowed"):
        return _mapping_values(lines, line, mark.column)
    if problem.startswith("found character '\\t'"):
        return f"YAML indents with spaces only: replace the tab on line {line + 1} with spaces"
    if problem.startswith("expected <block end>"):
        flow = _flow_value(lines[line] if line < len(lines) else "", mark.column)
        if flow is not None:
            return flow
        opened = f", in the block from line {context.line + 1}" if context is not None else ""
        return (
            f"check the indentation of line {line + 1} against the lines above it{opened}: the "
            "keys of one map line up, and so do the '- ' items of one list; a map inside "
            "another goes under a key ending in ':', indented further"
        )
    if problem.startswith("could not find expected ':'") and context is not None:
        return (
            f"line {context.line + 1} holds a key with no ': ' after it: write a space after "
            "the colon, `on: [usage]` not `on:[usage]`, or check its indentation"
        )
    if problem.startswith("found unexpected end of stream") and context is not None:
        return f"the quote opened on line {context.line + 1} is never closed"
    if problem.startswith("expected ',' or '}', but got ':'"):
        colon = _colon_in_flow(lines[line] if line < len(lines) else "", line, mark.column)
        if colon is not None:
            return colon
    if problem.startswith("expected ',' or") and context is not None:
        return f"the [ or {{ opened on line {context.line + 1} is not closed where it should be"
    if problem.startswith("expected the node content") and "<stream end>" in problem:
        return _open_at_end(text)
    if problem.startswith("found duplicate key"):
        start = context.line if context is not None else 0
        return _duplicate_key(problem, lines[start:], line - start, mark.column, start)
    return None


def _open_at_end(text: str) -> str | None:
    """`on: [` as a half-written file's last line: the parser's context mark is the end of
    the file, so the bracket left open is found among the scanner's tokens."""
    opened: list[FlowMappingStartToken | FlowSequenceStartToken] = []
    try:
        for token in YAML(typ="safe", pure=True).scan(text):
            if isinstance(token, FlowMappingStartToken | FlowSequenceStartToken):
                opened.append(token)
            elif isinstance(token, FlowMappingEndToken | FlowSequenceEndToken) and opened:
                opened.pop()
    except YAMLError:
        pass  # the tokens up to a scanner error still say which brackets were opened
    if not opened:
        return None
    last = opened[-1]
    char, closer = ("{", "}") if isinstance(last, FlowMappingStartToken) else ("[", "]")
    line = last.start_mark.line + 1
    return f"the {char} opened on line {line} is never closed: close it with {closer}"


def _flow_value(here: str, column: int) -> str | None:
    """`description: {country} welcome`: a value starting with `{` or `[` is a YAML map or
    list, and the text after its end is where the parser stopped. It was told to check the
    indentation, which was right."""
    key, sep, value = here[:column].partition(": ")
    value = value.lstrip(" ")
    if not sep or not value.startswith(("{", "[")) or not key.strip():
        return None
    closer = "}" if value.startswith("{") else "]"
    if closer not in value:
        return None
    whole = here[len(key) + len(sep) :].strip()
    return (
        f"a value starting with {value[0]} is read as a YAML {'map' if closer == '}' else 'list'}"
        f", and the text after its {closer} is left over: quote the whole value, "
        f'{key.strip()}: "{whole}"'
    )


def _colon_in_flow(here: str, line: int, column: int) -> str | None:
    """`task: {..., description: Thanks: {amount}}`: the ': ' in the text is read as a
    second key's. It was told the { "is not closed where it should be", and it was closed.
    The key is the one after the last ',' or '{' before the colon; None when there is none."""
    start = max(here.rfind(",", 0, column), here.rfind("{", 0, column)) + 1
    key, sep, value = here[start:column].partition(":")
    if not start or not sep or not key.strip() or not value.strip():
        return None
    return (
        f"inside {{ }} a value holding ': ' must be quoted: {key.strip()}: "
        f"\"{value.strip()}: ...\" (the ': ' at column {column + 1} of line "
        f"{line + 1} was read as a second key's)"
    )


def _duplicate_key(problem: str, lines: list[str], line: int, column: int, start: int) -> str:
    """Where the key was first written (the nearest line above with it at the same
    column, in the map's own lines: `lines` from the map's first, `start`), and the fix:
    keep one, or, for a second `id`, a rule pasted without its dash. A first written
    otherwise (`"kind":`) is not found, rather than another rule's line named."""
    key = problem.split('"')[1] if problem.count('"') >= 2 else ""
    first = next(
        (i for i in range(line - 1, -1, -1) if lines[i][column:].startswith(f"{key}:")), None
    )
    where = f", here and on line {start + first + 1}" if first is not None else ""
    fix = "a second rule starts with its own '- '" if key == "id" else "keep one"
    block = _block_above(lines, line, column) if first is not None and key != "id" else None
    if block is not None:
        # A rule's `description:` and its task's are two keys: the task's written level
        # with the rule's, after the task's block, is the rule's written twice, and "keep
        # one" had the analyst delete a text that only wanted indenting (analyst walk).
        name, at, indent = block
        fix = (
            f"if this one is {name}:'s (line {start + at + 1}), indent it as that block's "
            f"keys are, {indent} spaces; else keep one"
        )
    return f"{key!r} is written twice in one map{where}: {fix}"


def _block_above(lines: list[str], line: int, column: int) -> tuple[str, int, int] | None:
    """The block the lines just above `line` belong to: a key of the same map (at
    `column`) ending in ':' whose lines, indented further, run up to `line`. Its name, its
    line and its keys' indentation; None when the line above belongs to no such block."""
    keys: int | None = None
    for i in range(line - 1, -1, -1):
        text = lines[i]
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        indent = _indent(text)
        if indent > column:
            keys = indent
            continue
        if indent < column or keys is None:
            return None
        name, sep, rest = text[column:].partition(":")
        if not sep or rest.split("#", 1)[0].strip() or not name.strip():
            return None
        return name.strip(), i, keys
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _mapping_values(lines: list[str], line: int, column: int) -> str:
    """`key: value` where YAML takes no key: a value holding ': ', or a line read as the
    rest of the value on the line above (indented further than that `key: value`)."""
    here = lines[line] if line < len(lines) else ""
    if ": " in here[:column].strip() or here[:column].rstrip().endswith(":"):
        return "a value holding ': ' must be quoted, e.g. description: \"Note: text\""
    above = line - 1
    while above >= 0 and (not lines[above].strip() or lines[above].lstrip().startswith("#")):
        above -= 1
    if above < 0:
        return "check the indentation of this line, or quote a value holding ': '"
    item = _item_key(lines[above])
    if item is not None:
        # `  - id: x` then `     version: 1`: the map's keys start after the '- ', at 4;
        # "2 spaces against 5" had the analyst move `version:` to 2, another mistake.
        indented = f"whose key after '- ' starts {item} characters in, against {_indent(here)} here"
    else:
        # Either line may be the one off ("which is indented less" blamed line 13 when
        # line 14 was one space too far): say what is, for both directions.
        indented = (
            f"as line {line + 1} is indented further, {_indent(here)} spaces against "
            f"{_indent(lines[above])}"
        )
    return (
        f"YAML read line {line + 1} as more of the value on line {above + 1}, {indented}: keys "
        f"of one map line up, so check the indentation of lines {above + 1} and {line + 1}, or "
        "quote a value holding ': '"
    )


def _item_key(line: str) -> int | None:
    """Where the key of a list item's map starts (`  - id: x`: 4), or None for a line that
    is no `- key: value` item."""
    stripped = line.lstrip(" ")
    if not stripped.startswith("- "):
        return None
    after = stripped[1:].lstrip(" ")
    if ":" not in after:
        return None
    return len(line) - len(after)
