"""The pipeline graph: named inputs, transforms and outputs, checked and ordered once.

``build_graph(cfg)`` reads ``ship.inputs``, ``ship.transforms`` and ``ship.outputs`` and
returns a ``Graph``: every input resolved (``resolve_input``), every transform built
(``build_transform``, which compiles its CEL once), every output's references resolved, and
the transforms in topological order. Each mistake is one ``ConfigError`` sentence naming the
component, the field and the fix: an unknown name in ``inputs``, a cycle, a transform or an
input nothing reads, an output with no input, an unknown transform type, an expression that
does not compile.

References: ``inputs:`` entries name an input, a transform, or one output of a transform that
has several (a route's branch) as ``name.branch`` (``name._unmatched``: records no branch
matched). Inputs in list form are named by their URL (without ``?options``); outputs in list
form by their URL, and read every input. Without transforms and with list-form outputs the
graph is the shorthand of every input to every output, and the pipeline runs it as it always
has (no copies, no extra work per batch).

Per input the graph compiles to a ``Plan`` (``plan.py``): the transforms that input reaches,
in order, and the outputs it reaches, with copies only where a consumer may change records
another one shares. Left out: running a plan (``plan.py``) and transforms feeding inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sidekick.core.errors import ConfigError
from sidekick.core.redact import redact_url
from sidekick.ship.config import InputConfig, OutputConfig, ShipConfig
from sidekick.ship.plan import DEFAULT, Plan, plan_for, producer_of
from sidekick.ship.sources import resolve_input
from sidekick.ship.sources.base import InputSpec

if TYPE_CHECKING:
    from sidekick.ship.transforms.base import Transform


@dataclass(frozen=True, slots=True)
class InputNode:
    name: str
    spec: InputSpec


@dataclass(frozen=True, slots=True)
class TransformNode:
    name: str
    kind: str
    inputs: tuple[str, ...]
    transform: Transform


@dataclass(frozen=True, slots=True)
class OutputNode:
    name: str
    config: OutputConfig
    inputs: tuple[str, ...]
    named: bool = False  # named in the config (mapping form), not by its URL


@dataclass
class Graph:
    inputs: dict[str, InputNode]
    transforms: dict[str, TransformNode]
    outputs: dict[str, OutputNode]
    order: tuple[str, ...]  # transform names, each after everything it reads
    shorthand: bool  # every input to every output, nothing between
    plans: dict[str, Plan] = field(default_factory=dict)  # by input name

    def refs_of(self, component: str) -> list[str] | None:
        """What ``component`` emits, as references (a route: each branch); None if unknown."""
        if component in self.inputs or component in self.outputs:
            return [component]
        node = self.transforms.get(component)
        if node is None:
            name, _dot, branch = component.rpartition(".")
            node = self.transforms.get(name)
            if node is None or branch not in node.transform.outputs:
                return None
            return [component]
        return [node.name if b == DEFAULT else f"{node.name}.{b}" for b in node.transform.outputs]

    def edges(self) -> Iterator[tuple[str, str]]:
        """``(reference, consumer)`` for every edge, inputs first, outputs last."""
        for name in self.order:
            for ref in self.transforms[name].inputs:
                yield ref, name
        for out in self.outputs.values():
            for ref in out.inputs:
                yield ref, out.name

    def describe(self) -> list[str]:
        """The graph as text: the components by kind, then one line per edge."""
        lines = ["inputs:"]
        for node in self.inputs.values():
            url = redact_url(node.spec.url)
            what = f" {url}" if url != node.name else ""
            lines.append(f"  {redact_url(node.name)}{what} (parser {node.spec.parser_spec})")
        if self.order:
            lines.append("transforms:")
        for name in self.order:
            t = self.transforms[name]
            branches = [b for b in t.transform.outputs if b != DEFAULT]
            extra = f" (branches {', '.join(branches)})" if branches else ""
            lines.append(f"  {name} {t.kind}{extra}")
        lines.append("outputs:")
        for out in self.outputs.values():
            url = redact_url(out.config.url)
            lines.append(f"  {redact_url(out.name)}" + (f" {url}" if url != out.name else ""))
        lines.append("edges:")
        lines += [f"  {redact_url(a)} -> {redact_url(b)}" for a, b in self.edges()]
        return lines


def _check_name(kind: str, name: str) -> None:
    if not name or "." in name:
        raise ConfigError(
            f"{kind} {name!r}: a component name must be non-empty and without '.' "
            "(a dot names a route's branch); rename it"
        )


def build_graph(cfg: ShipConfig) -> Graph:
    """Resolve, build and check the whole graph of ``cfg``; ConfigError on a mistake."""
    inputs = _inputs(cfg)
    named_outputs = isinstance(cfg.outputs, dict)
    transforms: dict[str, TransformNode] = {}
    if cfg.transforms:
        from sidekick.ship.transforms import build_transform

        for name, body in cfg.transforms.items():
            _check_name("transform", name)
            if name in inputs:
                raise ConfigError(
                    f"transform {name!r} has the name of an input; give each component its own name"
                )
            if not isinstance(body, dict):
                raise ConfigError(
                    f"transform {name!r} is not a mapping; write it as {{type: KIND, inputs: "
                    "[NAME], ...}"
                )
            options = dict(body)
            kind = options.pop("type", None)
            if not isinstance(kind, str) or not kind:
                raise ConfigError(
                    f"transform {name!r} has no field 'type'; add type: filter (or modify, "
                    "redact, sample, throttle, parse, route)"
                )
            refs = _refs(f"transform {name!r}", options.pop("inputs", None))
            transforms[name] = TransformNode(name, kind, refs, build_transform(name, kind, options))
    outputs: dict[str, OutputNode] = {}
    everything = tuple(inputs)
    if isinstance(cfg.outputs, dict):
        for name, out in cfg.outputs.items():
            assert isinstance(out, OutputConfig)
            _check_name("output", name)
            if name in inputs or name in transforms:
                raise ConfigError(
                    f"output {name!r} has the name of another component; give each component "
                    "its own name"
                )
            if not out.inputs:
                raise ConfigError(
                    f"output {name!r} has no inputs; add inputs: [NAME] naming an input, a "
                    "transform or a route's branch"
                )
            outputs[name] = OutputNode(name, out, _refs(f"output {name!r}", out.inputs), named=True)
    else:
        for out in cfg.output_configs:
            refs = everything if out.inputs is None else _refs(f"output {out.url!r}", out.inputs)
            if not refs:
                raise ConfigError(
                    f"output {redact_url(out.url)!r} has no inputs; add inputs: [NAME] or "
                    "leave the field out to read every input"
                )
            if out.url in outputs:
                raise ConfigError(
                    f"--output {redact_url(out.url)!r} is given twice; give each output once"
                )
            outputs[out.url] = OutputNode(out.url, out, refs)
    _check_refs(inputs, transforms, outputs)
    order = _order(transforms)
    _check_read(inputs, transforms, outputs)
    graph = Graph(
        inputs=inputs,
        transforms=transforms,
        outputs=outputs,
        order=order,
        shorthand=not transforms
        and not named_outputs
        and all(o.inputs == everything for o in outputs.values()),
    )
    if not graph.shorthand:
        graph.plans = {name: plan_for(graph, name) for name in inputs}
    return graph


def _inputs(cfg: ShipConfig) -> dict[str, InputNode]:
    entries: list[tuple[str | None, str | InputConfig]]
    if isinstance(cfg.inputs, dict):
        entries = list(cfg.inputs.items())
    else:
        entries = [(None, e) for e in cfg.inputs]
    nodes: dict[str, InputNode] = {}
    urls: set[str] = set()
    for given_name, entry in entries:
        spec = resolve_input(entry, cfg)
        if spec.url in urls:
            raise ConfigError(
                f"--input {redact_url(spec.url)!r} is given twice; give each input once "
                "(with one set of options)"
            )
        urls.add(spec.url)
        if given_name is not None:
            _check_name("input", given_name)
        name = spec.url if given_name is None else given_name
        nodes[name] = InputNode(name, spec)
    return nodes


def _refs(owner: str, value: Any) -> tuple[str, ...]:
    if value is None or value == []:
        raise ConfigError(
            f"{owner} has no inputs; add inputs: [NAME] naming an input, a transform or a "
            "route's branch"
        )
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{owner}: field 'inputs' must be a list of component names; write inputs: [NAME]"
        )
    if len(set(value)) != len(value):
        raise ConfigError(f"{owner}: field 'inputs' names a component twice; name it once")
    return tuple(value)


def _check_refs(
    inputs: dict[str, InputNode],
    transforms: dict[str, TransformNode],
    outputs: dict[str, OutputNode],
) -> None:
    known = [*inputs, *transforms]
    consumers: list[tuple[str, tuple[str, ...]]] = [
        (f"transform {t.name!r}", t.inputs) for t in transforms.values()
    ]
    consumers += [(f"output {redact_url(o.name)!r}", o.inputs) for o in outputs.values()]
    for owner, refs in consumers:
        for ref in refs:
            if ref in inputs:
                continue
            name, branch = producer_of(ref, transforms)
            node = transforms.get(name)
            if node is None:
                raise ConfigError(
                    f"{owner}: field 'inputs' names {redact_url(ref)!r}, which is no input or "
                    f"transform; use one of {', '.join(redact_url(k) for k in known)}"
                )
            outs = node.transform.outputs
            if branch not in outs:
                if branch == DEFAULT:
                    choices = ", ".join(f"{name}.{b}" for b in outs)
                    raise ConfigError(
                        f"{owner}: field 'inputs' names {ref!r}, a {node.kind} with several "
                        f"outputs; name one of {choices}"
                    )
                choices = ", ".join(name if b == DEFAULT else f"{name}.{b}" for b in outs)
                raise ConfigError(
                    f"{owner}: field 'inputs' names {ref!r}, but {node.kind} {name!r} has no "
                    f"branch {branch!r}; use {choices}"
                )


def _order(transforms: dict[str, TransformNode]) -> tuple[str, ...]:
    """Transforms in topological order (Kahn); ConfigError naming a cycle."""
    deps = {
        name: {producer_of(r, transforms)[0] for r in t.inputs} & transforms.keys()
        for name, t in transforms.items()
    }
    order: list[str] = []
    ready = [n for n in transforms if not deps[n]]
    left = {n: set(d) for n, d in deps.items() if d}
    while ready:
        name = ready.pop(0)
        order.append(name)
        for other, d in list(left.items()):
            d.discard(name)
            if not d:
                del left[other]
                ready.append(other)
    if left:
        # Walk back from any transform left until a name repeats: that is a cycle.
        path = [min(left)]
        while path.count(path[-1]) < 2:
            path.append(min(left[path[-1]] & left.keys()))
        cycle = path[path.index(path[-1]) :]
        cycle.reverse()
        raise ConfigError(
            f"transform {cycle[0]!r}: field 'inputs' makes a cycle ({' -> '.join(cycle)}); "
            "remove one of these inputs"
        )
    return tuple(order)


def _check_read(
    inputs: dict[str, InputNode],
    transforms: dict[str, TransformNode],
    outputs: dict[str, OutputNode],
) -> None:
    read: set[str] = set()
    refs = [r for t in transforms.values() for r in t.inputs]
    refs += [r for o in outputs.values() for r in o.inputs]
    for ref in refs:
        read.add(producer_of(ref, transforms)[0])
    for name in inputs:
        if name not in read:
            raise ConfigError(
                f"input {redact_url(name)!r} is read by nothing; name it in the inputs of a "
                "transform or an output, or remove it"
            )
    for name in transforms:
        if name not in read:
            raise ConfigError(
                f"transform {name!r} is read by nothing; name it in the inputs of a "
                "transform or an output, or remove it"
            )
