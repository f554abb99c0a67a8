"""Run every benchmark in bench/: each ``bench/<area>/<name>.py`` not starting with ``_``.

    .venv/bin/python bench/run.py [--quick] [--only ship/tail,...]

Each script runs in its own process, prints its own table and writes its JSON results to
bench/results/. ``--quick`` is passed on to the scripts that accept it (a smaller, faster run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def scripts() -> list[Path]:
    return sorted(p for p in BENCH.glob("*/*.py") if not p.name.startswith("_"))


def main() -> int:
    ap = argparse.ArgumentParser(description="Run the sidekick benchmarks.")
    ap.add_argument("--quick", action="store_true", help="smaller inputs, shorter live runs")
    ap.add_argument("--only", default="", help="comma-separated names like ship/tail")
    args = ap.parse_args()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    failed: list[str] = []
    for script in scripts():
        name = f"{script.parent.name}/{script.stem}"
        if wanted and name not in wanted:
            continue
        print(f"=== {name} ===", flush=True)
        t0 = time.monotonic()
        # A script that has no --quick runs in full rather than failing on the flag.
        quick = args.quick and "--quick" in script.read_text()
        argv = [sys.executable, str(script), *(["--quick"] if quick else [])]
        rc = subprocess.run(argv, cwd=BENCH.parent).returncode
        print(f"=== {name}: exit {rc} after {time.monotonic() - t0:.0f} s ===\n", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"Failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
