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


EXAMPLE = "redis://127.0.0.1:6379/0"


def problem(url: str) -> str | None:
    """What in `url` redis-py cannot read, or reads otherwise than written, or None: a
    port that is no number from 1 to 65535 (redis-py raises; port 0 it takes for 6379), no
    host (it takes localhost), a database that is no number (a path such as `/moments`:
    it takes database 0), no socket path for unix://, a host in brackets that is no IPv6
    address (`urlsplit` raises), an option in the query of the wrong kind
    (`?socket_timeout=5s`: redis-py raises at the first connection; `?ssl_min_version=`
    a name or a number that is no TLS version, where redis-py takes 771 or 772). The
    scheme is checked before."""
    try:
        urlsplit(url)
    except ValueError:  # its message is "Invalid IPv6 URL": the fix is left out
        return (
            "the host part has a '[' or ']' that does not enclose an IPv6 address; "
            "write e.g. redis://[::1]:6379/0 or redis://redis:6379/0"
        )
    if _cut_login(url) is not None:  # before the port: that message quoted the password
        return (
            "the user or password holds a '/', '?' or '#', where a URL's login ends; "
            "percent-encode them (%2F, %3F, %23), e.g. redis://moments:pa%2Fss@redis:6379/0"
        )
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    db = query.get("db", [])
    if any(not value.isdigit() for value in db):
        return f"the database (?db={db[0]}) is no number; write e.g. {EXAMPLE}"
    # Only options need redis-py's own readers (~0.1 s of CPU to import): not imported for
    # a URL without any, as `moments config show` and the default URL have.
    if query and (option := _unknown_option(query, parts.scheme)) is not None:
        return option
    if query and (option := _bad_option(query)) is not None:
        return option
    if parts.scheme == "unix":
        if not parts.path:
            return "no socket path after unix://; write unix:///path/to/redis.sock?db=0"
        return None
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        where = parts.netloc.rpartition("@")[2]
        return f"the port in {where} is no number from 1 to 65535; write e.g. {EXAMPLE}"
    if not parts.hostname:
        return f"no host after {parts.scheme}://; write e.g. {EXAMPLE}"
    path = unquote(parts.path).replace("/", "")  # as redis-py reads the database
    if path and not path.isdigit():
        return (
            f"the path {parts.path} is no database number (Redis numbers them: 0, 1, ...); "
            f"write e.g. {EXAMPLE} (MOMENTS_APP_ID keeps this app's keys apart)"
        )
    return None


def _unknown_option(query: dict[str, list[str]], scheme: str) -> str | None:
    """What is wrong with the first query option the connection of `scheme` does not take,
    or None. redis-py passes such an option on to the connection it opens, which raised
    TypeError at the worker's first connection: a typo (`socket_timout`), or an `ssl_*`
    option on a redis:// URL."""
    import inspect

    from redis.asyncio.connection import (
        AbstractConnection,
        Connection,
        ConnectionPool,
        SSLConnection,
        UnixDomainSocketConnection,
    )

    by_scheme: dict[str, list[type]] = {
        "unix": [UnixDomainSocketConnection],
        "rediss": [Connection, SSLConnection],
    }
    classes = [ConnectionPool, AbstractConnection, *by_scheme.get(scheme.lower(), [Connection])]
    taken = {
        name
        for cls in classes
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    } - {"connection_class"}
    for name in query:
        if name in taken:
            continue
        said = f"the option ?{name}= is no option redis-py takes on a {scheme}:// URL"
        from rules.hints import closest  # on this refusal only

        close = closest(name, sorted(taken))
        if close:
            return f"{said}: did you mean {close}?"
        if name.startswith("ssl_"):
            return f"{said}: ssl_* options take rediss://, the TLS scheme; or leave it out"
        return f"{said}; leave it out (redis-py's connection options: socket_timeout, ...)"
    return None


_TLS_VERSION = "the TLS version's number, 771 for TLS 1.2 or 772 for TLS 1.3"
_VERIFY_FLAGS = (
    "names of Python's ssl.VerifyFlags, separated by commas, "
    "e.g. VERIFY_X509_STRICT,VERIFY_X509_PARTIAL_CHAIN"
)
_KINDS = {
    # redis-py reads it with int() and gives it to `SSLContext.minimum_version`, which
    # takes only an `ssl.TLSVersion` value: a name (TLSv1_2) it cannot read at all.
    "ssl_min_version": _TLS_VERSION,
    "ssl_include_verify_flags": _VERIFY_FLAGS,
    "ssl_exclude_verify_flags": _VERIFY_FLAGS,
    "retry_on_error": "names of redis-py's exceptions, separated by commas, e.g. "
    "ConnectionError,TimeoutError",
}
"""What an option redis-py reads its own way takes, as its refusal says it."""


