"""Subscriber numbers masked in every log record, whoever logs it.

Installed as the logging record factory, so it covers our loggers, Faust's,
aiokafka's and any handler Faust's worker sets up later. The contract allows
subscriber ids of 5 to 20 digits, and a 5-digit id looks like a port or a count,
so one digit-length rule cannot tell them apart. What can: an id is a *string*
(quoted in every repr and JSON) or a Kafka key or value (a bytes literal), while
counts, offsets, ports and durations are numbers. So `mask_text` masks

- inside a bytes literal (`b'...'`: aiokafka's DEBUG dumps of keys, values and
  whole record batches), every run of 5 or more digits, and a number written in groups;
- a quoted string of 5 digits or more (`'97531'`, `"subscriber_id":"97531"`), in
  escaped quotes too (`\\"97531\\"`, as JSON written inside a string quotes it, after an
  id's name as well: `{\\"msisdns\\": [\\"1234\\", \\"5678\\"]}`), and in a URL's
  (`%2297531%22`; after an id's name `msisdn=%221234%22`);
- 5 digits or more (over the contract's 20 too), or a quoted number of any length
  (`subscriber_id="1234"`), right after a field name that holds one
  (`subscriber_id=97531`, `msisdn: 97531`, also `counterparty` and `imei`), in any case
  and as other code writes it (`SUBSCRIBER_ID=97531`, `subscriberId: 97531`), after a
  sign a URL escapes (`?q=msisdn%3D97531`, `%253D`) or a joining word (`msisdn is 97531`;
  `is`, `was`, `are`, `were`, `of`, `for`, not before a number with a unit: `msisdns for
  86400 s`, but for the ids after it and a comma or a space, bare or in brackets: `msisdns
  for 86400 s, 97531`, `msisdns for 86400 s 97531`, `msisdns for 86400 s [97531]`), and
  every
  id of a list after it
  (`msisdns: [97531, 97532]`; without brackets, the ids separated by a comma, `/`, `;`,
  `|` or spaces: `msisdns=97531/97532`, `subscriber_ids: 97531 97532`, as a URL writes
  them too: `msisdns=97531%2C97532`, `97531+97532`, a null among them
  too: `msisdn=None 97531`, an id with an extension or a country code in brackets:
  `138 0013 8001x12 612 345 678`, `(+86) 13800138001 97532`, up to the first other
  word, number under 5 digits or line's end; a number with a unit on it or after a space
  (`12345ms`, `12345 ms`, `123456 MiB`, `12345%20ms`; after a comma too: `msisdns=97531,
  12345 ms`) is read as in free text, and the ids after it are still the list's
  (`msisdns=97531, 12345 ms, 97532` masks both ids); a count is masked with them:
  `msisdns: 97531 12345 records`, as the last of two ids would read the same), and
  inside the brackets of a list, tuple, set or dict
  written on the line after it, whatever else they hold (`[97531, None, 97532]`,
  `{97531: 3, 97532: 4}`, `['1234']`);
- a number written in groups as people write phone numbers (`138-0013-8001`,
  `+86 138 0013 8001`; its groups apart by one space or two, a non-breaking one too, a
  dash or an en dash, not a `/`, `_` or comma (but for a mobile number's 3, 4 and 4
  digits, `13` to `19` first, or a landline's, a `0` first, the same sign between each:
  `138,0013,8001`, `138_0013_8001`, `0755/8888/6666`; no count's digit groups,
  `13,800,138,001`, whose groups have 3, nor a list's `[100,2000,3000]`): 3, 4 and 4
  digits after an optional
  country code, a mobile number's 11 digits grouped any other way, 2 digits or more a
  group after a leading `1`, or with dots (`138 00138 001`, `138.0013.8001`; not `15 20
  25 30 35 4`), a landline's `0755 8888 6666` or
  `(010) 8888 6666`, a US number's `(415) 555-2671` or `415-555-2671` (dashes only, an en
  dash, U+2013, too:
  `512 256 1024` is a row of sizes), an IMEI's `35-209900-176148-1`, 9 digits in three
  groups of 3 (`612 345 678`, a mobile number in Spain or Poland; not three of a row of
  numbers, `128 256 512 1024`, though a number under 3 digits or of 7 or more after it is
  none of a row's, `612 345 678 9`, `612 345 678 13800138001`, nor the digits a word ends
  with before it, `v2 612 345 678`, and among the ids after an
  id's name, after a number with an extension, `130 0000 0000x0 100 000 000`, after the country
  code of Spain, Poland, Portugal, Czechia or Slovakia, `34 612 345 678`, a number under 3
  digits or of 7 or more after it too, `34 612 345 678 9`, `34 100 000 000 13000000000`,
  or any code and
  dashes, `1-800-138-001` (en dashes too), more groups with dashes after it too,
  `1-800-138-001-002`), and
  any groups of 2
  to 6 digits after a `+` and a country code (not starting with 0: `+004 53 49` stays), 7
  digits or more in all: `+44 20 7946 0958`, with dots too, `+86.138.0013.8001`; in a URL
  `138+0013+8001`,
  `138%200013%208001`; from its `+` after a word too: `id+86 10 8888 6666`, glued to a
  word from its first digit, `id138-0013-8001`, `user_138 0013 8001`, the word's own
  digits no country code, `v2 138 0013 8001`, but not ending a hex string, `9f8e7d6c5b4a392
  1706 5443`), masked as
  one (an extension, letters or a fraction on it
  stay: `138****8001x12`, `861******8001abc`, `442*****0958.5`; a date or a time
  beside it is none of its groups: `138****8001 2026-12-07`, `2026-12-07 138****8001`,
  `442*****0958 10:00:00`; but right after a `+`, a country code and a dash: `+1-0000-01-01`
  is a number),
  in free text and among the ids after an id's name
  (`msisdn=97531, 138 0013 8001`, `msisdns: '...', '138 0013 8001'`);
- anywhere else, a run of 7 digits or more (over the contract's 20 too) that is not
  part of a hex string (a task id, a trace id, a topic prefix: a hex letter beside it and a
  digit past the letters on either side, but for a run of 10 digits or more in a string of
  13 to 15 characters;
  `8613800138000abc`, `id13800138000`, `8613800138000a1` are numbers glued to a word,
  masked) or a decimal fraction: the net for an
  MSISDN, IMEI or called number in free text. After a URL's escape (`%2B8613800138001`,
  a `+`, escaped twice too: `%252B8613800138001`) its digits are a number's, not a hex
  string's (letters on it too:
  `+8613800138001abc` reads `+861******8001abc`), and the escape's own are none of
  the number's (`%2213800138001` reads `%22138****8001`). Numbers of 7 digits and more (offsets,
  byte sizes) are masked too, the price of not knowing which number is personal: a count
  or a size with its noun or unit after it as well (`processed 1234567 events` reads
  `processed ******* events`, `took 1234567 ms` `took ******* ms`), a deliberate choice:
  the word after a number says nothing of it (`subscriber 13800138001 events dropped`: an id
  and a count of its events). A count meant to stay readable is written with digit
  groups (`f"{n:,}"`: `processed 1,234,567 events`, as `sinks.deadletter` writes sizes)
  or after a name ending in a unit or `_count`. A UUID
  (`f47ac10b-58cc-4372-a567-123456789012`, a letter among its hex digits) stays whole.

The ident of one of the process's threads is left alone there (a stack dump's
`<Thread(metrics, started daemon 140...)>`): no person's number, and masked, a dump's
threads could not be told apart. So are the digits of a configured name (the app id, the
topic prefix, a topic's name: `moments-20261207`, `t495161564fa.telecom.roaming`;
`install_pii_masking(names=)`), in a bytes literal too (`b'moments-20261207'`, as
aiokafka's DEBUG lines write a topic) and inside the brackets after an id's name
(`msisdns: [moments-12345]`): a log that names a topic names the one to look at.
A number glued to one is glued to a word, masked: `t495161564fa13800138001`, the name's
letters and digits no hex string's; so is one after a name's last digit and a dot, no
decimal fraction: `moments-20261207.13800138001`, `moments-20261207.138 0013 8001`.

Left alone: a number right after a setting's name or one ending in a unit or `_count`
(`ledger_ttl_seconds=34560000`, `MOMENTS_ROCKSDB_BLOCK_CACHE_MIB: 64`, `took_ms=...`, and
such a field of a structured value), or after `offset` (`offset=48213377`, `event_offset:
...`: a Kafka offset, for ops to look up): it is what the name says, not a subscriber's
number. Unless it is the first group of a number written in groups: `offset=138 0013
8001` reads `offset=138****8001` (the groups after it showed).
A name holding an id wins (`subscriber_id_seconds=...` is masked), but for one that counts
ids, its last part `_count` or `Count` (`msisdn_count="3"`, `subscriberIdsCount: 12`): a
count, in a JSON line's field too (a quoted string of 5 digits or more is still masked).

Record attributes passed with `extra=` under those field names are masked as
well, whatever their length. Masks look like `139****1234` (`mask_msisdn`).
`MOMENTS_LOG_PII=true` turns masking off for debugging.

Logging's own report of a handler that failed on a record (on stderr: the record's format
string and arguments, its exception) is cleaned too (`print_error_report`), and so is
the traceback Python prints of an uncaught exception (in the main thread or another);
where the log is JSON, that exception is one JSON record instead (`_logged_as_json`).

Secrets are redacted whatever `MOMENTS_LOG_PII` says: the configured passwords
wherever they appear, and the SASL payload aiokafka logs at DEBUG with each
SaslAuthenticate request (for PLAIN: the user name and password in clear).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import io
import logging
import re
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from moments.pii import mask_msisdn

ID_FIELDS = ("subscriber_id", "msisdn", "counterparty", "imei")
"""Field names whose value is a subscriber, called number or device id."""
_ID_NAME = (
    r"(?:(?<![A-Za-z0-9])|(?<=%[0-9A-Fa-f]{2})|(?<=[a-z])(?=[A-Z]))"
    r"(?i:subscriber[_\- ]?id|msisdn|counter[_\- ]?part(?:y|ie)|imei)(?i:s?)"
    r"(?!(?<=[a-z])[a-z]|(?<=[A-Z])[A-Z](?![a-z]))"
)
"""Those names as other code and people write them too, in any case: `SUBSCRIBER_ID` (an
environment dump, a Java client's log), `subscriberId` (a JSON-minded producer's),
`subscriber-id`, `subscriber id`, `counterParty`, `counter party`, plurals (`msisdns`).
Each a word of its own or a part of one (`event.subscriber_id`, `caller_msisdn`,
`callerMsisdn`, `imei2`, `MSISDNList`, after a URL's escape: `%22msisdn%22`), not letters
inside another word: `SubscriberIdleTimeout`,
`SUBSCRIBER_IDLE_TIMEOUT`, `nosubscriber_id`, `anytimeinterval` carry no id. Each starts
with an s, m, c or i in either case, the letter the text pattern looks for first."""
_ID_FIELD = re.compile(_ID_NAME)
_COUNT_OF = r"\w{0,58}?(?:_(?i:counts?)|Counts?)(?!\w)"
"""The rest of a name that counts ids (`msisdn_count`, `subscriberIdsCount`, `IMEI_COUNT`):
its number is a count, not an id. Within the name's 64 letters the pattern reads; any
other ending (`subscriber_id_seconds`, `msisdn_count_by_region`) leaves the id's name."""
_ID_COUNT = re.compile(_ID_NAME + _COUNT_OF)

UNITS = (
    *("seconds", "secs", "s", "ms", "us", "ns", "minutes", "hours", "days"),
    *("bytes", "kib", "mib", "gib", "count"),
)
"""Name endings (`_seconds`, `_ms`, `_mib`, `_count`) that say a number is a duration, a
size or a count, never a subscriber number."""


WRITTEN_UNITS = (
    *("ms", "s", "sec", "secs", "second", "seconds", "us", "µs", "ns"),
    *("min", "mins", "minute", "minutes", "h", "hour", "hours", "day", "days"),
    *("bytes", "kb", "kib", "mb", "mib", "gb", "gib"),
)
"""Units written after a number, in any case (`12345 ms`, `64 MiB`): a duration or a size."""
_UNIT = rf"(?i:{'|'.join(WRITTEN_UNITS)})(?![\w=:])"
"""A unit, a word of its own (not `ms=3`, not `subscribers`). A count's noun is no unit:
`msisdns: 97531 97532 records` is as likely two ids as an id and a count, and the second
shown would be a person's."""
_URL_SPACE = r"%(?:25){0,2}20"
"""A space as a URL escapes it, once or twice: `%20`, `%2520`."""
_UNIT_SPACE = rf"(?:[^\S\r\n]|{_URL_SPACE})"
"""A space before a unit, a URL's too: `12345%20ms` reads as `12345 ms`."""
_UNIT_AFTER = rf"{_UNIT_SPACE}+{_UNIT}"
"""A unit after a space (`12345 ms`, `12345%20ms`)."""
_UNIT_LETTERS = "".join(sorted({unit[0] for unit in WRITTEN_UNITS}))
_WITH_UNIT = rf"(?:\.\d+)?{_UNIT_SPACE}*(?=(?i:[{_UNIT_LETTERS}])){_UNIT}"
"""The rest of a number with its unit on it or after a space (`12345ms`, `12345.5 ms`,
`12345%20ms`). Its first letter looked at once: the units tried one by one after each id
of a list cost a line of ids 10% more (`msisdns=97531, 864209, 12345 records`)."""

_URL_QUOTE = r"%(?:25){0,2}2[27]"
"""A quote as a URL escapes it, once or twice: `%22`, `%27`, `%2522`."""
_QUOTED_ID = r"\\*'\d+\\*'" + r'|\\*"\d+\\*"' + rf"|{_URL_QUOTE}\d+{_URL_QUOTE}"
"""A quoted number: `'1234'`, `"1234"`, and in escaped quotes, as JSON written inside a
string quotes it: `\\"1234\\"`, `\\\\\\"1234\\\\\\"`, or as a URL escapes them
(`%221234%22`)."""
_NUMBER_START = r"(?:(?<![\d%])|(?<=%[0-9A-Fa-f]{2}))"
"""Where a number may start: after no digit, and not inside a URL's escape, whose hex
digits are none of the number's (`%2213800138001`, `%2097531`), but right after one."""
_MAYBE_QUOTE = r"""(?:\\*['"])?"""
"""A quote or none, escaped or not: the one closing an id's name in JSON (`"msisdn":`,
`\\"msisdn\\":`), or one around an id read in parts (`'138 0013 8001'`)."""
_DATE = r"\d{4}(?:-(?:0[1-9]|1[0-2])-|/(?:0[1-9]|1[0-2])/)(?:0[1-9]|[12]\d|3[01])(?!\d)"
"""A date (`2026-12-07`, `2026/12/07`): its year is no group of a number before it."""
_TIME = r"\d\d?:\d"
"""A time (`10:00`, `10:00:00`): its hour is no group of a number before it. Any 1 or 2
digits before a `:` and a digit are an hour's: no phone number's group is written so."""
_SPACES = r"[ \u00a0\u202f]{1,2}"
"""A space between groups, or two (aligned columns), a non-breaking one too (a number
pasted from a web form or a document, a locale's grouping: U+00A0, U+202F)."""
_DASH = r"[-\u2013]"
"""A dash, or an en dash (a word processor's)."""
_GROUP_SEPARATOR = rf"(?:(?:{_SPACES}|{_DASH}|%20|\+)(?!{_DATE}|{_TIME}))"
"""Between the groups of a number, not before a date or a time: `015-555-2671 2026-12-07`
read `015` as a country code and the date's year as the last of 3, 4 and 4 digits, `+44
20 7946 0958 10:00:00` the hour as a group. Not a `/` (a path's, a ratio's, a list's of
ids: `msisdns=97531/97532`), an `_` (a name's), a comma (a list's; an id is a string,
never written with `f"{n:,}"`, while a count is, to stay readable: `13,800,138,001
bytes`). A mobile or landline number's 3 or 4, 4 and 4 digits apart by one of those
three, the same each time, are read by a shape of their own (`_GROUPED`): no thousands
group has 4 digits, and its first group, `13` to `19` and a digit or a `0` and an area
code's, is seldom a list's."""
_NOT_IN_A_DATE = (
    r"(?!(?<=[-/:,.])(?:(?:(?<=\d:)|(?<=\d{4}[-/]\d\d[-/]))\d\d(?!\d)"
    r"|(?<=\d{4}[-/])\d\d[-/]\d\d(?!\d)|(?<=\d:\d\d[,.])\d{3}(?!\d))"
    rf"|{_DATE}(?!-\d))"
)
"""A number in groups does not start with a date, nor with a date's month or day or a
time's minutes, seconds or milliseconds: `2026-12-07 138 0013 8001` read the day `07` as the country
code of the number after it (`2000-01-13 000000000` the month `01` and the day `13` a
mobile number's head, `1999-01-01 130 0000 0000` the date a mobile number's 4, 2 and 2
digits). Only those: `12:138 0013 8001` is still a number, and so is `1380-01-30-001`.
(`16:55:13,922 138 0013 8001` read the milliseconds `922` as its country code.)
The look back fails at once where no `-`, `/`, `:`, `,` or `.` stands before (CHANGELOG,
the cost)."""
_ROW_NEXT = rf"{_GROUP_SEPARATOR}\d{{3,6}}(?!\d)"
"""The next group of a row of numbers (`128 256 512 1024`, `34 128 256 512 1024`): 3 to 6
digits. A shorter number after 9 digits in groups of 3 (`612 345 678 9`) or a longer one
(`34 100 000 000 13000000000`, itself masked as a run of 7 digits or more) is none: the
groups were left whole, and the long one read with the last group as its country code
(`000*******0000`)."""
_NINE = rf"\d{{3}}{_GROUP_SEPARATOR}\d{{3}}{_GROUP_SEPARATOR}\d{{3}}(?!\d)"
"""9 digits in three groups of 3 (`612 345 678`): a number in groups alone in free text,
and among the ids after an id's name, whatever stands beside it (`msisdns: 612 345 678
138 0013 8001`)."""
_NATIONAL_FIXED = (
    rf"(?:(?:\d{{3}}|0\d{{3}}){_GROUP_SEPARATOR}\d{{4}}{_GROUP_SEPARATOR}\d{{4}}"  # 138 0013 8001
    r"|\d{3}\.\d{4}\.\d{4}"  # 138.0013.8001
    rf"|(?:\(|%28)0\d{{2,3}}(?:\)|%29)"  # (010) 8888 6666, in a URL %28010%29%208888...
    rf"{_GROUP_SEPARATOR}?\d{{4}}{_GROUP_SEPARATOR}?\d{{4}}"
    rf"|(?:\(|%28)[2-9]\d{{2}}(?:\)|%29)"  # (415) 555-2671: a US area code, 3 and 4 digits
    rf"{_GROUP_SEPARATOR}?\d{{3}}{_GROUP_SEPARATOR}\d{{4}}"
    # 415-555-2671: a US number with dashes only; with spaces, 3, 3 and 4 digits are as
    # often a row of sizes (`512 256 1024`)
    # (an en dash as a hyphen-minus: `415\u2013555\u20132671`)
    rf"|[2-9]\d{{2}}{_DASH}[2-9]\d{{2}}{_DASH}\d{{4}}"
    rf"|\d{{2}}{_GROUP_SEPARATOR}\d{{6}}{_GROUP_SEPARATOR}\d{{6}}"  # an IMEI, 35-209900-176148-1
    rf"(?:{_GROUP_SEPARATOR}\d{{1,2}})?"
    # 9 digits in three groups of 3 (612 345 678, 800-138-001: a mobile number in Spain,
    # Poland, the Czech Republic), not three of a row of numbers (`128 256 512 1024`,
    # `64 128 256 512`); a date or a time before it is no number of such a row, nor is an
    # extension on a number (`130 0000 0000x0 100 000 000`; not a hex literal's `0x0`)
    # (a space in brackets: the text pattern is verbose, a bare one would be none)
    r"|(?:(?<!\d[ +\-\u00a0\u202f\u2013])(?<!\d[ \u00a0\u202f]{2})(?<!\d%20)"
    r"|(?<=\d\d[-/]\d\d[ ])|(?<=\d:\d\d[ ])|(?<=\d:\d\d[,.]\d{3}[ ])"
    r"|(?<=\d\d[xX]\d[ ])|(?<=\d\d[xX]\d\d[ ])|(?<=\d\d[xX]\d{3}[ ])|(?<=\d\d[xX]\d{4}[ ])"
    # nor is the digits a word ends with (`v2 612 345 678`, `node_7 612-345-678`)
    r"|(?<=[A-Za-z_]\d[ +-])|(?<=[A-Za-z_]\d\d[ +-])|(?<=[A-Za-z_]\d{3}[ +-]))"
    # nor before a row's next group: one of 3 to 6 digits (`128 256 512 1024`); a number
    # under 3 digits after it (`612 345 678 9`) or one of 7 or more (`612 345 678
    # 13800138001`, masked on its own) is no row's
    rf"{_NINE}(?!{_ROW_NEXT}))"
)
_HEAD_SEPARATOR = rf"(?:{_SPACES}|{_DASH}|%20|\+)"
_HEAD = (
    rf"(?:0?\d{{3}}{_HEAD_SEPARATOR}\d{{4}}{_GROUP_SEPARATOR}\d{{4}}"
    rf"|\d{{2}}{_HEAD_SEPARATOR}\d{{6}}{_HEAD_SEPARATOR}\d{{6}}"
    rf"|[2-9]\d{{2}}{_DASH}[2-9]\d{{2}}{_DASH}\d{{4}})(?!\d)"
)
"""The start of a mobile, landline, IMEI or US number written in groups (of
`_NATIONAL_FIXED`'s shapes those that start with a digit and take no look back): no group
of a mobile number grouped otherwise before it. Any one starting at a group after its
second runs past its 11 digits (one at its second, after the `1`, has 10 of them at most,
and a US number's that ends with it is read as one). Of a date or a time only a year can
be one of its groups, the last of 3, 4 and 4 digits (`1300 000 0000 2000-01-01` read
`000 0000 2000` as a head, and the number showed whole): the separator before it refuses
a date, the others are plain. Built into each shape of a number in groups, the look-aheads
of a date or a time before each group took the text pattern from 38.6k to 41.6k
characters (35.3k without the head looked at) and its compiling 5 ms more (2026-12-07)."""
_MOBILE_OTHERWISE = (
    # a mobile number's 11 digits grouped otherwise: 138 00138 001, 13 800 138 001,
    # 1 3800 138 001; each group after the first of 2 digits or more, not a row of small
    # numbers (`15 20 25 30 35 4`), nor the head of the next number (`13000000 130 0000
    # 0000` read `13000000 130` as one, the next one's `0000 0000` shown)
    rf"1(?:{_GROUP_SEPARATOR}(?=[3-9]\d))?[3-9]"
    rf"(?:(?:(?<=\d\d){_GROUP_SEPARATOR}(?=\d\d)(?!{_HEAD}))?\d){{9}}(?!\d)"
)
"""A mobile number's 11 digits grouped any way (`138 00138 001`): a shape so loose that
the groups of two numbers side by side make one (`1300 0000 130` of `130 1300 0000 130
0000 0000`), so it is never a reason to refuse a group (`_GROUPED`)."""
_NATIONAL = rf"(?:{_NATIONAL_FIXED}|{_MOBILE_OTHERWISE})"
"""The shapes of a number written in groups with no country code: a mobile number (3, 4
and 4 digits, or its 11 digits grouped any other way, 2 digits or more a group), a
landline's (`0755 8888 6666`, its area code in brackets), a US number's with its area
code in brackets (`(415) 555-2671`) or written with dashes (`415-555-2671`: its area code
and exchange start with 2 to 9), an IMEI's (2, 6, 6 and 1 or 2 digits), 9 digits in three
groups of 3 (`612 345 678`) not in a row of numbers."""
_CODED_NINE = (
    rf"(?:00)?(?:34|48|351|420|421){_GROUP_SEPARATOR}[1-9]\d\d{_GROUP_SEPARATOR}"
    rf"\d{{3}}{_GROUP_SEPARATOR}\d{{3}}(?!\d)"
)
"""9 digits in groups of 3 after the country code of a country that writes its numbers so,
without a `+` (`34 612 345 678`): in free text unless a row's next group follows
(`_GROUPED`), among the ids after an id's name whatever follows, as `_NINE` (`msisdns:
97531 34 612 345 678 138 0013 8001` showed `34 612 345 678`)."""
_GROUPED = (
    r"(?=[+\d(%])"  # fails at once where no number starts
    f"{_NOT_IN_A_DATE}"  # nor inside a date or a time
    # 7 digits or more, the country code's first not 0 (`+004 53 49` is an offset)
    rf"(?:(?:\+|(?<=%2[Bb]))(?=[1-9](?:(?:-|{_GROUP_SEPARATOR})?\d){{6}})"
    # a group is not the head of a mobile or landline number after it (`+86 10 8888 6666
    # 130 0000 0001` is two numbers): taken into the first, its rest would show. But for
    # the second, the number's whatever follows: refused, the number was read from its
    # `10` (`+86 10 1300 0000 010 0000 0000`, `1300 0000 010` a mobile number's shape),
    # and `+86` and the next one's last groups showed. (A first one refused is read by
    # the next branch, from the `+`: `+86 138 0013 8001 12` leaves its `12`.)
    # (A mobile number grouped otherwise is no such head: `+130 1300 0000 130 0000 0000`
    # read `1300 0000 130` as one, and the next number's last groups showed.)
    # A dash right after the code leads to a group, a date's shape too: `+1-0000-01-01`
    # read `+1` and a date, its 9 digits shown (a time zone's `+8 2026-12-07` keeps its
    # space, and its date)
    rf"\d{{1,3}}(?:-|{_GROUP_SEPARATOR})(?!{_NATIONAL_FIXED}(?!\d))\d{{2,6}}"
    rf"{_GROUP_SEPARATOR}\d{{2,6}}"
    rf"(?:{_GROUP_SEPARATOR}(?!{_NATIONAL}(?!\d))\d{{2,6}}){{0,3}}"
    # without a `+`, a national number's first group is no country code (read without
    # one first): `130 1300 0000 130 0000 0000` read `130` as one and `1300 0000 130` as
    # a mobile number
    rf"|(?:\+(?:\d{{1,3}}{_GROUP_SEPARATOR})?|(?:\d{{1,3}}{_GROUP_SEPARATOR})??){_NATIONAL}"
    # 9 digits in groups of 3 after the country code of a country that writes its numbers
    # so (Spain, Poland, Portugal, the Czech Republic, Slovakia), without a `+` (`34 612
    # 345 678`, `0048 512 345 678`): no row of numbers' (`34 128 256 512 1024` stays: a
    # group of 3 digits or more after it); a shorter number after it is none of a row's
    # (`34 612 345 678 9` showed whole)
    rf"|{_CODED_NINE}(?!{_ROW_NEXT})"
    # and after any code with dashes only (`1-800-138-001`): a row of numbers is written
    # with spaces or commas; any groups after it with dashes are the number's too
    # (`1-800-138-001-002` was read from its `800`, the code's `1` shown apart)
    # (an en dash as a hyphen-minus: `1\u2013800\u2013138\u2013001`)
    rf"|\d{{1,3}}{_DASH}\d{{3}}{_DASH}\d{{3}}{_DASH}\d{{3}}(?:{_DASH}\d+)*(?!\d)"
    # with dots after a `+` and its country code (`+86.138.0013.8001`, `+1.415.555.2671`),
    # 7 digits or more: a version or an address has no `+`
    r"|\+(?=[1-9](?:\.?\d){6})\d{1,3}(?:\.\d{2,6}){2,4}"
    # a mobile or landline number apart by the same comma, `_` or `/` between each group
    # (`138,0013,8001`, `0755/8888/6666`): no count's digit groups (`13,800,138,001`, a
    # thousands group has 3 digits); its first group a mobile number's (`13` to `19` and
    # a digit) or a landline's area code (a `0`, which no JSON number starts with): a
    # list of numbers written so is a row of sizes as often (`[100,2000,3000]` stays)
    rf"|(?:1[3-9]\d|0\d{{2,3}})(?:,\d{{4}},|_\d{{4}}_|/\d{{4}}/)\d{{4}})"
    # ends where its digits do, whatever follows: letters or a fraction on it (`138 0013
    # 8001abc`, `.5`, an extension's `x12`) stay as they are, and it is masked. Refused
    # there, it showed whole, and `+86 10 1300 0000abc` backed off to `+86 10 1300`
    r"(?!\d)"
)
"""A number written in groups as people write phone numbers: `138-0013-8001`,
`+86 138 0013 8001` (3, 4 and 4 digits after an optional country code: a mobile number;
a landline's area code may have 4, `0755 8888 6666`, not a card's `4111 1111 1111`), any
groups of 2 to 6 digits after a country code, 7 digits or more in all (`+44 20 7946 0958`,
`+1 415 555 2671`, `+44 7911 123456`; not `+1 20 30`) up to a mobile or landline number
after them (but for its second group), and as a URL writes the spaces and the plus: `138+0013+8001`,
`%2B44%2020%207946%200958`. An extension written on it (`138 0013 8001x12`) leaves it a
number: its `x12` stays, as after one written whole (`13800138001x12`); so do letters or a
fraction on it (`138 0013 8001abc`, `+44 20 7946 0958.5`): a number glued to a word is
still a person's."""
_URL_SIGN = r"%(?:25){0,2}(?!2[Bb])[0-9A-Fa-f]{2}"
"""A sign as a URL escapes it, once or twice (`%3D`, `%253D`: `=`), between an id's name
and its value: `?q=msisdn%3D97531`, `%22msisdn%22%3A%2297531%22`. Its `%` is never read
as a sign of its own: the escape's hex digits would join the id's (`%22` `97531`); a
`%2B` is none either: it is the `+` of the number after it."""
_JOINING_WORD = r"(?:is|was|are|were|of|for)[^\S\r\n]+"
_JOINING = (
    rf"(?:{_JOINING_WORD}"
    # not a duration's or a size's number (`msisdns for 86400 s`), nor one with a word on it
    rf"(?!\d+(?:\.\d+)?(?:[^\W\d]|{_UNIT_AFTER})))"
)
"""A word a sentence puts between an id's name and its value (`msisdn is 97531`,
`counterparty of 97531`, `msisdns were [97531, 97532]`): these few only, each a word of
its own right after the name, so `msisdn count is 12345` or `msisdn issued 12345` is no id."""
_NULL = r"(?:None|null)(?!\w)"
"""A null among the ids (`msisdn=None 97531`, `msisdns=97531, None, 97532`): an item of
the list, as inside brackets, left as it is; it does not end the list."""
_URL_LIST_SIGN = r"%(?:25){0,2}(?:2[CcFf]|3[Bb]|7[Cc])"
"""A comma, `/`, `;` or `|` as a URL escapes it, once or twice: `%2C`, `%252C`."""
_LIST_SIGN = rf"(?:\s|{_URL_SPACE})*(?:[,/;|]|{_URL_LIST_SIGN})(?:\s|{_URL_SPACE})*"
"""A comma, `/`, `;` or `|` between two ids of a list, spaces around it, in a URL too."""
_QUANTITIES = rf"(?:\d+{_WITH_UNIT}(?:{_LIST_SIGN}|{_UNIT_SPACE}+))+"
_LEAD = (
    rf"{_JOINING_WORD}(?P<lead>{_QUANTITIES})"
    rf"(?!\d+(?:\.\d+)?(?:[^\W\d]|{_UNIT_AFTER}))"
)
"""Durations or sizes after a joining word, each with a list's sign or a space after it:
the ids follow, bare or in brackets (`msisdns for 86400 s, 97531` showed `97531`: the
quantity is no id, and the list was never read; so did `msisdns for 86400 s 97531` and
`msisdns for 86400 s [97531]`). The quantities are read as free text reads them (7
digits or more masked)."""
_EXTENSION = r"(?:[xX]\d{1,4}(?!\d))?"
"""An extension written on an id (`138 0013 8001x12`): the list goes on after it (`msisdns:
+86 10 0000 0000x0 100 000 000` showed its second id, read as free text, where 3 groups
of 3 after a number are a row's)."""
_CODE_IN_BRACKETS = r"(?:\(\+\d{1,3}\)[^\S\r\n]?)?"
"""A country code in brackets before an id (`(+86) 13800138001`): the list goes on after it
(`msisdns: (+86) 13000000000 100 000 000` showed its second id, read as free text);
its digits stay, as in free text."""
_AN_ID_IN_GROUPS = rf"(?:{_GROUPED}|{_CODED_NINE}|{_NINE})"
"""A number in groups among the ids after an id's name: 9 digits in groups of 3 too,
after a country code or not, whatever stands beside them."""
_FIRST_ID = (
    rf"""(?:{_QUOTED_ID}|{_CODE_IN_BRACKETS}(?:{_AN_ID_IN_GROUPS}|(?:%2[Bb])?\d{{5,}})"""
    rf"""{_EXTENSION}|{_NULL})"""
)
"""The first id after an id's name (`'1234'`, `97531`, `None`): never a duration's number
(`subscriber_id=97531 s` masks it)."""
_MORE_IDS = (
    # more ids: after a comma, `/`, `;` or `|` any number (`97531, 12345 records`: a
    # count's noun is no unit); after spaces on the same line one of 5 digits or more,
    # not a fraction's (`97531 12345.678 s`); the signs and spaces as a URL writes them
    # too (`97531%2C97532`, `97531+97532`); after either, a number with a unit on it or
    # after it (`12345ms`, `12345 ms`) is an item of the list left as free text reads it,
    # and the ids after it are the list's too (`97531, 12345 ms, 97532`)
    rf"""(?:{_MAYBE_QUOTE}{_LIST_SIGN}"""
    rf"""(?:{_QUOTED_ID}|{_MAYBE_QUOTE}{_CODE_IN_BRACKETS}{_AN_ID_IN_GROUPS}{_EXTENSION}"""
    rf"""|{_MAYBE_QUOTE}{_CODE_IN_BRACKETS}\d+(?!\d|{_WITH_UNIT})"""
    rf"""|\d+{_WITH_UNIT}|{_NULL})"""
    rf"""|{_MAYBE_QUOTE}(?:[^\S\r\n]|{_URL_SPACE}|\+)+"""
    rf"""(?:{_QUOTED_ID}|{_MAYBE_QUOTE}{_CODE_IN_BRACKETS}{_AN_ID_IN_GROUPS}{_EXTENSION}"""
    rf"""|{_MAYBE_QUOTE}{_CODE_IN_BRACKETS}\d{{5,}}{_EXTENSION}(?!\w|\.\d|{_UNIT_AFTER})"""
    rf"""|\d+{_WITH_UNIT}|{_NULL}))*"""
)
"""The ids after an id's name: a quoted one of any length (`"1234"`, shorter than the
contract's and still a string), an unquoted one of 5 digits or more (longer than 20 too),
one written in groups, and the next ones of a list written without brackets (`138` of
`97531, 138 0013 8001` is not taken for the next id: the grouped number is read whole),
in a URL too (`msisdns=97531%2C97532`), nulls and numbers with their unit among them.
Last in its branch, so each is read once: nothing after it can fail and send the engine
back into it. No possessive loop (`(...)*+`): Python 3.11.2's matched a fraction past its
look-ahead (`97531 12345.6`)."""
_UUID = r"(?![\d-]{36})[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}(?![0-9A-Za-z])"
"""A UUID (8, 4, 4, 4 and 12 hex digits, a letter among them): left whole, as it names a
task, a consumer group's member or a request, never a subscriber. Read as numbers, its
all-digit last group was masked (`...-a567-123*****9012`) and its 4-digit groups read as a
number in groups (`f47ac10b-045*****8899-...`). Digits only, it is no UUID's hex but a
number written in groups, masked as such."""
_ID_ITEM = (
    rf"""(?<!\\)(?P<open>\\*['"]|{_URL_QUOTE})(?P<digits>\d+)(?P=open)"""
    rf"""|{_NUMBER_START}(?P<grouped>{_AN_ID_IN_GROUPS})"""
)
"""What is masked among them, and inside the brackets after an id's name: a quoted number
of any length (in a URL's escaped quotes too: `%221234%22`), one written in groups
(masked as one), an unquoted one of 5 digits or more.
An escaped quote is read from its first backslash only: read from each one, a run of
100 kB of them in brackets took a minute."""


@functools.cache
def _item_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """What is masked among the ids after an id's name (`_ID_ITEM`), and among those after
    the first, where a number with its unit (`12345 ms`) is read as free text reads it (7
    digits or more masked). Built at the first masking, as the text pattern: compiled at
    import, the two took `import moments.logmask` from 16-26 ms to 45-50 ms (wall clock,
    best of 15, load 6 on 2 cores); built here, the import takes 11.5 ms of CPU, 15-16 ms
    when `_ID_ITEM` alone was compiled at import (2026-12-07)."""
    more = rf"""|{_NUMBER_START}(?P<unit>\d+{_WITH_UNIT})"""
    last = rf"""|{_NUMBER_START}\d{{5,}}"""
    return re.compile(_ID_ITEM + last), re.compile(_ID_ITEM + more + last)


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The text pattern and a setting's or quantity's field name: built at the first
    masking, since the setting names take pydantic, which building the CLI's parser must
    not import (tests/unit/test_cli_startup.py). Compiling both takes about 11 ms (11.2-14.6
    ms, best of 30, load 5-7 on 2 cores, once a process; 6.4-10.7 ms alike before the URL
    escapes, joining words and nulls after an id's name, 2.9 ms before the shapes of
    numbers written in groups, 2026-12-07); where no settings were read before
    the first log record, that record pays for importing `moments.settings`
    (pydantic-settings) instead: 0.15 to 0.45 s, nearly all of its cost, which no simpler
    pattern cuts. Timed with `re.purge()` between runs, in CPU time (best of 30, load 6 on
    2 cores, 2026-12-07): 33 ms before UUIDs, 9 digits in groups of 3 and the ids after a
    duration, 36-42 ms with them (the pattern 26% longer), and the id items' patterns
    (`_item_patterns`) 14-16 ms more, that the import no longer pays."""
    from moments.settings import Settings

    # Names of two words or more, as written (a field, or its MOMENTS_ variable): a
    # one-word setting (`store`, `rules`) or another case (`Store: 13800138001`) is a word
    # of free text as often, whose number stays masked.
    names = sorted((n for n in Settings.model_fields if "_" in n), key=len, reverse=True)
    settings = "|".join([*names, *(f"MOMENTS_{n.upper()}" for n in names)])
    units = "|".join([*UNITS, *(u.upper() for u in UNITS)])
    # a setting's name or a name ending in a unit; an id's name wins over a unit
    # (`subscriber_id_seconds`), in any case, but for a count of ids (`msisdn_count`)
    quantity = (
        rf"(?:(?!\w*?{_ID_NAME})"
        rf"(?:(?:{settings})|\w*_(?:{units})|(?:\w*_)?(?:offset|Offset|OFFSET))"
        rf"|\w*?{_ID_NAME}{_COUNT_OF})"  # msisdn_count: a count of ids
    )
    text = re.compile(
        r"""
      (?<![\w'"])b(?P<q>['"])(?P<body>(?:(?!(?P=q))[^\\\n]|\\.)*)(?P=q)  # bytes literal
    | (?<=['"27])(?:(?<=['"])|(?<=%2[27])|(?<=%252[27]))  # '97531', \"97531\", %2297531%22
      # (the quote's last sign first: one look back where no quote ends)
      (?P<quoted>\d{5,})(?=\\*['"]|"""
        + _URL_QUOTE
        + r""")
    | (?=[SsMmCcIi])(?P<ckey>"""  # each alternative fails at once where it cannot start:
        # an id's name with its first letter, a setting's name with a `=` or `:` and a
        # digit after the word, a number with a digit or a `+` (CHANGELOG, Performance)
        + _ID_NAME
        + r"""\w{0,64}+"""
        + _MAYBE_QUOTE
        + rf"""(?:{_URL_SIGN}|(?!%[0-9A-Fa-f])[^\w\[({{\n]){{0,3}}\s*"""
        + rf"""(?:{_JOINING}|{_JOINING_WORD}(?P<clead>{_QUANTITIES}))?)"""
        + r"""  # msisdns=[97531, None, 97532]: one line, one nesting
      (?!\((?:0\d{2,3}|[2-9]\d{2}|\+\d{1,3})\)[ -]?\d)  # `(010) 8888 6666`, `(+86) 138`: no tuple
      (?P<container>\[[^\[\]\n]*(?:\[[^\[\]\n]*\][^\[\]\n]*)*\]
        | \([^()\n]*(?:\([^()\n]*\)[^()\n]*)*\)
        | \{[^{}\n]*(?:\{[^{}\n]*\}[^{}\n]*)*\})
    | (?=[SsMmCcIi])(?P<key>"""
        + _ID_NAME
        + rf"(?!{_COUNT_OF})"  # msisdn_count="3": a count
        # the name's rest read once, up to 64 letters: `\w*` retried to the end of the word
        # at each id's name in it took minutes for 100 kB of `SubscriberIdSubscriberId...`
        # as few signs as may be: a quote after them opens the value's first id
        + r"""\w{0,64}+"""
        + _MAYBE_QUOTE
        + rf"""(?:{_URL_SIGN}|(?!%[0-9A-Fa-f])\W){{1,4}}?\s*(?:{_JOINING}|{_LEAD})?)"""
        + r"""     # SUBSCRIBER_ID=97531, msisdns: [97531, 97532], msisdn is 97531
      (?P<value>"""
        + _FIRST_ID
        + r""")(?P<more>"""
        + _MORE_IDS
        + r""")
    | (?<!\w)(?=\w++['"]?\s?[=:]\s?\d)(?P<setting>"""
        + quantity
        + r"""['"]?\s?[=:]\s?)(?P<svalue>\d+(?:\.\d+)?)  # ledger_ttl_seconds=34560000
      # groups after it: the value may be a number's first (`offset=138 0013 8001`
      # showed `0013 8001`), read again in _mask_match
      (?:(?P<srest>(?:"""
        + _GROUP_SEPARATOR
        + r"""\d+)+)(?!\d)|(?!\w|\.\d))
    | (?<![0-9A-Za-z])(?=[0-9A-Fa-f]{8}-)(?P<uuid>"""  # f47ac10b-58cc-4372-a567-...
        + _UUID
        + r""")
    | (?=[+\d(%])(?:(?<![\w.+%])|(?<=%[0-9A-Fa-f]{2})|(?<=[\w.])(?=\+)
      |(?P<glued>(?<=[A-Za-z_])(?<!\d[xX])|(?<=[A-Za-z_]\.))(?=[(%]|\d+[- .+%\u00a0\u202f\u2013,_/])
      |(?P<afterdot>(?<=\d\.))(?=\d+[- .+%\u00a0\u202f\u2013]))
      (?P<spaced>"""
        + _GROUPED
        + r""")  # 138-0013-8001, from its `+` after a word too (`id+86 10 8888 6666`),
      # glued to a word (`id138-0013-8001`; not to an extension's `x`: `8001x12 612 345
      # 678` is two numbers), unless in a hex string (_glued_to_hex); a separator after
      # its first digits looked for first: in a hex id's every digit after a letter the
      # shapes were tried for none (a line with a task id and a trace id cost 40% more),
      # and a run of digits alone is read by the branch below; after a configured name's
      # last digit and a dot too (`moments-20261207.138 0013 8001`), no fraction's
    | (?=\d)(?:(?<![\d%])|(?<=%[0-9A-Fa-f]{2}))  # after %2B (URLs)
      (?:(?<!\d\.)(?:(?:(?<=\+)|(?<=%2[Bb]))\d{7,}(?!\d)  # after a plus: a word on it
        |(?P<long>\d{7,})(?!\d))      # free text, unless in a hex string (_in_hex)
      |(?<=\d\.)(?P<fraction>\d{7,})(?!\d))  # a fraction's, unless after a name (_in_name)
        """,
        re.VERBOSE,
    )
    return text, re.compile(quantity)


# Inside a bytes literal an escape (`\x01`, `\n`) is one token, so its hex digits never
# join the digits that follow it.
_BYTES_TOKEN = re.compile(rf"\\x[0-9a-fA-F]{{2}}|\\.|(?<!\d)(?P<grouped>{_GROUPED})|\d{{5,}}")

_SASL_BYTES = re.compile(
    r"(SaslAuthenticateRequest\w*\(sasl_auth_bytes=)"  # aiokafka's DEBUG line of a login
    r"b(['\"])(?:(?!\2)[^\\]|\\.)*\2"
)
REDACTED = "****"

_FORMATTER = logging.Formatter()
_lock = threading.Lock()
_report_lock = threading.Lock()
_state: dict[str, Any] = {
    "installed": False,
    "mask": True,
    "secrets": (),
    "names": None,  # (pattern, longest name) or None: one value, swapped whole
}


def _mask_bytes_token(match: re.Match[str]) -> str:
    token = match.group(0)
    if match.group("grouped") is not None:  # a payload's `"msisdn": "138 0013 8001"`
        return _mask_grouped(token)
    return token if token.startswith("\\") else mask_msisdn(token)


def _mask_digits(match: re.Match[str]) -> str:
    return mask_msisdn(match.group(0))


def _mask_id_item(match: re.Match[str]) -> str:
    if (quote := match.group("open")) is not None:
        return f"{quote}{mask_msisdn(match.group('digits'))}{quote}"
    if (grouped := match.group("grouped")) is not None:
        return _mask_grouped(grouped)
    return mask_msisdn(match.group(0))


_SEVEN_DIGITS = re.compile(r"\d{7}")


def _mask_more_item(match: re.Match[str]) -> str:
    if (quantity := match.group("unit")) is not None:  # a duration or a size
        # as free text reads it: 7 digits or more masked (a line's thousand read apart)
        return mask_text(quantity) if _SEVEN_DIGITS.search(quantity) else quantity
    return _mask_id_item(match)


_URL_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_URL_ESCAPE_TWICE = re.compile(r"%(?:25){0,2}[0-9A-Fa-f]{2}")
"""A URL's escape, once or twice escaped again: `%2B`, `%252B`, `%25252B`."""


def _escape_start(text: str, start: int) -> int:
    """Where the URL's escape that ends at `start` starts (`%2B`, `%252B` of
    `q=%252B8613800138001`), or `start` where none ends there: its hex digits are none of
    a hex string's."""
    for length in (3, 5, 7):
        if start >= length and _URL_ESCAPE_TWICE.fullmatch(text, start - length, start):
            return start - length
    return start


def _mask_grouped(number: str) -> str:
    """A number written in groups masked as one (`+86 138 0013 8001` -> `861******8001`)."""
    return mask_msisdn("".join(c for c in _URL_ESCAPE.sub("", number) if c.isdigit()))


def _with_lead_masked(match: re.Match[str], key: str, lead: str) -> str:
    """The id's name and what follows it up to its ids, the quantities after a joining
    word read as free text reads them (`msisdns for 1234567 ms, 97531`)."""
    text, quantities = match.group(key), match.group(lead)
    if quantities is None or not _SEVEN_DIGITS.search(quantities):
        return text
    at = match.start(lead) - match.start(key)
    return text[:at] + mask_text(quantities) + text[at + len(quantities) :]


def _mask_match(match: re.Match[str]) -> str:
    if match.group("body") is not None:
        quote, body = match.group("q"), match.group("body")
        if _state["names"] is None:
            return f"b{quote}{_BYTES_TOKEN.sub(_mask_bytes_token, body)}{quote}"
        at = match.start("body")

        def token(found: re.Match[str]) -> str:  # a configured name's digits stay
            masked = _mask_bytes_token(found)  # an escape (`\x00`) as it is: no name looked up
            if masked != found.group(0) and _in_name(
                match.string, at + found.start(), at + found.end()
            ):
                return found.group(0)
            return masked

        return f"b{quote}{_BYTES_TOKEN.sub(token, body)}{quote}"
    if match.group("container") is not None:  # every id inside, whatever else it holds
        items = _item_patterns()[0]
        key = _with_lead_masked(match, "ckey", "clead")
        if _state["names"] is None:
            return key + items.sub(_mask_id_item, match.group("container"))
        at = match.start("container")

        def item(found: re.Match[str]) -> str:  # a configured name's digits stay
            if _in_name(match.string, at + found.start(), at + found.end()):
                return found.group(0)
            return _mask_id_item(found)

        return key + items.sub(item, match.group("container"))
    if match.group("value") is not None:
        first, more = _item_patterns()
        key = _with_lead_masked(match, "key", "lead")
        masked = first.sub(_mask_id_item, match.group("value"))
        return key + masked + more.sub(_mask_more_item, match.group("more"))
    if match.group("setting") is not None:  # a setting's value, a duration, a size, a count
        return _setting_value(match)
    if match.group("uuid") is not None:  # a task's, a member's, a request's: no one's number
        return match.group(0)
    if _in_name(match.string, match.start(), match.end()):
        return match.group(0)
    if (spaced := match.group("spaced")) is not None:  # a number written in groups
        if match.group("glued") is not None:
            if _glued_to_hex(match.string, match.start()):
                # its first digit a hex string's: what follows read again without it
                # (`9f8e7d6c5b4a1-13800138001` masks the run of digits)
                return spaced[0] + _masked_span(match.string, match.start() + 1, match.end())
            # the word's own digits are no country code: `v2 138 0013 8001` (the rest read
            # where it stands, its look-backs seeing the word: `v2 612 345 678`)
            head = _GLUED_HEAD.match(spaced)
            if head is not None and _grouped_pattern().fullmatch(
                match.string, match.start() + head.end(), match.end()
            ):
                return head.group(0) + _mask_grouped(spaced[head.end() :])
        if match.group("afterdot") is not None and not _in_name(
            match.string, match.start() - 2, match.start() - 1
        ):  # a decimal fraction's first digit: what follows read again without it
            return spaced[0] + _masked_span(match.string, match.start() + 1, match.end())
        return _mask_grouped(spaced)
    if match.group("fraction") is not None and not _in_name(
        match.string, match.start() - 2, match.start() - 1
    ):  # a decimal fraction's digits, but after a name's last digit and a dot a number's
        return match.group(0)
    found = match.group(0)
    if match.group("long") is not None and (
        _in_hex(match.string, match.start(), match.end())
        or (len(found) >= THREAD_ID_DIGITS and found in _thread_ids())
    ):
        return found
    return mask_msisdn(found)


def _setting_value(match: re.Match[str]) -> str:
    """A setting's or a quantity's value as it is (`offset=48213377`), unless it is the
    first group of a number written in groups (`offset=138 0013 8001`, `took_ms=86 138
    0013 8001`): that number is masked as one; the groups after a value that starts
    none are read as free text reads them (`offset=48213377 13800138001`)."""
    rest = match.group("srest")
    if rest is None:
        return match.group(0)
    text, name, end = match.string, match.group("setting"), match.end()
    grouped = _grouped_pattern().match(text, match.start("svalue"), end)
    if grouped is not None and grouped.end() > match.end("svalue"):
        return name + _mask_grouped(grouped.group(0)) + _masked_span(text, grouped.end(), end)
    return name + match.group("svalue") + _masked_span(text, match.start("srest"), end)


_GLUED_HEAD = re.compile(rf"\d{{1,3}}{_GROUP_SEPARATOR}")
"""The digits a word ends with, and a space or dash: `v2 ` of `v2 138 0013 8001`."""


@functools.cache
def _grouped_pattern() -> re.Pattern[str]:
    """A number written in groups (`_GROUPED`), built at the first number glued to a word."""
    return re.compile(_GROUPED)


def _glued_to_hex(text: str, start: int) -> bool:
    """Whether the number in groups at `start`, glued to a word, ends a hex string (a hex
    letter before it and a digit past the letters: `commit 9f8e7d6c5b4a392 1706 5443`)
    rather than a word (`id138-0013-8001`, `user_138 0013 8001`: masked) or a URL's
    escape (`%252B86 138 0013 8001`, a `+` escaped twice)."""
    if _escape_start(text, start) != start:
        return False
    return _hex_letter(text, start - 1) and _digit_past_letters(text, start - 1, -1)


def _masked_span(text: str, start: int, end: int) -> str:
    """`text[start:end]` masked as the text pattern reads it in `text` (what stands before
    `start` seen by its look-backs)."""
    pattern, parts, at = _patterns()[0], [], start
    for found in pattern.finditer(text, start, end):
        parts += [text[at : found.start()], _mask_match(found)]
        at = found.end()
    parts.append(text[at:end])
    return "".join(parts)


def _in_name(text: str, start: int, end: int) -> bool:
    """Whether `text[start:end]` lies within one of the configured names
    (`install_pii_masking(names=)`) written there."""
    configured: tuple[re.Pattern[str], int] | None = _state["names"]
    if configured is None:
        return False
    names, reach = configured
    for found in names.finditer(text, max(0, start - reach), min(len(text), end + reach)):
        if found.start() <= start and end <= found.end():
            return True
    return False


def _names_pattern(names: tuple[str, ...] | list[str]) -> re.Pattern[str] | None:
    """The configured names the masker would touch, longest first, a digit at either end
    not glued to more digits (`moments-202612071` is a number), a letter there glued to
    anything (`13800138001t495161564fa`: the name after the number is still one); a name
    without a letter is none (an app id of digits alone could equal a subscriber's
    number)."""
    touched = {
        name
        for name in names
        if any(c.isalpha() for c in name)
        and (
            _patterns()[0].sub(_mask_match, name) != name
            # in a bytes literal a run of 5 digits is masked too (`b'moments-12345'`)
            or _BYTES_TOKEN.sub(_mask_bytes_token, name) != name
        )
    }
    kept = sorted(touched, key=len, reverse=True)
    if not kept:
        return None
    return re.compile(
        "|".join(
            ("(?<!\\d)" if name[0].isdigit() else "")
            + re.escape(name)
            + ("(?!\\d)" if name[-1].isdigit() else "")
            for name in kept
        )
    )


_HEX_LETTERS = frozenset("abcdefABCDEF")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _in_hex(text: str, start: int, end: int) -> bool:
    """Whether the digits `text[start:end]` are part of a hex string (a task id, a trace
    id, a git sha, a topic's `t8094743d2f`): a hex letter beside them, and a digit beyond
    the letters on either side, as a hex string mixes digits and letters through its
    length. A number with nothing but letters beside it up to the word's ends is one
    glued to a word: `8613800138000abc`, `id13800138000`, `abc8613800138000def` are
    masked. The price, in
    random hex ids (100,000 of each length, 2026-12-07): of 8 to 12 hex digits (a short
    sha) 1.5-2.8% more are masked (0.4-2.4% were, a run of 7 digits or more alone), of 16
    (a span id) 0.26% more, of 32 or 40 (a trace id, a task id, a sha) none more. Leaving
    letters on both sides alone cut 16's only to 0.16% more: the shape is the glued
    number's. The hex digits of a URL's escape before them are none of the string's
    (`%2A8613800138000abc`). Nor is a run of 10 digits or more in a hex string of 13 to 15
    characters (`_HEX_ID_GAP`), no hex id's length: `8613800138000a1` is masked."""
    before = _escape_start(text, start)
    if not (_hex_letter(text, before - 1) or _hex_letter(text, end)):
        return False
    if not (_digit_past_letters(text, before - 1, -1) or _digit_past_letters(text, end, 1)):
        return False
    low, high = _HEX_ID_GAP
    if not _GLUED_RUN <= end - start <= high:
        return True
    # the string's length read no further than the gap's end: read to the string's ends,
    # a line of hex of 100 kB with a run of digits in every 8 characters took 65 s
    first, last = before, end
    while first > 0 and before - first <= high and text[first - 1] in _HEX:
        first -= 1
    while last < len(text) and last - end <= high and text[last] in _HEX:
        last += 1
    return not low <= (before - first) + (last - start) <= high


_HEX_ID_GAP = (13, 15)
"""Hex strings of 13 to 15 characters hold no hex id's digits: a short sha has 7 to 12, a
span id 16, a trace or task id 32, a sha 40 or 64."""
_GLUED_RUN = 10
"""A run of this many digits or more in a hex string of 13 to 15 characters is a number
glued to a word that happens to end in a digit (`8613800138000a1`, `8613800138a1b2`): a
national number's length. A shorter run stays: of random hex strings of 13 to 15
characters (20,000 of each length, 2026-12-07), a run of 7 digits or more took 12-15% of
them, one of 10 or more takes 2.1-2.8%; of the other lengths (7 to 12, 16, 20, 32, 40)
as many as before."""
_HEX = frozenset("0123456789abcdefABCDEF")


def _hex_letter(text: str, index: int) -> bool:
    """Whether `text[index]` is a hex letter, none of a configured name's."""
    return (
        0 <= index < len(text)
        and text[index] in _HEX_LETTERS
        and not _in_name(text, index, index + 1)
    )


def _digit_past_letters(text: str, index: int, step: int) -> bool:
    """Whether a digit follows the ASCII letters from `text[index]` on, going by `step`,
    none of a configured name's (`install_pii_masking(names=)`): a number glued to a
    name is glued to a word (`t495161564fa13800138001` showed whole, the prefix's letters
    and digits read as a hex string's)."""
    while 0 <= index < len(text) and text[index] in _LETTERS:
        index += step
    return (
        0 <= index < len(text)
        and text[index].isdigit()
        and text[index].isascii()
        and not _in_name(text, index, index + 1)
    )


THREAD_ID_DIGITS = 10
"""Shorter numbers are never looked up as thread ids (a CPython thread's ident is the
address of its pthread: 15 digits on 64-bit Linux)."""


def _thread_ids() -> set[str]:
    """The idents of the process's threads, as text: a stack dump (SIGUSR1, mode's `cry`)
    names each thread by it (`<Thread(metrics, started daemon 140...)>`, `'tid': 140...`).
    Not a person's number: left as it is, so the threads of a dump can be told apart."""
    return {str(t.ident) for t in threading.enumerate() if t.ident is not None}


_DIGIT = re.compile(r"\d")
"""A digit, as the text pattern reads one (any script's): a line without one has nothing
to mask."""


def mask_text(text: str) -> str:
    """`text` with every subscriber-id-shaped number masked (see the module docstring).
    A line without a digit is returned as it is, the text pattern not run: it tried each
    of its alternatives at every letter (one search for a digit costs a small part of that,
    and most lines of a running worker have none)."""
    if _DIGIT.search(text) is None:
        return text
    return _patterns()[0].sub(_mask_match, text)


def redact_secrets(text: str, secrets: tuple[str, ...]) -> str:
    """`text` without SASL payloads and without any of `secrets` (as written or as they
    appear inside a bytes literal)."""
    text = _SASL_BYTES.sub(rf"\1{REDACTED}", text)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def _secret_forms(secrets: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    forms = {s for s in secrets if s} | {repr(s.encode())[2:-1] for s in secrets if s}
    return tuple(sorted(forms, key=len, reverse=True))  # longest first: no half-redactions


def clean_text(text: str) -> str:
    """What a log line may show: secrets redacted, subscriber ids masked (unless turned off)."""
    text = redact_secrets(text, _state["secrets"])
    return mask_text(text) if _state["mask"] else text


_ID_STRING = re.compile(r"\d{5,}")
_MAX_DEPTH = 20
_SEVEN_DIGITS_AT_LEAST = 1_000_000
"""Deeper than this a structured value is cleaned as its repr (which also stops at cycles)."""


def clean_data(value: Any, field: object = None, depth: int = 0) -> Any:
    """A structured log value (a dict logged as the message, an `extra=`) cleaned as a
    message is, at any depth: strings and keys as text (a string of 5 digits or more as a
    quoted one), whole numbers an id's length masked as they would be in text, any value
    under an id field name masked whatever its length (a float's too), a whole number held
    as a float (`13800138001.0`) as the int it is, and other objects (bytes,
    exceptions, models) by their text. JSON's own types stay what they are otherwise, so
    a count is still a number."""
    if (
        _state["mask"]
        and isinstance(field, str)
        and _ID_FIELD.search(field)
        and not _ID_COUNT.search(field)  # `msisdn_count`: a count, never an id
        and isinstance(value, str | int | bytes | float)
        and not isinstance(value, bool)  # a flag (`has_msisdn`), never an id
    ):
        if isinstance(value, float) and value.is_integer():  # an id read as a float
            value = int(value)
        number = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        return mask_msisdn(number)
    if isinstance(value, float) and value.is_integer() and abs(value) >= _SEVEN_DIGITS_AT_LEAST:
        # a whole number of 7 digits or more held as a float (an id read from a float
        # column: `13800138001.0`), cleaned as the int it is; a duration or a timestamp has
        # a fraction and stays
        return clean_data(int(value), field, depth)
    if value is None or isinstance(value, bool | float | datetime.date | datetime.time):
        return value
    if isinstance(value, int) and isinstance(field, str) and _patterns()[1].fullmatch(field):
        return value
    if isinstance(value, int):
        text = str(value)
        cleaned = clean_text(text)
        return value if cleaned == text else cleaned
    if isinstance(value, str):
        if _state["mask"] and _ID_STRING.fullmatch(value):  # quoted in a message: masked
            return mask_msisdn(value)
        return clean_text(value)
    if depth >= _MAX_DEPTH:
        return clean_text(repr(value))
    if isinstance(value, dict):
        return {_clean_key(k): clean_data(v, k, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [clean_data(v, field, depth + 1) for v in value]  # what the name holds
    if isinstance(value, bytes | bytearray):
        return clean_text(repr(bytes(value)))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return clean_data(dataclasses.asdict(value), None, depth + 1)
    if callable(getattr(value, "model_dump", None)):  # a pydantic model
        return clean_data(value.model_dump(mode="json"), None, depth + 1)
    if isinstance(value, BaseException):
        return clean_text(f"{type(value).__name__}: {value}")
    return clean_text(str(value))


def _clean_key(key: Any) -> Any:
    cleaned = clean_data(key) if isinstance(key, str | int) else clean_text(str(key))
    return key if cleaned == key else cleaned


def _mask_extra(record: logging.LogRecord) -> None:
    for name in ID_FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            record.__dict__[name] = mask_msisdn(str(value))


class MaskedLogRecord(logging.LogRecord):
    """A record whose message and `extra=` ids are masked when it is formatted (not
    before: records that no handler emits cost nothing more). Logging sets the extras
    after the record factory returns, and every formatter asks for the message first."""

    def getMessage(self) -> str:  # noqa: N802 - logging's name
        if _state["mask"]:
            _mask_extra(self)
        return clean_text(super().getMessage())


def mask_record(record: logging.LogRecord) -> None:
    """Clean the record's message when formatted, and its traceback and stack now."""
    if type(record) is logging.LogRecord:
        record.__class__ = MaskedLogRecord
    else:  # another library's record class: render it now
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to logging's own error report
            return
        record.msg, record.args = clean_text(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = clean_text(_FORMATTER.formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = clean_text(record.exc_text)
    if record.stack_info:
        record.stack_info = clean_text(record.stack_info)


def install_pii_masking(
    mask: bool = True,
    secrets: tuple[str, ...] | list[str] = (),
    names: tuple[str, ...] | list[str] = (),
) -> None:
    """From now on mask subscriber numbers (unless `mask` is False) and redact `secrets` (the
    configured passwords) and SASL payloads in all log records; the digits of `names` (the
    app id, topic prefix and topic names: `Settings.log_names`) stay as written."""
    with _lock:
        _state["mask"] = mask
        _state["secrets"] = _secret_forms(secrets)
        _state["names"] = None  # the pattern is worked out by the masker itself
        # Not masking (MOMENTS_LOG_PII): no pattern to build (the masker's first build
        # costs ~65 ms of CPU).
        pattern = _names_pattern(names) if mask else None
        if pattern is not None:
            _state["names"] = (pattern, max(len(n) for n in names))
        if _state["installed"]:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            mask_record(record)
            return record

        logging.setLogRecordFactory(factory)
        report = logging.Handler.handleError

        def handle_error(self: logging.Handler, record: logging.LogRecord) -> None:
            print_error_report(report, self, record)

        logging.Handler.handleError = handle_error  # type: ignore[method-assign]
        # A command's uncaught exception: Python prints its traceback to stderr itself.
        if sys.excepthook is sys.__excepthook__:
            sys.excepthook = _clean_excepthook
        if threading.excepthook is threading.__excepthook__:
            threading.excepthook = _clean_thread_excepthook
        _state["installed"] = True


def add_secret(secret: str) -> None:
    """Redact `secret` too from now on: a password read again while the process runs (a
    rotated Redis password file, `moments.redislogin`)."""
    with _lock:
        _state["secrets"] = _secret_forms([*_state["secrets"], secret])


MAIN_THREAD = "the main thread"


def _clean_excepthook(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    if not _logged_as_json(MAIN_THREAD, kind, exc, tb):
        _cleaned_stderr(lambda: sys.__excepthook__(kind, exc, tb))


def _clean_thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:  # silent, as Python's own
        _cleaned_stderr(lambda: threading.__excepthook__(args))
        return
    where = f"thread {args.thread.name}" if args.thread is not None else "a thread"
    if not _logged_as_json(where, args.exc_type, args.exc_value, args.exc_traceback):
        _cleaned_stderr(lambda: threading.__excepthook__(args))


def _logged_as_json(
    where: str, kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> bool:
    """Where the log is JSON (`MOMENTS_LOG_FORMAT=json`: the root's handlers format with
    `CleanJsonFormatter`), an uncaught exception as one CRITICAL record, its traceback in
    the `exception` field: Python's plain lines were split by a log collector into one
    entry each. False where the log is text (Python's traceback is printed then).

    Handed to the root logger itself: a logger below it may have been disabled by a
    later logging set-up (Faust's)."""
    from moments.logformat import CleanJsonFormatter  # that module imports this one

    root = logging.getLogger()
    if not any(isinstance(h.formatter, CleanJsonFormatter) for h in root.handlers):
        return False
    then = "; the process stops" if where == MAIN_THREAD else ""
    record = logging.getLogger("moments").makeRecord(
        "moments",
        logging.CRITICAL,
        "",
        0,
        "uncaught %s in %s: %s%s",
        (kind.__name__, where, exc, then),
        (kind, exc, tb),
    )
    root.handle(record)
    return True


def _cleaned_stderr(write: Callable[[], object]) -> None:
    """What `write` prints to stderr, cleaned (secrets redacted, numbers masked)."""
    buffer = io.StringIO()
    with _report_lock, contextlib.redirect_stderr(buffer):
        write()
    if text := buffer.getvalue():
        with contextlib.suppress(OSError, ValueError):  # stderr closed: say nothing, as Python
            sys.stderr.write(clean_text(text))


def print_error_report(
    report: Callable[[logging.Handler, logging.LogRecord], None],
    handler: logging.Handler,
    record: logging.LogRecord,
) -> None:
    """Logging's report of a handler that failed on a record (a format string its
    arguments do not fit, a closed stream), cleaned: it prints the record's format string
    and arguments as they are, the exception the record carried and the call stack's
    source lines to stderr, past the masking of the formatted message."""
    _cleaned_stderr(lambda: report(handler, record))
