r"""Which records of a batch may hold a secret, for ``redact``: a superset of those that do,
found by tests of the whole batch, so that only they are searched field by field.

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

``log.file.id``, the identity of a tailed file's bytes that sidekick sets (device, inode,
fingerprint), is never searched: it is no user data, and its hex fingerprint holds digit runs
that could pass the Luhn check. In the JSON scan its value is blanked where it stands whole.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate, repeat
from typing import Any

import msgspec

from sidekick.ship.records import FILE_ID, Record

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


class Scan:
    """The batch test of one ``redact``: its patterns' needles over the ``fields`` searched
    (None: every field); with a user regex (``everything``), every record is a suspect."""

    def __init__(self, patterns: list[str], *, everything: bool, fields: list[str] | None):
        self.needles: list[bytes] | None = None  # None: every record is searched
        self.raw_needles: list[re.Pattern[bytes]] = []
        self.cards = "credit_card" in patterns
        if not everything:
            self.needles = []
            for pattern in patterns:
                self.needles.extend(n for n in NEEDLES[pattern] if n not in self.needles)
                if pattern in RAW_NEEDLES:
                    self.raw_needles.append(RAW_NEEDLES[pattern])
        self.fields = fields
        self._encode_lines = msgspec.json.Encoder().encode_lines

    def suspects(self, records: list[Record]) -> list[Record]:
        """The records some pattern's needle falls in, in order, found in the batch's JSON
        lines; with a user regex, or when the batch has a value msgspec refuses, the records
        :meth:`_suspects_each` gives."""
        if self.needles is None:
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
        # A hit's record is the number of lines before it, counted from the previous hit.
        suspects: list[Record] = []
        line = -1
        k = counted = 0
        count = raw.count
        for at in sorted(self._hits(raw)):
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
        if self.needles is None or not owners:
            return owners
        parts = [t.encode("utf-8", "surrogatepass") for t in texts]
        ends = list(accumulate(len(b) + 1 for b in parts))  # each text's end, past its "\n"
        # Each text ends in a newline, the last one too: a needle is looked for again after it.
        hit = {bisect_right(ends, at) for at in self._hits(b"\n".join(parts) + b"\n")}
        return [owners[k] for k in sorted(hit)]

    def _hits(self, raw: bytes) -> list[int]:
        """Offsets in ``raw`` (records' texts, one or more lines each) where a needle falls or a
        card number's run begins; after a hit, a needle is looked for again from the next line.
        """
        assert self.needles is not None
        folded = raw.translate(_FOLD)
        find = folded.find
        hits: list[int] = []
        for needle in self.needles:
            at = find(needle)
            while at >= 0:
                hits.append(at)
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
        return hits
