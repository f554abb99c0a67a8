r"""``redact``: find secrets in string fields and mask them, or replace them by a keyed hash.

Built-in patterns (``patterns:``), tried in one combined regex per string:

==================  ============================================================
``bearer_token``    the token after ``Bearer`` (the word stays)
``aws_access_key``  ``AKIA``/``ASIA``/``ABIA``/``ACCA`` + 16 upper-case letters or digits
``jwt``             ``eyJ...``.``eyJ...``.``...`` (header, payload, signature)
``credit_card``     13 to 19 digits, spaces or dashes between, passing the Luhn check
``email``           ``local@domain.tld``
==================  ============================================================

plus ``regex:`` (one or a list; the whole match is the secret). ``fields:`` limits the search
to the named fields; unset, every string field is searched. Strings inside lists and maps (a
JSON array of strings, a map of headers, a list of maps, at any depth) are searched too,
with or without ``fields:``; map keys are names, not searched. ``mode: mask`` replaces a
secret with ``[REDACTED:<pattern>]``; ``mode: hash`` with ``[hmac:<16 hex digits>]``, the HMAC-SHA256
of the secret under the key in ``hash_key_file`` (read once at start), so the same secret maps
to the same text in every record and on every shipper with that key, and records can still be
correlated without the secret being readable. Each redaction is counted per pattern
(``redacted.jwt``, ``redacted.regex.1``...).

A batch is scanned once: the values searched in each record are encoded by msgspec as one JSON
line per record (one C call for the batch), folded (case, and digits for card numbers) by one
``bytes.translate``, and each pattern's needles looked for in that (``@`` for email, ``eyj`` for
a JWT, a run of 13 digits or separators for a card...); only a record a needle falls in is
searched field by field with the patterns' regex. The JSON holds every string of the record,
at any depth, so nested values cost nothing more; numbers, map keys and the base64 of bytes
are in it too and can only make a record a suspect for nothing. When msgspec refuses a batch
(a value of a type it does not know, a lone surrogate, nesting deeper than its limit), the
batch is scanned the slower way: each record's strings joined, collected by a walk when a
list or a map holds them.

Why the JSON hides no secret: msgspec escapes only ``"``, ``\`` and control characters, and
a needle is made of letters (or ``@``), so it is in the JSON as it is in the string. A card
number is digits, spaces and dashes, none of them escaped, so its run is there too, and the
look-ahead after it still sees no digit (an escape begins with ``\``, a string ends with
``"``). Only its look-behind can change: ``\"``, ``\\``, ``\b``, ``\t``, ``\n``, ``\f`` and
``\r`` end, like the character they stand for, in something that is neither a digit nor a
dash, but ``\u00XX`` (the other control characters) may end in a digit (``\u0001``), whose
``00XX`` then joins the card's run. Such a run always begins right after ``\u``, and one that
does makes its record a suspect without the Luhn check.

``log.file.id``, the identity of a tailed file's bytes that sidekick sets (device, inode,
fingerprint), is never searched: it is no user data, and its hex fingerprint holds digit runs
that could pass the Luhn check. In the JSON scan its value is blanked where it stands whole.

Nested values are never changed in place: the records of two branches may share a list or a
map (the graph copies records, not their values), so a list or map holding a secret is replaced
by a copy (and so is each container on the way down to it); one without a secret stays the
same object. The walks use a stack of their own, so no depth is too deep.

Left out: secrets in map keys, and patterns for other providers' keys (add them as
``regex:``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate, repeat
from pathlib import Path
from typing import Any, Literal

import msgspec

from sidekick.core.errors import ConfigError
from sidekick.ship.records import FILE_ID
from sidekick.ship.transforms.base import DEFAULT, BaseTransform, Record

BUILTIN: dict[str, str] = {
    # Group "v" is the secret; without it the whole match is.
    "bearer_token": r"(?i:\bbearer)[ \t]+(?P<v>[A-Za-z0-9\-._~+/]{8,}=*)",
    "aws_access_key": r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
    "jwt": r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    "credit_card": r"(?<![0-9-])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])",
    "email": r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
}
# Cheap tests a record must pass before the patterns' regexes are worth running on it, made
# once per batch: the batch's JSON lines (see the module docstring) are folded by one
# bytes.translate (A-Z to a-z; digits, spaces and dashes to "0", so a card number, 13+ digits
# with separators, is a run of 13 "0"), and each pattern's needles are looked for in it with
# bytes.find. Most log lines contain no "@", no "eyj", no "bearer", so most batches cost a few
# scans of their text at memchr speed, and only the records a needle falls in are searched
# field by field. Runs of 13 digits are common in logs (ids, epoch milliseconds), so a run
# only counts when the card pattern matches in it, in the unfolded text at the same offsets,
# with a Luhn check. A user regex has no needle: with one, every record is searched.
_FOLD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -", b"abcdefghijklmnopqrstuvwxyz" + b"0" * 12
)
NEEDLES: dict[str, tuple[bytes, ...]] = {
    "bearer_token": (b"bearer",),
    "aws_access_key": (),  # RAW_NEEDLES below
    "jwt": (b"eyj",),
    "credit_card": (),  # RUN and CARD below
    "email": (b"@",),
}

# Needles looked for in the text as it is, by a regex: the access-key pattern is case-sensitive,
# so its four prefixes are one search for an upper-case "A" (rare in logs) and what follows,
# about a seventh of the cost of four bytes.find calls in the folded text.
RAW_NEEDLES: dict[str, re.Pattern[bytes]] = {
    "aws_access_key": re.compile(rb"A(?:KIA|SIA|BIA|CCA)"),
}

RUN = b"0" * 13
NOT_ZERO = re.compile(b"[^0]")
CARD = re.compile(BUILTIN["credit_card"].encode())
ESCAPE = b"\\u"  # a run right after it may have begun with the digits of an escape

# What msgspec raises for a batch it cannot encode: a value of a type it does not know or a map
# key that is neither a string nor a number (TypeError), a lone surrogate (UnicodeEncodeError,
# a ValueError), nesting deeper than its limit (RecursionError).
_encode = msgspec.json.encode
_UNENCODABLE = (msgspec.EncodeError, TypeError, ValueError, OverflowError, RecursionError)

# The value types a record is searched in: strings, and lists and maps that may hold some.
_SEARCHED = frozenset((str, list, dict))


def strings_in(values: list[Any]) -> list[str]:
    """Every string in ``values`` and in the lists and maps among them, at any depth."""
    out: list[str] = []
    stack = values[::-1]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str:
            out.append(v)
        elif t is list:
            stack.extend(v)
        elif t is dict:
            stack.extend(v.values())
    return out


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# A list or map met in a walk: (its parent's node, its key there, the container itself).
_Node = tuple[Any, Any, Any]


class RedactOptions(msgspec.Struct, forbid_unknown_fields=True):
    patterns: list[str] = []  # built-in pattern names
    regex: str | list[str] = []  # user patterns; the whole match is the secret
    fields: list[str] | None = None  # fields to search; unset: every string field
    mode: Literal["mask", "hash"] = "mask"
    hash_key_file: str | None = None  # file holding the HMAC key; required for mode: hash


class RedactTransform(BaseTransform):
    kind = "redact"
    Options = RedactOptions

    def __init__(self, name: str, options: RedactOptions) -> None:
        super().__init__(name, options)
        where = f"transform {name!r} (redact)"
        regexes = [options.regex] if isinstance(options.regex, str) else list(options.regex)
        if not options.patterns and not regexes:
            raise ConfigError(
                f"{where}: no patterns; give patterns: [{', '.join(BUILTIN)}] or regex: '...'"
            )
        parts: list[str] = []
        self.groups: dict[str, str] = {}  # regex group name -> pattern name
        self.needles: list[bytes] | None = []  # None: a user regex, every record is searched
        self.raw_needles: list[re.Pattern[bytes]] = []
        self.cards = False  # whether to look for card numbers
        for pattern in options.patterns:
            if pattern not in BUILTIN:
                raise ConfigError(
                    f"{where}: patterns: {pattern!r} is not a built-in pattern; "
                    f"use {', '.join(BUILTIN)}, or regex: for your own"
                )
            group = f"p{len(parts)}"
            parts.append(f"(?P<{group}>{BUILTIN[pattern].replace('?P<v>', f'?P<{group}v>')})")
            self.groups[group] = pattern
            self.needles.extend(n for n in NEEDLES[pattern] if n not in self.needles)
            if pattern in RAW_NEEDLES:
                self.raw_needles.append(RAW_NEEDLES[pattern])
            self.cards = self.cards or pattern == "credit_card"
        for i, text in enumerate(regexes, 1):
            try:
                re.compile(text)
            except re.error as exc:
                raise ConfigError(
                    f"{where}: regex {text!r} does not compile ({exc}); fix the pattern"
                ) from None
            group = f"p{len(parts)}"
            parts.append(f"(?P<{group}>(?:{text}))")
            self.groups[group] = f"regex.{i}"
            self.needles = None
        try:
            self.regex = re.compile("|".join(parts))
        except re.error as exc:  # a user pattern with named groups that clash
            raise ConfigError(
                f"{where}: regex patterns cannot be combined ({exc}); remove named groups"
            ) from None
        self.fields = options.fields
        self.replace: Callable[[str, str], str]
        if options.mode == "hash":
            if options.hash_key_file is None:
                raise ConfigError(
                    f"{where}: mode: hash needs hash_key_file:, a file holding the HMAC key"
                )
            try:
                key = Path(options.hash_key_file).read_bytes().strip()
            except OSError as exc:
                raise ConfigError(
                    f"{where}: hash_key_file {options.hash_key_file!r} cannot be read "
                    f"({exc.strerror}); point it at a readable file holding the key"
                ) from None
            if not key:
                raise ConfigError(
                    f"{where}: hash_key_file {options.hash_key_file!r} is empty; put a key in it"
                )
            self.replace = lambda secret, pattern: (
                "[hmac:"
                + hmac.new(
                    key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256
                ).hexdigest()[:16]
                + "]"
            )
        else:
            self.replace = lambda secret, pattern: f"[REDACTED:{pattern}]"
        self._per_pattern: dict[str, int] = {}
        self._encode_lines = msgspec.json.Encoder().encode_lines

    def _sub(self, m: re.Match[str]) -> str:
        group = m.lastgroup
        assert group is not None
        pattern = self.groups[group]
        whole = m.group()
        if pattern == "credit_card" and not luhn_ok(whole.replace(" ", "").replace("-", "")):
            return whole
        start = m.start()
        inner = group + "v"
        if inner in self.regex.groupindex and m.group(inner) is not None:
            lo, hi = m.span(inner)
            secret = m.group(inner)
            out = whole[: lo - start] + self.replace(secret, pattern) + whole[hi - start :]
        else:
            out = self.replace(whole, pattern)
        self._per_pattern[pattern] = self._per_pattern.get(pattern, 0) + 1
        return out

    def _scrub(self, value: list[Any] | dict[str, Any]) -> list[Any] | dict[str, Any]:
        """``value`` with the secrets of its strings replaced, at any depth: the same object
        if it holds none, else a copy (as is every list or map on the way to a change)."""
        search = self.regex.search
        sub = self.regex.sub
        replace = self._sub
        # A node is (parent node, key in the parent, container); changes are (node, key, text).
        root: _Node = (None, None, value)
        changes: list[tuple[_Node, Any, str]] = []
        stack = [root]
        while stack:
            node = stack.pop()
            container = node[2]
            items = container.items() if type(container) is dict else enumerate(container)
            for k, v in items:
                t = type(v)
                if t is str:
                    if search(v) is not None:
                        new = sub(replace, v)
                        if new != v:
                            changes.append((node, k, new))
                elif t is list or t is dict:
                    stack.append((node, k, v))
        if not changes:
            return value
        copies: dict[int, Any] = {}  # id(node) -> its container's copy

        def writable(node: _Node) -> Any:
            # The chain up to the nearest node already copied (or the root), copied downwards.
            chain: list[_Node] = []
            n: _Node | None = node
            while n is not None and id(n) not in copies:
                chain.append(n)
                n = n[0]
            for n in reversed(chain):
                parent, key, container = n
                c = container.copy()
                if parent is not None:
                    copies[id(parent)][key] = c
                copies[id(n)] = c
            return copies[id(node)]

        for node, key, new in changes:
            writable(node)[key] = new
        out: list[Any] | dict[str, Any] = copies[id(root)]
        return out

    def _suspects(self, records: list[Record]) -> list[Record]:
        """The records some pattern's needle falls in, in order (a superset of those holding a
        secret), found in the batch's JSON lines; with a user regex, or when the batch has a
        value msgspec refuses, the records :meth:`_suspects_each` gives."""
        needles = self.needles
        if needles is None:
            return self._suspects_each(records)
        fields = self.fields
        try:
            if fields is None:
                raw = self._encode_lines(map(tuple, map(dict.values, records)))
            else:  # one column per field, zipped into rows
                raw = self._encode_lines(
                    zip(*[list(map(dict.get, records, repeat(k))) for k in fields], strict=True)
                )
        except _UNENCODABLE:
            return self._suspects_each(records)
        # The file identities of the batch (mostly one), blanked where a JSON string is one
        # whole: inside another string its quotes would be escaped.
        for file_id in set(map(dict.get, records, repeat(FILE_ID))):
            if type(file_id) is str:
                token = _encode(file_id)
                raw = raw.replace(token, b'"' + b"_" * (len(token) - 2) + b'"')
        folded = raw.translate(_FOLD)
        find = folded.find
        hits: list[int] = []  # byte offsets in raw; record i is line i
        for needle in needles:
            at = find(needle)
            while at >= 0:
                hits.append(at)
                # JSON escapes newlines, so the next one ends this record's line.
                at = find(needle, find(b"\n", at))
        for raw_needle in self.raw_needles:
            m = raw_needle.search(raw)
            while m is not None:
                hits.append(m.start())
                m = raw_needle.search(raw, find(b"\n", m.start()))
        if self.cards:
            card = CARD.search
            # bytes.find is fast where a regex for the run would try every "0" it meets; the
            # first 13 "0" found after the end of the last run begin a new run.
            start = find(RUN)
            while start >= 0:
                after = NOT_ZERO.search(folded, start)
                end = len(folded) if after is None else after.start()
                if raw[start - 2 : start] == ESCAPE:
                    hits.append(start)
                else:
                    at = start
                    while (m := card(raw, at, end)) is not None:
                        if luhn_ok(m.group().replace(b" ", b"").replace(b"-", b"").decode()):
                            hits.append(start)
                            break
                        at = m.end()
                start = find(RUN, end)
        # A hit's record is the number of lines before it, counted from the previous hit.
        suspects: list[Record] = []
        line = -1
        k = counted = 0
        count = raw.count
        for at in sorted(hits):
            k += count(b"\n", counted, at)
            counted = at
            if k != line:
                suspects.append(records[k])
                line = k
        return suspects

    def _suspects_each(self, records: list[Record]) -> list[Record]:
        """The records some pattern's needle falls in (every record with a string, with a user
        regex), in order, found in their strings joined record by record."""
        fields = self.fields
        searched = _SEARCHED
        owners: list[Record] = []
        texts: list[str] = []
        for r in records:
            if fields is None:
                found = [v for k, v in r.items() if type(v) in searched and k != FILE_ID]
            else:
                found = [v for k in fields if type(v := r.get(k)) in searched and k != FILE_ID]
            if not found:
                continue
            try:
                texts.append("\n".join(found))
            except TypeError:  # a list or a map among them
                texts.append("\n".join(strings_in(found)))
            owners.append(r)
        needles = self.needles
        if needles is None or not owners:
            return owners
        parts = [t.encode("utf-8", "surrogatepass") for t in texts]
        raw = b"\n".join(parts)
        folded = raw.translate(_FOLD)
        ends = list(accumulate(len(b) + 1 for b in parts))  # each text's end, past its "\n"
        hit: set[int] = set()
        for needle in needles:
            at = folded.find(needle)
            while at >= 0:
                k = bisect_right(ends, at)
                hit.add(k)
                at = folded.find(needle, ends[k])
        for raw_needle in self.raw_needles:
            m = raw_needle.search(raw)
            while m is not None:
                k = bisect_right(ends, m.start())
                hit.add(k)
                m = raw_needle.search(raw, ends[k])
        if self.cards:
            card = CARD.search
            # bytes.find is fast where a regex for the run would try every "0" it meets; the
            # first 13 "0" found after the end of the last run begin a new run.
            start = folded.find(RUN)
            while start >= 0:
                after = NOT_ZERO.search(folded, start)
                end = len(folded) if after is None else after.start()
                at = start
                while (m := card(raw, at, end)) is not None:
                    if luhn_ok(m.group().replace(b" ", b"").replace(b"-", b"").decode()):
                        hit.add(bisect_right(ends, start))
                        break
                    at = m.end()
                start = folded.find(RUN, end)
        return [owners[k] for k in sorted(hit)]

    def process(self, records: list[Record]) -> dict[str, list[Record]]:
        search = self.regex.search
        sub = self.regex.sub
        replace = self._sub
        scrub = self._scrub
        fields = self.fields
        for r in self._suspects(records):
            for k in list(r) if fields is None else fields:
                if k == FILE_ID:
                    continue
                v = r.get(k)
                if type(v) is str:
                    if search(v) is not None:
                        r[k] = sub(replace, v)
                elif type(v) is list or type(v) is dict:
                    r[k] = scrub(v)
        for pattern, n in self._per_pattern.items():
            self._add(f"redacted.{pattern}", n)
        self._per_pattern.clear()
        self._count(len(records), len(records), 0)
        return {DEFAULT: records}
