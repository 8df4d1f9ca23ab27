"""Paired comparison of two checkouts on the task benchmark's chain (or fan-out), runs alternated.

    .venv/bin/python bench/ab_bench.py A_CHECKOUT B_CHECKOUT [--runs 10] [--fanout] [--b-env NAME=VALUE ...]

This machine's speed drifts by a factor of two within minutes (other guests of the VM
host; ``python3 -c pass`` has measured 7.4 to 19.6 ms), so two figures of
``bench/task_bench.py`` taken a few minutes apart say little about a change worth 10 %.
Here both versions run at once, each with its own ``updraft scheduler`` and home (SQLite,
LocalExecutor, ``core.parallelism`` 32), and their runs alternate (A, B, A, B...): each pair
is measured under the same conditions, and the paired ratio B/A is what to read. A first
run of each warms its scheduler up and is not counted. ``A_CHECKOUT`` and ``B_CHECKOUT``
are source trees (``git worktree add /tmp/a REV``); both run with this interpreter.
``--b-env`` sets environment variables for B only (the same tree with a setting changed).

Prints the median span (first start to last end) and median task duration (start to end)
of each, the median paired ratio B/A of the spans and how many pairs B won.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.task_bench import dag_source, run_cli, wait_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--fanout", action="store_true", help="300 independent tasks instead of a 40-task chain")
    parser.add_argument("--b-env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    for tree in (args.a, args.b):
        if not (tree / "scheduler" / "cli.py").is_file():
            parser.error(f"{tree} is not a checkout of this project (no scheduler/cli.py)")
    extra: dict[str, str] = {}
    for item in args.b_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--b-env {item!r}: expected NAME=VALUE")
        extra[name] = value

    size = 300 if args.fanout else 40
    with tempfile.TemporaryDirectory(prefix="updraft-ab-") as tmp:
        sides = []
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for label, tree, more in (("A", args.a, {}), ("B", args.b, extra)):
                home = Path(tmp) / label
                (home / "dags").mkdir(parents=True)
                (home / "dags" / "d.py").write_text(dag_source("d", size, chain=not args.fanout))
                env = {k: v for k, v in os.environ.items() if not k.startswith("UPDRAFT")}
                env.update(UPDRAFT_HOME=str(home), UPDRAFT__CORE__DAGS_FOLDER=str(home / "dags"),
                           UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION="false", UPDRAFT__CORE__PARALLELISM="32")
                env.update(more)
                # a PYTHONPATH of --b-env goes before the tree (other versions of installed libraries)
                env["PYTHONPATH"] = os.pathsep.join(p for p in (more.get("PYTHONPATH"), str(tree.resolve())) if p)
                run_cli(env, "dags", "list")
                with (home / "scheduler.log").open("w") as log:
                    procs.append(subprocess.Popen([sys.executable, "-m", "scheduler.cli", "scheduler"], env=env,
                                                  stdout=log, stderr=subprocess.STDOUT, cwd=home))
                sides.append((label, env, home))
            spans: dict[str, list[float]] = {"A": [], "B": []}
            tasks: dict[str, list[float]] = {"A": [], "B": []}
            for i in range(args.runs + 1):
                for label, env, home in sides:
                    run_cli(env, "dags", "trigger", "d", "--run-id", f"r{i}")
                    rows = wait_run(home / "updraft.db", "d", f"r{i}")
                    if i == 0:
                        continue  # warm-up
                    spans[label].append((max(r[2] for r in rows) - min(r[1] for r in rows)).total_seconds())
                    tasks[label].append(statistics.median((r[2] - r[1]).total_seconds() for r in rows))
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait()
    for label, tree in (("A", args.a), ("B", args.b)):
        print(f"{label} {tree}: span median {statistics.median(spans[label]):.3f} s "
              f"(runs {', '.join(f'{s:.3f}' for s in spans[label])}), "
              f"task median {statistics.median(tasks[label]) * 1000:.2f} ms")
    ratios = [b / a for a, b in zip(spans["A"], spans["B"], strict=True)]
    print(f"B/A per pair: median {statistics.median(ratios):.3f}; B faster in {sum(r < 1 for r in ratios)} "
          f"of {len(ratios)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
