"""``$(VAR)`` expansion exactly as the kubelet does it for command, args and env values.

The rules (Kubernetes ``third_party/forked/golang/expansion``): ``$(NAME)`` is replaced by the
variable's value when it is defined and left as written when it is not; ``$$`` is an escaped
``$`` (so ``$$(NAME)`` yields the literal ``$(NAME)``); a ``$`` followed by anything else, or an
unterminated ``$(``, is copied unchanged. Shell syntax such as ``${NAME}`` is not expanded here
(a shell in the container does that).
"""

from __future__ import annotations

from collections.abc import Mapping


def expand(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
                continue
            name = text[i + 2 : close]
            out.append(env.get(name, f"$({name})"))
            i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)
