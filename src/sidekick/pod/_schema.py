"""The first two steps of reading manifests: YAML files to documents, and a document's
schema problems.

``load_documents`` reads each file (``-`` is stdin) within the size and alias limits of
``sidekick.core.yamlload`` and unpacks a ``List``; a file that cannot be read, is not UTF-8 or
is not valid YAML is one ConfigError naming the file, where and the fix. ``schema_problems``
checks a document against the newest Kubernetes schema ``kubernetes-validate`` ships (strict,
as ``kubectl apply`` is; each kind's schema loaded once, on first use) and words each violation
the way the API server does: ``spec.containers[1].ports[0].containerPort: must be an integer``.
``_strip_nulls`` runs first: it drops ``key: null``, which the API server reads as unset, and
reports null list items and NUL characters.

Left out: anything that knows what a Pod is. Which kinds are read and the checks only a local
runner needs are ``manifest``, ``_pod_spec`` and ``_container_spec``; ``servicelinks`` checks
its Service documents with the same functions.
"""

from __future__ import annotations

from typing import Any

import yaml

from sidekick.core.errors import ConfigError
from sidekick.core.yamlload import YAMLLimitError, load_all, read_bounded

# --- schema validation ---------------------------------------------------------------------

_TYPE_WORDS = {
    "integer": "an integer",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
    "number": "a number",
}


class _Schemas:
    """The newest schema version the package ships, loaded once per kind."""

    def __init__(self) -> None:
        from kubernetes_validate import utils

        self._utils = utils
        self.version = utils.latest_version()
        self._dir = f"kubernetes-json-schema/v{self.version}-local-strict"
        self._defs: Any = None
        self._validators: dict[str, Any] = {}

    def validator(self, kind: str, api_version: str) -> Any:
        import jsonschema  # type: ignore[import-untyped]
        from referencing import Registry, Resource

        group = api_version.split("/")[0].split(".")[0] + "-" if "/" in api_version else ""
        name = f"{kind.lower()}-{group}{api_version.rsplit('/', 1)[-1]}"
        if name not in self._validators:
            try:
                schema = self._utils.schema_contents(f"{self._dir}/{name}.json", self.version)
            except FileNotFoundError:
                return None
            if self._defs is None:
                self._defs = self._utils.schema_contents(
                    f"{self._dir}/_definitions.json", self.version
                )
            registry = Resource.from_contents(schema) @ Registry()
            registry = Resource.from_contents(self._defs) @ registry
            self._validators[name] = jsonschema.Draft202012Validator(schema, registry=registry)
        return self._validators[name]


_schemas: _Schemas | None = None


def field_path(parts: list[str | int] | Any) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def _describe(error: Any) -> str:
    path = field_path(list(error.absolute_path))
    v = error.validator
    if v == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = f"{path}." if path else ""
        return "; ".join(
            f"{where}{name}: unknown field; remove it or fix its spelling" for name in extra
        )
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        where = f"{path}." if path else ""
        return f"{where}{missing}: required value is missing"
    if v == "type":
        types = error.validator_value
        types = [types] if isinstance(types, str) else [t for t in types if t != "null"]
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        return f"{path}: must be {words}, not {error.instance!r}"
    if v == "enum":
        choices = ", ".join(repr(c) for c in error.validator_value if c is not None)
        return f"{path}: {error.instance!r} is not one of {choices}"
    if v == "oneOf" and all("type" in s for s in error.validator_value):
        kinds = sorted(
            {
                t
                for s in error.validator_value
                for t in ([s["type"]] if isinstance(s["type"], str) else s["type"])
                if t != "null"
            }
        )
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in kinds)
        return f"{path}: must be {words}, not {error.instance!r}"
    return f"{path or '(document)'}: {error.message}"


def _strip_nulls(value: Any, path: list[str | int], problems: list[str]) -> Any:
    """Drop ``key: null`` (the API server reads it as unset); report null list items and NULs."""
    if isinstance(value, dict):
        return {
            k: _strip_nulls(v, [*path, str(k)], problems) for k, v in value.items() if v is not None
        }
    if isinstance(value, list):
        for i, item in enumerate(value):
            if item is None:
                problems.append(f"{field_path([*path, i])}: must not be null; remove the item")
        return [_strip_nulls(v, [*path, i], problems) for v in value if v is not None]
    if isinstance(value, str) and "\x00" in value:
        # No path, argument or environment value of a process can hold one.
        problems.append(f"{field_path(path)}: contains a NUL character; remove it")
    return value


def schema_problems(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of ``doc`` as ``field.path: what is wrong``."""
    global _schemas
    if _schemas is None:
        _schemas = _Schemas()
    validator = _schemas.validator(str(doc.get("kind")), str(doc.get("apiVersion")))
    if "apiVersion" not in doc:
        return ["apiVersion: required value is missing; use v1 (apps/v1 for a Deployment)"]
    if validator is None:
        return [
            f"apiVersion {doc.get('apiVersion')!r} with kind {doc.get('kind')!r} is not in the "
            f"Kubernetes {_schemas.version} schema; use apiVersion v1 for Pod, ConfigMap and "
            "Secret, apps/v1 for Deployment and batch/v1 for Job"
        ]
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [_describe(e) for e in errors]


# --- reading documents ---------------------------------------------------------------------


def load_documents(paths: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """All non-empty YAML documents of ``paths`` (``-`` is stdin), with their file names.

    Files are read up to a size limit and documents are measured with their aliases expanded
    before they are built (``sidekick.core.yamlload``), so an alias bomb is an error.
    """
    import sys

    out: list[tuple[str, dict[str, Any]]] = []
    for p in paths:
        try:
            if p == "-":
                data = read_bounded(sys.stdin.buffer)
            else:
                with open(p, "rb") as f:
                    data = read_bounded(f)
        except OSError as exc:
            raise ConfigError(
                f"manifest {p!r} cannot be read ({exc.strerror}); check the path"
            ) from None
        except YAMLLimitError as exc:
            raise ConfigError(f"manifest {p!r} {exc}") from None
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"manifest {p!r} is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                f"{exc.start}); save it as UTF-8"
            ) from None
        try:
            docs = load_all(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: {_yaml_problem(exc)}; fix the YAML syntax there") from None
        except YAMLLimitError as exc:
            raise ConfigError(f"manifest {p!r}: {exc}") from None
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc:
                raise ConfigError(
                    f"{p}: document {i + 1} is not a Kubernetes object (no kind); "
                    "each document needs apiVersion, kind and metadata"
                )
            if doc["kind"] == "List" and isinstance(doc.get("items"), list):
                out.extend((p, item) for item in doc["items"] if isinstance(item, dict))
            else:
                out.append((p, doc))
    return out


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error as one line: where, what, and the construct it was reading."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return "not valid YAML: " + " ".join(str(exc).split())
    mark = exc.problem_mark
    text = f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context:
        text += f" ({exc.context}"
        if exc.context_mark is not None:
            text += (
                f" that starts at line {exc.context_mark.line + 1}, "
                f"column {exc.context_mark.column + 1}"
            )
        text += ")"
    return text


def _name(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return str(meta.get("name", "")) if isinstance(meta, dict) else ""
