"""YAML loading with bounds, so a hostile or broken file fails fast instead of eating memory.

PyYAML keeps an alias (``*name``) as a reference to its anchored node, so a "billion laughs"
document (ten aliases of ten aliases of ... ) parses in microseconds into a small graph; the
blow-up comes later, when code walks the loaded data as a tree and visits each shared part
once per reference. The loader here measures every document as that tree would be (its nodes
and the characters of its scalars, each alias counted in full, shared parts measured once) as
soon as it is composed and before any Python object is built, and refuses one that is too
big, or that refers to itself. Input is also capped in bytes before parsing, and nesting too
deep for the parser's recursion is reported instead of crashing.

Limits are generous for hand-written files: a Pod manifest has a few thousand nodes; the
defaults allow a thousand times that.

Left out: a streaming parser (a document is composed whole before it is measured, which costs
memory proportional to its bytes, which are capped) and limits on the number of documents.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 8 * 1024 * 1024
"""Largest input accepted, in bytes."""
MAX_NODES = 1_000_000
"""Most nodes (mappings, sequences, scalars) a document may have with its aliases expanded."""
MAX_CHARS = 64 * 1024 * 1024
"""Most characters of scalars a document may have with its aliases expanded."""


class YAMLLimitError(Exception):
    """A document is too big, refers to itself, or nests too deeply. The message is the
    problem and its fix, to follow the file's name: ``document 1 has ...; ...``."""


def read_bounded(stream: Any, limit: int = MAX_BYTES) -> bytes:
    """Read a binary stream, but at most ``limit`` bytes; YAMLLimitError past that."""
    data: bytes = stream.read(limit + 1)
    if len(data) > limit:
        raise YAMLLimitError(
            f"is larger than {limit // (1024 * 1024)} MiB; split it into smaller files"
        )
    return data


def load_all(text: str, *, max_nodes: int = MAX_NODES, max_chars: int = MAX_CHARS) -> list[Any]:
    """Every document of ``text`` like ``yaml.safe_load_all``, within the limits.

    Raises ``yaml.YAMLError`` for bad syntax and ``YAMLLimitError`` past a limit.
    """
    loader = _BoundedLoader(text, max_nodes, max_chars)
    try:
        docs = []
        while loader.check_data():  # type: ignore[no-untyped-call]
            docs.append(loader.get_data())
        return docs
    except RecursionError:
        raise YAMLLimitError(
            f"document {loader.documents} nests too deeply; flatten its structure"
        ) from None
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    # kubectl reads manifests with go-yaml, which also accepts ``\'`` (a single quote) in a
    # double-quoted scalar, an extension the YAML spec does not have; PyYAML refuses it.
    ESCAPE_REPLACEMENTS = {**yaml.SafeLoader.ESCAPE_REPLACEMENTS, "'": "'"}  # type: ignore[misc]  # noqa: RUF012

    def __init__(self, text: str, max_nodes: int, max_chars: int) -> None:
        super().__init__(text)
        self.max_nodes = max_nodes
        self.max_chars = max_chars
        self.documents = 0

    def compose_document(self) -> yaml.Node | None:
        self.documents += 1
        node = super().compose_document()
        if node is not None:
            _measure(node, self.documents, self.max_nodes, self.max_chars)
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _measure(root: yaml.Node, doc: int, max_nodes: int, max_chars: int) -> None:
    """Nodes and scalar characters of ``root`` as a tree; YAMLLimitError past a limit.

    Each distinct node is measured once (aliases share nodes), iteratively, so neither a
    wide fan-out of aliases nor a deep document costs more than the graph's size.
    """
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()  # on the current path: seeing one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            nodes, chars = 1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            for child in _children(node):
                n, c = sizes[id(child)]
                nodes += n
                chars += c
            if nodes > max_nodes:
                raise YAMLLimitError(
                    f"document {doc} has more than {max_nodes} values once its YAML aliases "
                    "(*name) are expanded; write it out with fewer aliases"
                )
            if chars > max_chars:
                raise YAMLLimitError(
                    f"document {doc} has more than {max_chars // (1024 * 1024)} MiB of text "
                    "once its YAML aliases (*name) are expanded; write it out with fewer aliases"
                )
            sizes[key] = (nodes, chars)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YAMLLimitError(
                f"document {doc} contains itself through a YAML alias (*name); "
                "remove the recursive alias"
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
