"""The ``file://`` input options for container logs: ``exclude`` and ``k8s_metadata``.

``exclude``
    Glob patterns of matched files not to tail, comma-separated and/or repeated
    (``?exclude=*.gz&exclude=*.zst``, or ``exclude: ["*.gz"]`` in the mapping form). A
    pattern without ``/`` is matched against the file name, one with ``/`` against the path.
``k8s_metadata``
    ``path``: records carry the Kubernetes fields the file's path names
    (``sidekick.ship.k8s_path``); ``none``: they do not. Unset, it is ``path`` for the
    ``cri`` and ``docker`` parsers (whose files live in the kubelet's layout) and ``none``
    for the others.

The ``cri`` and ``docker`` parsers join the runtime's partial lines themselves, so an input
that names its own ``multiline_start`` with them is refused, and the global
``--multiline-start`` does not apply to them.
"""

from __future__ import annotations

from sidekick.core.errors import ConfigError

JOINING_PARSERS = ("cri", "docker")


def file_options(
    options: dict[str, str],
    *,
    given: str,
    file_input: bool,
    parser_spec: str,
    multiline: str | None,
    own_multiline: bool,
) -> tuple[tuple[str, ...], bool, str | None]:
    """``(exclude patterns, k8s_metadata, multiline_start)`` of one input; ConfigError on a
    mistake, naming the input as ``given``."""
    exclude: tuple[str, ...] = ()
    if "exclude" in options:
        if not file_input:
            raise ConfigError(
                f"--input {given!r}: exclude applies to file:// inputs only; remove it"
            )
        exclude = tuple(p.strip() for p in options["exclude"].split(",") if p.strip())
        if not exclude:
            raise ConfigError(
                f"--input {given!r}: exclude is empty; give glob patterns like exclude=*.gz"
            )
    joining = parser_spec in JOINING_PARSERS
    k8s = joining
    if "k8s_metadata" in options:
        word = options["k8s_metadata"].lower()
        if not file_input:
            raise ConfigError(
                f"--input {given!r}: k8s_metadata applies to file:// inputs only; remove it"
            )
        if word not in ("path", "none"):
            raise ConfigError(
                f"--input {given!r}: k8s_metadata {options['k8s_metadata']!r} is neither path "
                "nor none; write k8s_metadata=path (fields from the file's path) or "
                "k8s_metadata=none"
            )
        k8s = word == "path"
    if joining:
        if own_multiline:
            raise ConfigError(
                f"--input {given!r}: parser {parser_spec} joins the runtime's partial lines "
                "itself and cannot be combined with multiline_start; remove multiline_start"
            )
        multiline = None
    return exclude, k8s, multiline
