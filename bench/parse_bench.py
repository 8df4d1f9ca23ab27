"""Benchmark: parse a folder of N small DAG files into a fresh SQLite database, then re-list it unchanged.

    .venv/bin/python bench/parse_bench.py [--files 1000] [--repeat 3] [--processes N] [--profile]

Measures, each as the median of ``--repeat`` runs:

* in-process ``sync_dag_folder``: cold (fresh database, every file parsed) and
  unchanged (nothing parsed);
* ``updraft dags list`` as a subprocess (interpreter start, imports, migration check,
  sync, printing): cold and unchanged. Without ``scheduler.cli`` the same is timed
  through ``python -c "...sync_dag_folder(...)"``;
* ``python -X importtime -c "import scheduler.dag_processing"``: the import cost of
  the no-change path.

Targets: cold <= 10 s, unchanged <= 1 s (for 1,000 files).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

COLD_TARGET_S = 10.0
UNCHANGED_TARGET_S = 1.0

DAG_TEMPLATE = '''"""Generated DAG {index} for the parse benchmark."""
from datetime import datetime, timedelta

from scheduler import DAG, BashOperator, EmptyOperator, PythonOperator


def summarise(ds, **_):
    return {{"day": ds, "index": {index}}}


with DAG(
    "bench_{index:05d}",
    schedule="{minute} {hour} * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={{"retries": 1, "retry_delay": timedelta(minutes=5)}},
    tags=["bench"],
) as dag:
    start = EmptyOperator(task_id="start")
    extract = BashOperator(task_id="extract", bash_command="echo extract {{{{ ds }}}}")
    transform = PythonOperator(task_id="transform", python_callable=summarise)
    load = BashOperator(task_id="load", bash_command="echo load {{{{ ds_nodash }}}}")
    end = EmptyOperator(task_id="end")
    start >> extract >> transform >> load >> end
'''


def generate(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        text = DAG_TEMPLATE.format(index=index, minute=index % 60, hour=(index // 60) % 24)
        (folder / f"bench_dag_{index:05d}.py").write_text(text)


def median_of(repeat: int, run: Callable[[], float]) -> tuple[float, list[float]]:
    samples = [run() for _ in range(repeat)]
    return statistics.median(samples), samples


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {ram} RAM, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def settings_env(work: Path, dags: Path, processes: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPDRAFT")}
    env["UPDRAFT_HOME"] = str(work / "home")
    env["UPDRAFT__CORE__DAGS_FOLDER"] = str(dags)
    env["UPDRAFT__CORE__LOAD_EXAMPLES"] = "false"
    if processes is not None:
        env["UPDRAFT__CORE__PARSING_PROCESSES"] = str(processes)
    return env


def fresh_db(work: Path) -> None:
    """An empty database, and no compiled DAG files (__pycache__) left by an earlier run: really cold."""
    shutil.rmtree(work / "home", ignore_errors=True)
    (work / "home").mkdir(parents=True)
    shutil.rmtree(work / "dags" / "__pycache__", ignore_errors=True)


def parse_only(work: Path, dags: Path, processes: int | None, repeat: int) -> float:
    """``parse_files`` alone (worker start, import, serialize; no database)."""
    from scheduler.config import load_settings
    from scheduler.parsing import discover_files, parse_files

    settings = load_settings(settings_env(work, dags, processes))
    files = discover_files(dags)

    def run() -> float:
        shutil.rmtree(dags / "__pycache__", ignore_errors=True)
        started = time.perf_counter()
        results = parse_files(
            files,
            timeout=settings.dagbag_import_timeout,
            processes=settings.parsing_processes,
            default_timezone="UTC",
            dags_folder=dags,
        )
        elapsed = time.perf_counter() - started
        assert not [r for r in results if r.error], "benchmark DAGs failed to parse"
        return elapsed

    value, samples = median_of(repeat, run)
    print(f"  parse_files only (no DB)  : {fmt(samples)} -> median {value:.2f} s ({settings.parsing_processes} processes)")
    return value


def in_process(work: Path, dags: Path, processes: int | None, repeat: int, profile: bool) -> tuple[float, float, int]:
    from scheduler.clock import utcnow
    from scheduler.config import load_settings
    from scheduler.dag_processing import sync_dag_folder
    from scheduler.db import migrate
    from scheduler.db.engine import make_engine

    env = settings_env(work, dags, processes)
    parsed = 0

    def cold() -> float:
        nonlocal parsed
        fresh_db(work)
        settings = load_settings(env)
        engine = make_engine(settings.sql_alchemy_conn)
        migrate.upgrade(engine)
        started = time.perf_counter()
        report = sync_dag_folder(engine, settings, now=utcnow())
        elapsed = time.perf_counter() - started
        parsed = report.parsed
        if report.errors:
            raise SystemExit(f"benchmark DAGs failed to parse: {report.error_files[:3]}")
        engine.dispose()
        return elapsed

    cold_s, cold_samples = median_of(repeat, cold)
    settings = load_settings(env)
    engine = make_engine(settings.sql_alchemy_conn)

    def unchanged() -> float:
        started = time.perf_counter()
        report = sync_dag_folder(engine, settings, now=utcnow())
        assert report.parsed == 0, report
        return time.perf_counter() - started

    unchanged_s, unchanged_samples = median_of(repeat, unchanged)
    print(f"  in-process cold sync      : {fmt(cold_samples)} -> median {cold_s:.2f} s ({parsed} files)")
    print(f"  in-process unchanged sync : {fmt(unchanged_samples)} -> median {unchanged_s:.3f} s")
    if profile:
        import cProfile
        import pstats

        fresh_db(work)
        settings = load_settings(env)
        engine = make_engine(settings.sql_alchemy_conn)
        migrate.upgrade(engine)
        profiler = cProfile.Profile()
        profiler.enable()
        sync_dag_folder(engine, settings, now=utcnow())
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    engine.dispose()
    return cold_s, unchanged_s, parsed


def cli_command() -> tuple[list[str], str]:
    if importlib.util.find_spec("scheduler.cli") is not None:
        script = Path(sys.executable).with_name("updraft")
        if script.exists():
            return [str(script), "dags", "list", "--output", "plain"], "updraft dags list --output plain"
        return [sys.executable, "-m", "scheduler.cli", "dags", "list", "--output", "plain"], "python -m scheduler.cli dags list"
    code = (
        "from scheduler.config import load_settings;from scheduler.db.engine import make_engine;"
        "from scheduler.db import migrate;from scheduler.dag_processing import sync_dag_folder;"
        "from scheduler.clock import utcnow;s=load_settings();e=make_engine(s.sql_alchemy_conn);"
        "migrate.upgrade(e);sync_dag_folder(e,s,now=utcnow())"
    )
    return [sys.executable, "-c", code], "python -c 'sync_dag_folder(...)'"


def as_subprocess(work: Path, dags: Path, processes: int | None, repeat: int) -> tuple[float, float, str]:
    command, label = cli_command()
    env = settings_env(work, dags, processes)

    def run() -> float:
        started = time.perf_counter()
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{label} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
        return elapsed

    def cold() -> float:
        fresh_db(work)
        return run()

    cold_s, cold_samples = median_of(repeat, cold)
    unchanged_s, unchanged_samples = median_of(repeat, run)
    print(f"  `{label}` cold      : {fmt(cold_samples)} -> median {cold_s:.2f} s")
    print(f"  `{label}` unchanged : {fmt(unchanged_samples)} -> median {unchanged_s:.3f} s")
    return cold_s, unchanged_s, label


def import_time(repeat: int) -> float:
    """Total import time (s) of scheduler.dag_processing in a fresh interpreter, median of ``repeat``."""
    samples = []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import scheduler.dag_processing"],
            capture_output=True, text=True, check=True,
        )
        total = 0
        for line in done.stderr.splitlines():
            match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
            if match and not match.group(2).startswith(" "):
                total += int(match.group(1))
        samples.append(total / 1e6)
    value = statistics.median(samples)
    print(f"  import scheduler.dag_processing: {fmt(samples, 3)} -> median {value * 1000:.0f} ms")
    return value


def fmt(samples: list[float], digits: int = 2) -> str:
    return "[" + ", ".join(f"{s:.{digits}f}" for s in samples) + "]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000, help="number of DAG files (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is reported (default 3)")
    parser.add_argument("--processes", type=int, default=None, help="core.parsing_processes (default: CPU count)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one in-process cold sync")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="updraft-parse-bench-"))
    try:
        dags = work / "dags"
        generate(dags, args.files)
        print(f"parse benchmark: {args.files} DAG files, {time.strftime('%Y-%m-%d')}")
        print(f"  machine: {machine()}")
        parse_only(work, dags, args.processes, args.repeat)
        cold_in, unchanged_in, _ = in_process(work, dags, args.processes, args.repeat, args.profile)
        cold_cli, unchanged_cli, _label = as_subprocess(work, dags, args.processes, args.repeat)
        import_time(args.repeat)
        ok_cold = max(cold_in, cold_cli) <= COLD_TARGET_S
        ok_unchanged = max(unchanged_in, unchanged_cli) <= UNCHANGED_TARGET_S
        print(f"  target cold <= {COLD_TARGET_S:.0f} s: {'met' if ok_cold else 'MISSED'}; "
              f"unchanged <= {UNCHANGED_TARGET_S:.0f} s: {'met' if ok_unchanged else 'MISSED'}")
        return 0 if ok_cold and ok_unchanged else 1
    finally:
        if args.keep:
            print(f"  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
