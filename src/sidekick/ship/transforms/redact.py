"""``redact``: find secrets in string fields and mask them, or replace them by a keyed hash.

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

A batch is first tested as a whole for the records that may hold a secret
(:mod:`sidekick.ship.transforms._redact_scan`); only those are searched field by field with
the patterns' regex. ``log.file.id``, the identity sidekick gives a tailed file's bytes, is
never searched.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec

from sidekick.core.errors import ConfigError
from sidekick.ship.records import FILE_ID
from sidekick.ship.transforms._redact_scan import BUILTIN, Scan, luhn_ok
from sidekick.ship.transforms.base import DEFAULT, BaseTransform, Record

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
        for pattern in options.patterns:
            if pattern not in BUILTIN:
                raise ConfigError(
                    f"{where}: patterns: {pattern!r} is not a built-in pattern; "
                    f"use {', '.join(BUILTIN)}, or regex: for your own"
                )
            group = f"p{len(parts)}"
            parts.append(f"(?P<{group}>{BUILTIN[pattern].replace('?P<v>', f'?P<{group}v>')})")
            self.groups[group] = pattern
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
        try:
            self.regex = re.compile("|".join(parts))
        except re.error as exc:  # a user pattern with named groups that clash
            raise ConfigError(
                f"{where}: regex patterns cannot be combined ({exc}); remove named groups"
            ) from None
        self.fields = options.fields
        # A user regex has no cheap test: with one, every record is searched.
        self.scan = Scan(options.patterns, everything=bool(regexes), fields=options.fields)
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

    def process(self, records: list[Record]) -> dict[str, list[Record]]:
        search = self.regex.search
        sub = self.regex.sub
        replace = self._sub
        scrub = self._scrub
        fields = self.fields
        for r in self.scan.suspects(records):
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
