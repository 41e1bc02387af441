"""The whole benchmark suite in one command: runs every benchmark, prints its table, and writes
docs/benchmarks.md (figures, machine, date, how to reproduce).

    python -m bench                 # the full suite (about half an hour on 2 cores)
    python -m bench --quick         # every benchmark, small: checks that they all run
    python -m bench --only grid,rest --output -   # some of them, printed only
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import Table, machine

# In the order they appear in docs/benchmarks.md.
BENCHMARKS = (
    "calculator",
    "ingest",
    "replay_day",
    "publication",
    "grid",
    "fanout",
    "rest",
    "scaleout",
)
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

PREAMBLE = """# Benchmarks

Measured {date} on {machine}, loopback only, load generators in processes of their own.
Every table compares with a baseline measured in the same run: read the ratios rather than the
absolute figures, as the machine is shared and noisy. Reproduce everything with `python -m bench`
(about half an hour), a single table with the command above it; `python -m bench --quick` checks
that every benchmark runs. What changed to reach these figures, and the scaling model built on
them: docs/performance.md and docs/scaling.md.
"""


def run(names: list[str], quick: bool) -> list[tuple[str, list[Table], float]]:
    results = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== bench.{name}", file=sys.stderr, flush=True)
        started = time.monotonic()
        found: list[Table] = module.tables(quick=quick)
        took = time.monotonic() - started
        for table in found:
            print(table.markdown(), flush=True)
        results.append((name, found, took))
    return results


def document(results: list[tuple[str, list[Table], float]], quick: bool) -> str:
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    text = PREAMBLE.format(date=date, machine=machine())
    if quick:
        text += "\n**Quick run** (small sizes, for checking only; not the reference figures).\n"
    for _, found, took in results:
        for table in found:
            text += "\n" + table.markdown()
        text += f"\n_(ran {took:.0f} s)_\n"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small runs, to check they work")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument(
        "--output",
        default=str(DOC),
        help="Markdown file to write (default docs/benchmarks.md); - to print only",
    )
    args = parser.parse_args(argv)
    names = list(BENCHMARKS)
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(names) - set(BENCHMARKS))
        if unknown:
            parser.error(
                f"--only: unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}"
            )
    results = run(names, args.quick)
    if args.output != "-":
        Path(args.output).write_text(document(results, args.quick))
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