def _bad_option(query: dict[str, list[str]]) -> str | None:
    """What is wrong with the first query option redis-py cannot read as its kind (a
    number, true or false, ...), or None. Its value is not quoted: it may be a secret."""
    from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS  # redis-py's own readers

    for name, values in query.items():
        parse = URL_QUERY_ARGUMENT_PARSERS.get(name)
        if parse is None or not values:
            continue
        try:
            read = parse(values[0])
        except (ValueError, TypeError):
            return _told(name, _KINDS.get(name, _kind(parse)))
        if name == "ssl_min_version" and not _is_tls_version(read):
            return (
                f"the option ?{name}= holds no TLS version Python's ssl module knows (the "
                f"first connection would fail); write {_TLS_VERSION}, or leave it out"
            )
    return None


def _kind(parse: object) -> str:
    if parse is float:
        return "a number (e.g. 5 or 0.5)"
    if parse is int:
        return "a whole number (e.g. 5)"
    return "what redis-py documents for it"


def _told(name: str, kind: str) -> str:
    return f"the option ?{name}= holds a value redis-py cannot read; write {kind}, or leave it out"


def _is_tls_version(number: object) -> bool:
    """Whether `number` is one of Python's `ssl.TLSVersion` values, the only numbers
    `SSLContext.minimum_version` takes (another raised at the first connection,
    "Unsupported TLS/SSL version")."""
    import ssl

    return any(number == version.value for version in ssl.TLSVersion)


def passwords(url: str) -> list[str]:
    """Each password in `url`, as written there (percent-encoded) and decoded: a log line
    may quote either. Longest first, so that none is redacted by half."""
    if (cut := _cut_login(url)) is not None:  # the login's password, then the rest's
        password = cut[0].partition(":")[2]
        rest = passwords(f"{url.partition('://')[0]}://{cut[1]}")
        return sorted({p for p in (password, unquote(password), *rest) if p}, key=len, reverse=True)
    parts = urlsplit(url)
    found = [parts.password, unquote(parts.password)] if parts.password else []
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if unquote_plus(name) in _QUERY_SECRETS:
            found.append(value)
    found += parse_qs(parts.query).get("password", [])  # decoded, as redis-py reads it
    return sorted({p for p in found if p}, key=len, reverse=True)


def redacted_url(url: str) -> str:
    """`url` with any password, in the user part or the query, replaced by `****`; one
    `urlsplit` cannot read (a stray '[') as `<scheme>://****`: where its password is is
    not known, and the refusal that quotes it must not fail on it."""
    try:
        urlsplit(url)
    except ValueError:
        return f"{url.partition('://')[0]}://{MASK}"
    if (cut := _cut_login(url)) is not None:
        user, colon, _ = cut[0].partition(":")
        if colon:
            return redacted_url(f"{url.partition('://')[0]}://{user}:{MASK}@{cut[1]}")
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


def _cut_login(url: str) -> tuple[str, str] | None:
    """(login, what follows its `@`) when the login holds a `/`, `?` or `#` not
    percent-encoded (`redis://moments:pa/ss@redis:6379/0`): a URL's host part ends at the
    first of them, so the host is read as `moments`, a port as `pa`, and the password is in
    the path, where redaction did not look. None when the login is read whole or there is
    none. The `@` is the last before the first `=` after the host part, so one in a query
    value (`?client_name=ops@site`) is not taken for it; the host part may hold one too
    (`redis://u:p@ss/word@redis`: the path of a redis:// URL is a database number, so an
    `@` in it is a login's). Not for unix://, whose path may hold an `@`."""
    scheme, _, after = url.partition("://")
    netloc = urlsplit(url).netloc
    if scheme not in ("redis", "rediss") or not netloc or not after.startswith(netloc):
        return None
    tail = after[len(netloc) :]
    at = tail.partition("=")[0].rfind("@")
    if at < 0:
        return None
    return netloc + tail[:at], tail[at + 1 :]


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None


def database(url: str) -> str:
    """The database number a URL selects, as redis-py reads it: `?db=`, else the path of a
    redis:// or rediss:// URL, else 0."""
    parts = urlsplit(url)
    if db := parse_qs(parts.query).get("db"):
        return db[0]
    path = "" if parts.scheme == "unix" else unquote(parts.path).replace("/", "")
    return path or "0"
