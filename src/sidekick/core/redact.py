"""URLs rendered without their secrets, for log lines, metric labels, errors and status pages.

Users put credentials in URLs: ``http://user:PASSWORD@host/``, ``...?token=...``,
``...&X-Amz-Signature=...``. Anything sidekick shows about a URL goes through ``redact_url``
first, which replaces the password of the user info and the value of every secret-looking
query (or fragment) parameter with ``***``; the rest stays as written so the URL still says
which destination it is. ``redact_text`` does the same for every URL inside a message, as a
last line of defence for text that was not built by us (a library's exception message).

Left out: secrets in a URL's path (``/hooks/T000/B000/XXXX``) — they cannot be told from an
ordinary path — and a user name given alone (``https://TOKEN@host``), which is kept because it
usually is a name; put tokens in files instead.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

# Query parameter names whose values are secrets, compared after lower-casing and turning
# "-" into "_". A name matches if one of its "_"-separated words is a weak word, or if it
# contains a strong word anywhere (``accessToken``, ``X-Amz-Signature``, ``apiKey``).
_WEAK_WORDS = frozenset(
    {"key", "sig", "auth", "pass", "pwd", "session", "headers", "authorization", "code"}
)
_STRONG_PARTS = (
    "token",
    "secret",
    "passw",
    "signature",
    "apikey",
    "api_key",
    "accesskey",
    "credential",
    "private",
    "bearer",
)
# Options that name a file holding a secret are not secrets themselves.
_FILE_SUFFIXES = ("_file", "_path")

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# A URL inside free text: scheme://, then everything up to white space or a quote, less the
# punctuation of the sentence around it ("cannot reach http://h/?token=x: refused").
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]*[^\s'\"<>`.,;:!?)\]]")


def is_secret_key(name: str) -> bool:
    """Whether a query parameter called ``name`` (percent-decoded) holds a secret."""
    key = name.strip().lower().replace("-", "_")
    if not key or key.endswith(_FILE_SUFFIXES):
        return False
    if any(part in key for part in _STRONG_PARTS):
        return True
    return any(word in _WEAK_WORDS for word in key.split("_"))


def _redact_pairs(text: str) -> str:
    """``a=1&token=x`` -> ``a=1&token=***`` (``&`` and ``;`` separate pairs)."""
    if "=" not in text:
        return text
    pieces = re.split(r"([&;])", text)
    for i in range(0, len(pieces), 2):
        key, sep, value = pieces[i].partition("=")
        if sep and value and is_secret_key(unquote(key)):
            pieces[i] = f"{key}={MASK}"
    return "".join(pieces)


def redact_url(url: str) -> str:
    """``url`` with the user info's password and secret query values replaced by ``***``.

    Works on text that is not a valid URL too (it never raises): whatever sits between
    ``//`` and the last ``@`` before the path is user info, and ``user:password`` keeps only
    the user.
    """
    m = _SCHEME.match(url)
    head, rest = (url[: m.end()], url[m.end() :]) if m else ("", url)
    if rest.startswith("//"):
        end = len(rest)
        for stop in "/?#":
            pos = rest.find(stop, 2)
            if pos != -1:
                end = min(end, pos)
        authority, rest = rest[2:end], rest[end:]
        at = authority.rfind("@")
        if at != -1:
            user, colon, _password = authority[:at].partition(":")
            authority = (f"{user}:{MASK}" if colon else user) + authority[at:]
        head += "//" + authority
    rest, hash_, fragment = rest.partition("#")
    path, question, query = rest.partition("?")
    out = head + path
    if question:
        out += "?" + _redact_pairs(query)
    if hash_:
        out += "#" + _redact_pairs(fragment)
    return out


def redact_text(text: str) -> str:
    """``text`` with every ``scheme://...`` URL in it passed through ``redact_url``."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
