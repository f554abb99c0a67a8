"""What one input's batches go through: the ``Plan`` a graph compiles to, and running it.

Per input, ``plan_for`` lists the transforms that input reaches, in order, each with the
references it reads, and the outputs it reaches. Records are copied only where one
producer's records go to more than one consumer and some consumer (or anything after it) may
change them; consumers that only select records (filter, sample, throttle, route) and outputs
share them. ``Plan.run`` takes one batch through the whole plan at once and offers what leaves
each component to the live tap while someone taps.

Left out: checking the graph and its references (``graph``), and records held across batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sidekick.ship.records import FLAGS, Record

if TYPE_CHECKING:
    from sidekick.ship.graph import Graph, TransformNode
    from sidekick.ship.tap import Taps

DEFAULT = ""  # a transform's one output (sidekick.ship.transforms.base.DEFAULT)
# Kinds that only choose which records go on (and where); they never change a record.
SELECTING = frozenset(("filter", "sample", "throttle", "route"))


# A producer's records handed to one consumer: (reference, copy the records first).
Take = tuple[str, bool]


@dataclass(slots=True)
class Step:
    node: TransformNode
    takes: list[Take]


@dataclass(slots=True)
class Plan:
    """What one input's batches go through: transforms in order, then the outputs they reach
    (indices into ``Graph.outputs``' order, each with what it takes)."""

    input: str
    steps: list[Step]
    outputs: list[tuple[int, list[Take]]]
    output_names: list[str] = field(default_factory=list)  # by index

    def run(
        self, records: list[Record], taps: Taps | None = None
    ) -> list[tuple[int, list[Record]]]:
        """Run ``records`` through the transforms; the records each output receives.
        ``taps`` (while someone taps) sees what leaves each component."""
        tapping = taps is not None and taps.active
        streams: dict[str, list[Record]] = {self.input: records}
        if tapping:
            assert taps is not None
            taps.offer(self.input, records)
        for step in self.steps:
            batch = _gather(streams, step.takes)
            if not batch:
                continue
            name = step.node.name
            for branch, out in step.node.transform.process(batch).items():
                ref = name if branch == DEFAULT else f"{name}.{branch}"
                streams[ref] = out
                if tapping:
                    assert taps is not None
                    taps.offer(ref, out)
        result: list[tuple[int, list[Record]]] = []
        for index, takes in self.outputs:
            got = _gather(streams, takes)
            if got:
                result.append((index, got))
                if tapping:
                    assert taps is not None
                    taps.offer(self.output_names[index], got)
        return result


def _gather(streams: dict[str, list[Record]], takes: list[Take]) -> list[Record]:
    if len(takes) == 1:
        ref, copy = takes[0]
        got = streams.get(ref)
        if not got:
            return []
        # A list of its own even when the records are shared: consumers may build on it.
        return copy_records(got) if copy else list(got)
    batch: list[Record] = []
    for ref, copy in takes:
        got = streams.get(ref)
        if got:
            batch.extend(copy_records(got) if copy else got)
    return batch


def copy_records(records: list[Record]) -> list[Record]:
    """Copies a consumer may change without another seeing it (values are immutable but for
    the ``log.flags`` list)."""
    out = [r.copy() for r in records]
    for r in out:
        flags = r.get(FLAGS)
        if flags is not None:
            r[FLAGS] = list(flags)
    return out


def producer_of(ref: str, transforms: dict[str, TransformNode]) -> tuple[str, str]:
    """``(component, output)`` a reference names (``output`` is DEFAULT for the one output)."""
    if ref in transforms:
        return ref, DEFAULT
    name, dot, branch = ref.rpartition(".")
    if dot and name in transforms:
        return name, branch
    return ref, DEFAULT


def plan_for(graph: Graph, input_name: str) -> Plan:
    transforms = graph.transforms
    # What each component reads, by producer.
    reached = {input_name}
    steps: list[TransformNode] = []
    for name in graph.order:
        node = transforms[name]
        if any(producer_of(r, transforms)[0] in reached for r in node.inputs):
            reached.add(name)
            steps.append(node)
    outs = [
        (i, o)
        for i, o in enumerate(graph.outputs.values())
        if any(producer_of(r, transforms)[0] in reached for r in o.inputs)
    ]
    # Whether a transform, or anything after it, may change records.
    changes: dict[str, bool] = {}
    for node in reversed(steps):
        after = [
            t for t in steps if any(producer_of(r, transforms)[0] == node.name for r in t.inputs)
        ]
        changes[node.name] = node.kind not in SELECTING or any(changes[t.name] for t in after)
    # Consumers of each producer (a transform reading two branches of a route counts once).
    consumers: dict[str, list[tuple[str, str]]] = {}  # producer -> [(consumer key, ref)]
    for node in steps:
        for ref in node.inputs:
            producer = producer_of(ref, transforms)[0]
            if producer in reached:
                consumers.setdefault(producer, []).append((node.name, ref))
    for index, out in outs:
        for ref in out.inputs:
            producer = producer_of(ref, transforms)[0]
            if producer in reached:
                consumers.setdefault(producer, []).append((f"#{index}", ref))
    copied: set[tuple[str, str]] = set()  # (consumer key, ref) that take copies
    for _producer_name, takers in consumers.items():
        changing = [key for key in dict.fromkeys(k for k, _r in takers) if changes.get(key, False)]
        sharing = any(not changes.get(k, False) for k, _r in takers)
        # Those that share the records never change them; of the rest, all but one (or all,
        # when some consumer shares) take copies.
        for key in changing[0 if sharing else 1 :]:
            copied.update((k, r) for k, r in takers if k == key)
    plan_steps = [
        Step(
            node,
            [
                (r, (node.name, r) in copied)
                for r in node.inputs
                if producer_of(r, transforms)[0] in reached
            ],
        )
        for node in steps
    ]
    plan_outs = [
        (
            i,
            [
                (r, (f"#{i}", r) in copied)
                for r in o.inputs
                if producer_of(r, transforms)[0] in reached
            ],
        )
        for i, o in outs
    ]
    return Plan(input_name, plan_steps, plan_outs, list(graph.outputs))
