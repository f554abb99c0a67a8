"""Configuration: a YAML file, overridden by ``SIDEKICK_*`` environment, overridden by flags.

Each program declares one typed config tree (msgspec ``Struct``s with
``forbid_unknown_fields=True``). The CLI reads the file named by ``--config`` (the program's
section of it, e.g. ``ship:``), lays over it every flag or environment variable the user
actually set (click tells us the source of each value), and converts the result once. Any
mismatch becomes a ``ConfigError`` that names the field path, what was wrong and the fix.
Modules never read ``os.environ`` themselves: the tree is passed down.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from sidekick.core.errors import ConfigError

T = TypeVar("T")

_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")


def load_yaml_file(path: str | Path, *, what: str = "config file") -> Any:
    """Parse a YAML file; report syntax errors with the line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(p)!r} does not exist; check the path") from None
    except OSError as exc:
        raise ConfigError(
            f"{what} {str(p)!r} cannot be read ({exc.strerror}); check its permissions"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{what} {str(p)!r} is not valid YAML{where}: {exc.problem}; fix the syntax"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(p)!r} is not valid YAML: {exc}; fix the syntax") from None


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``dotted == "a.b"``, creating levels as needed."""
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[leaf] = value


def field_path(exc: msgspec.ValidationError) -> tuple[str, str]:
    """Split a msgspec error into ``(dotted field path, problem)``."""
    text = str(exc)
    m = _MSGSPEC_PATH.search(text)
    if not m:
        return "", text
    path = m.group(1).lstrip(".")
    path = re.sub(r"\[(\d+)\]", r"[\1]", path)
    problem = text[: m.start()]
    problem = problem.replace("`", "")
    return path, problem[0].lower() + problem[1:] if problem else problem


def build_config(
    kind: type[T],
    *,
    file: str | Path | None = None,
    section: str | None = None,
    overrides: dict[str, Any] | None = None,
    env_prefix: str = "SIDEKICK_",
) -> T:
    """Build the typed config ``kind`` from file < env < flags (``overrides`` holds both)."""
    data: dict[str, Any] = {}
    if file is not None:
        loaded = load_yaml_file(file)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(file)!r} must hold a mapping at the top level")
        if section is not None and section in loaded:
            loaded = loaded[section] or {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"config file {str(file)!r}: {section!r} must be a mapping")
        data = loaded
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    try:
        return msgspec.convert(data, kind, strict=False)
    except msgspec.ValidationError as exc:
        path, problem = field_path(exc)
        where = f"field {path!r}" if path else "the configuration"
        flag = "--" + path.split(".")[-1].replace("_", "-") if path else "the flag"
        env = env_prefix + path.replace(".", "_").upper() if path else env_prefix + "*"
        raise ConfigError(
            f"config {where}: {problem}; fix it in the config file, in {env} or with {flag}"
        ) from None
