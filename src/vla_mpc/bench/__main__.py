"""``python -m vla_mpc.bench <suite> [<suite> ...]`` (or ``all``): run benchmark suites and print
one JSON object per line, each with ``suite``, ``name`` and named figures.

A suite is a module ``vla_mpc.bench.<suite>`` with ``run() -> list[dict]``. Benchmarks print their
figures; pass/fail against targets is for the reader (and the issue notes), not a timed test.
"""

from __future__ import annotations

import importlib
import json
import sys

SUITES = ("ingest", "safety", "planner", "policy", "learning")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv) or ["all"]
    names = list(SUITES) if args == ["all"] else args
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown suite(s) {unknown}; available: {', '.join(SUITES)} or all", file=sys.stderr)
        return 2
    code = 0
    for name in names:
        try:
            module = importlib.import_module(f"vla_mpc.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"vla_mpc.bench.{name}":
                raise
            print(json.dumps({"suite": name, "error": "suite not available in this version"}), flush=True)
            continue
        try:
            for row in module.run():
                print(json.dumps({"suite": name, **row}, default=float), flush=True)
        except Exception as exc:  # noqa: BLE001 - report the failing suite, run the others
            print(json.dumps({"suite": name, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
            code = 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
