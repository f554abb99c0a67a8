"""Which CEL implementation ship's transforms use: the candidates from PyPI, measured.

Each candidate compiles two conditions once and evaluates them over a batch of 100,000 flat
records (dotted names, as ship's parsers produce):

- equality: ``record["url.path"] == "/healthz"``
- in a list: ``record["url.path"] in ["/healthz", "/readyz", "/livez"]``

and prints compile time and µs per record, next to ship's own fast path for simple
conditions (:mod:`sidekick.ship.transforms.fastpath`) run the way ``filter`` runs it.

Candidates: ``common-expression-language`` (module ``cel``, bindings to the Rust ``cel``
crate), ``cel-python`` (module ``celpy``, pure Python on lark), ``cel-expr-python`` (module
``cel_expr_python``, bindings to Google's C++ cel-cpp). Only the last is a dependency of
ship; install the others (``pip install common-expression-language cel-python``) to measure
them too.

Measured on the 2-core development machine, shared with other work (load about 3.5;
Python 3.11; compile time of the second expression, the first one also loads the library):

==================================  ===========  ==========  ==========
candidate                           compile ms   ``==`` µs   ``in`` µs
==================================  ===========  ==========  ==========
cel-expr-python 0.1.3 (cel-cpp)     1.8 (50)     12.6        12.4
common-expression-language 0.10     0.8 (560)    37.0        44.6
cel-python 0.5 (celpy)              4.7 (380)    929         1241
ship fast path (filter, a batch)    < 1          0.17        0.19
==================================  ===========  ==========  ==========

Chosen: ``cel-expr-python``. It is the fastest per call (3x the Rust bindings, whose cost
grows by several µs per field of the record; 75x the pure-Python one), it is Google's own
implementation, it type-checks expressions at compile time (unknown names and functions are
refused at start), and it returns evaluation errors as values instead of raising. Its cost is
a 15 MB wheel. Simple conditions do not call it at all (the fast path), and other expressions
are handed only the fields they read.

Run: ``.venv/bin/python bench/ship/cel_choice.py [--records N]``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

EQUALITY = 'record["url.path"] == "/healthz"'
IN_LIST = 'record["url.path"] in ["/healthz", "/readyz", "/livez"]'
PATHS = ["/healthz", "/readyz", "/api/orders", "/api/users/42", "/static/app.js"]


def make_records(n: int) -> list[dict[str, Any]]:
    rnd = random.Random(7)
    return [
        {
            "@timestamp": "2026-01-02T03:04:05.000Z",
            "message": "GET /x HTTP/1.1",
            "url.path": rnd.choice(PATHS),
            "http.request.method": "GET",
            "http.response.status_code": rnd.choice([200, 200, 200, 404, 500]),
            "client.address": "10.0.0.1",
            "log.file.path": "/var/log/nginx/access.log",
        }
        for _ in range(n)
    ]


Compiler = Callable[[str], Callable[[list[dict[str, Any]]], int]]


def rust_cel(text: str) -> Callable[[list[dict[str, Any]]], int]:
    import cel

    program = cel.compile(text)
    execute = program.execute
    return lambda records: sum(1 for r in records if execute({"record": r}) is True)


def celpy_(text: str) -> Callable[[list[dict[str, Any]]], int]:
    import celpy

    env = celpy.Environment()
    program = env.program(env.compile(text))
    to_cel = celpy.json_to_cel
    return lambda records: sum(1 for r in records if bool(program.evaluate({"record": to_cel(r)})))


def cel_cpp(text: str) -> Callable[[list[dict[str, Any]]], int]:
    from cel_expr_python import cel

    env = cel.NewEnv(variables={"record": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)})
    expr = env.compile(text)
    return lambda records: sum(1 for r in records if expr.eval(data={"record": r}).value() is True)


def fast_path(text: str) -> Callable[[list[dict[str, Any]]], int]:
    from sidekick.ship.transforms.filter import FilterOptions, FilterTransform

    t = FilterTransform("bench", FilterOptions(keep=text))
    assert t.condition.fast, text
    return lambda records: len(t.process(records)[""])


CANDIDATES: dict[str, Compiler] = {
    "common-expression-language": rust_cel,
    "cel-python": celpy_,
    "cel-expr-python": cel_cpp,
    "ship fast path (filter)": fast_path,
}


def measure(
    compile_: Compiler, text: str, records: list[dict[str, Any]]
) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    run = compile_(text)
    compile_ms = (time.perf_counter() - t0) * 1e3
    run(records[:1000])  # warm up
    t0 = time.perf_counter()
    matched = run(records)
    per_record_us = (time.perf_counter() - t0) / len(records) * 1e6
    return compile_ms, per_record_us, matched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    args = parser.parse_args()
    records = make_records(args.records)
    only = {s for s in args.only.split(",") if s}
    print(f"{args.records:,} records; compile ms, µs per record (matched)")
    print(
        f"{'candidate':<28} {'condition':<10} {'compile ms':>10} {'µs/record':>10} {'matched':>8}"
    )
    for name, compile_ in CANDIDATES.items():
        if only and name not in only:
            continue
        for label, text in (("equality", EQUALITY), ("in list", IN_LIST)):
            try:
                compile_ms, us, matched = measure(compile_, text, records)
            except ImportError as exc:
                print(f"{name:<28} not installed ({exc.name}); pip install {name}")
                break
            print(f"{name:<28} {label:<10} {compile_ms:>10.2f} {us:>10.3f} {matched:>8}")


if __name__ == "__main__":
    main()
