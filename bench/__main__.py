"""``python -m bench <name> [--quick] [bench options]``: run one benchmark.

Benches are modules ``bench/<name>.py`` exposing either ``run(quick: bool) -> int`` (ours) or
``main(argv)``/``main()`` (sync or async: whatever another owner chose; the remaining arguments
are passed through unchanged, ``--quick`` only if the module mentions it). Modules that are
not there yet are simply not offered.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Sequence

# Order = the order `python -m bench all` runs them in (cheap first).
KNOWN = (
    "client",
    "callback_lanes",
    "downtime",
    "react",
    "adopt",
    "scale",
    "intake",
    "store_inbox",
    "retention",
    "handoff",
    "fleet",
    "soak",
)


def available() -> list[str]:
    """Bench names whose module exists in this checkout."""
    return [n for n in KNOWN if importlib.util.find_spec(f"bench.{n}") is not None]


def run_one(name: str, quick: bool, rest: Sequence[str]) -> int:
    module = importlib.import_module(f"bench.{name}")
    run = getattr(module, "run", None)
    if callable(run):
        if rest:
            print(f"bench {name}: unexpected arguments {list(rest)}", file=sys.stderr)
            return 2
        return int(run(quick))
    main = getattr(module, "main", None)
    if callable(main):
        # other owners' benches: pass --quick only to those that know it
        knows_quick = "--quick" in inspect.getsource(module)
        argv = list(rest) + (["--quick"] if quick and knows_quick else [])
        if inspect.signature(main).parameters:
            result = main(argv)
        else:  # a script-style main() that reads sys.argv itself
            sys.argv = [f"bench/{name}.py", *argv]
            result = main()
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    print(f"bench {name}: module has neither run(quick) nor main(argv)", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    names = available()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=[*names, "all"], help="which benchmark")
    parser.add_argument("--quick", action="store_true", help="small smoke run (minutes → seconds)")
    args, rest = parser.parse_known_args(argv)
    if args.name != "all":
        return run_one(args.name, args.quick, rest)
    worst = 0
    for name in names:
        print(f"== bench {name}", flush=True)
        worst = max(worst, run_one(name, args.quick, rest))
    return worst


if __name__ == "__main__":
    sys.exit(main())
