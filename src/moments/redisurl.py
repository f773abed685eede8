"""Credentials in MOMENTS_REDIS_URL, wherever redis-py reads them.

redis-py (`redis.connection.parse_url`) takes a login from the user part
(`redis://user:password@host`) and from the query (`?username=...&password=...`), the
user part winning, both percent-decoded. What prints or logs the URL must hide the
password in either place, and the log redaction must know both.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

MASK = "****"
_QUERY_SECRETS = frozenset({"password"})


def login(url: str) -> tuple[str | None, str | None]:
    """The user and password redis-py logs in with from `url` (None where there is none)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    user = unquote(parts.username) if parts.username else _first(query.get("username"))
    password = unquote(parts.password) if parts.password else _first(query.get("password"))
    return user, password


def passwords(url: str) -> list[str]:
    """Each password in `url`, as written there (percent-encoded) and decoded: a log line
    may quote either. Longest first, so that none is redacted by half."""
    parts = urlsplit(url)
    found = [parts.password, unquote(parts.password)] if parts.password else []
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if unquote_plus(name) in _QUERY_SECRETS:
            found.append(value)
    found += parse_qs(parts.query).get("password", [])  # decoded, as redis-py reads it
    return sorted({p for p in found if p}, key=len, reverse=True)


def redacted_url(url: str) -> str:
    """`url` with any password, in the user part or the query, replaced by `****`."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}"
    query = "&".join(_redacted_pair(pair) for pair in parts.query.split("&"))
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Written out, not `geturl()`: that turns unix:///path into unix:/path.
    query = f"?{query}" if query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}{fragment}"


def _redacted_pair(pair: str) -> str:
    name, eq, value = pair.partition("=")
    return f"{name}={MASK}" if eq and value and unquote_plus(name) in _QUERY_SECRETS else pair


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None
