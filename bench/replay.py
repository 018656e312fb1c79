"""Benchmark: whole-pipeline replay throughput into chDB on one core, and state per package.

One run, one input, one core (``os.sched_setaffinity``):

1. **input**: a seeded simulator run (``carrierwatch.synthetic.simulator.simulate``) of several
   partners over a few days, generated into a temporary folder and read into memory (reading the
   raw-log files is not timed by any figure below);
2. **normalize only** (the reference): every record through its partner's transform, no
   pipeline, no store — canonical events per second;
3. **end to end**: :func:`carrierwatch.replay.run_replay` of the same records into a fresh chDB
   store (``open_store(Settings(data_dir=tmp), migrate=True)``) — canonical events per second,
   the ratio to the reference, and the shares of transform / pipeline / store in the wall time
   (from the replay's own timers, :class:`~carrierwatch.replay.ReplaySummary`);
4. **pipeline only**: the core pipeline over the already-normalized events (same batches, no
   store) — events per second;
4b. **CPython floor** (:func:`_floor`): the CPU cost per canonical event of four steps that any
   Python pipeline built on canonical event objects takes, each timed alone on the same input:
   parsing every payload, building every event (id hash + constructor), dropping duplicates by
   id, and writing the unique events' rows into chDB. Everything else is left out, so it bounds
   from below what such a pipeline can cost, against the goal's budget of 10 µs per event;
5. **state per package** on the pipeline left by the replay (nothing is evicted in a run shorter
   than the retention, so the end state is the largest): the deep size of each in-flight
   package's state (in-flight = neither delivered, returned nor cancelled), and the tracemalloc
   size of the whole pipeline state (restored from its own serialisation while tracing) divided
   by the packages it holds;
Every timed pass (2, 3 and the profile) starts with empty transformer and core caches
(:func:`carrierwatch.transformers.base.clear_parse_caches`): the time and zone caches would
otherwise be warm from the pass before.

6. **profile**: cProfile of a replay of the first part of the input into another fresh store —
   internal time grouped by area, and the top functions.

The last line printed is one JSON object with every figure. Goals (issue item 9): at least
100,000 canonical events/s end to end and under 1 KiB of state per in-flight package.

**Compiled vs pure Python** (``--compare-compiled SET``): builds the modules of ``SET``
(``core``, ``transformers``, ``drivers`` or a ``+``-joined combination, see
:data:`MODULE_SETS`) with mypyc into a temporary copy of the package (the editable install is
never touched, so it can never run stale extensions), then runs passes 1–5 above on the same
simulated input in a pure-Python subprocess and in a subprocess whose ``PYTHONPATH`` starts
with the compiled copy, ``--rounds`` times alternately (best figure of each kept), and prints
both and the ratios. Each subprocess reports which ``carrierwatch`` modules it ran compiled.

``--build-compiled DIR`` with ``--compare-compiled SET`` only builds, for running the tests
against the compiled modules (``PYTHONPATH=DIR .venv/bin/pytest tests/core tests/transformers``).

Usage: ``.venv/bin/python bench/replay.py [--days 2] [--packages-per-day 1600] [--seed 7]``,
``.venv/bin/python bench/replay.py --compare-compiled core+transformers [--rounds 2]``
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from carrierwatch.core.model import CanonicalEvent, event_id, new_event
from carrierwatch.core.pipeline import Pipeline
from carrierwatch.core.state import PackageState
from carrierwatch.replay import ReplaySummary, iter_inputs, pipeline_for, run_replay
from carrierwatch.settings import Settings
from carrierwatch.storage import open_store
from carrierwatch.synthetic.rawlog import RawRecord
from carrierwatch.synthetic.simulator import simulate
from carrierwatch.transformers.base import clear_parse_caches
from carrierwatch.transformers.registry import PartnerRegistry, load_registry

__all__ = ["MODULE_SETS", "area_of", "build_compiled", "compiled_modules", "in_flight", "main",
           "state_bytes"]

ROOT = Path(__file__).resolve().parents[1]
GOAL_EVENTS_PER_S = 100_000
GOAL_BYTES_PER_PACKAGE = 1024
VERSION_BASE = 1_000_000  # fixed, so that runs do not depend on the clock
_TERMINAL = frozenset({"delivered", "returned", "cancelled"})

# Modules mypyc compiles, per set (paths under src/). Left out: core/model.py (new_event builds
# CanonicalEvent through a slot twin whose __class__ it assigns, which a native class does not
# allow; compiled with new_event calling the constructor instead, building an event costs
# 2.5 µs instead of 0.5), core/partner.py, transformers/json_mapping.py and csv_mapping.py
# (valley_express's transformer since session 7) (pydantic models: the
# C that mypyc generates for the pydantic plugin's types does not compile), core/codebook.py
# (its frozen dataclasses, compiled, can no longer be deep-copied; lookups are not hot),
# core/errors.py (not hot).
MODULE_SETS: dict[str, tuple[str, ...]] = {
    "core": tuple(f"carrierwatch/core/{name}.py" for name in (
        "timeutil", "sketch", "windows", "metrics", "state", "pipeline")),
    "transformers": tuple(f"carrierwatch/transformers/{name}.py" for name in (
        "base", "_aggregators", "registry", "aftership", "dhl", "easypost", "fedex", "shippo",
        "ups", "usps")),
    "drivers": ("carrierwatch/replay.py", "carrierwatch/sink.py", "carrierwatch/storage/rows.py"),
}
_MYPYC_CONFIG = """[mypy]
python_version = 3.11
strict = True
warn_unused_ignores = False
plugins = pydantic.mypy
ignore_missing_imports = True
"""

# Profile areas: the cumulative time of the entry points of each stage (disjoint call trees).
_ENTRY_POINTS = (
    ("transform", "/transformers/registry.py", "transform"),
    ("pipeline", "/core/pipeline.py", "process"),
    ("pipeline", "/core/pipeline.py", "flush"),
    ("store", "/sink.py", "add_output"),
    ("store", "/sink.py", "write_batch"),
    ("replay", "/replay.py", "run_replay"),
)


def area_of(filename: str, function: str) -> str | None:
    """The stage whose entry point a profiled function is, if any.

    >>> area_of("/src/carrierwatch/sink.py", "write_batch"), area_of("/x.py", "f")
    ('store', None)
    """
    for area, suffix, name in _ENTRY_POINTS:
        if function == name and filename.endswith(suffix):
            return area
    return None


def in_flight(state: PackageState) -> bool:
    """Not yet delivered, returned or cancelled."""
    return state.status not in _TERMINAL


def state_bytes(state: PackageState) -> int:
    """Deep size of one package's own state: the object, its arrays and tuples, its id string
    and its share of the package table (shared interned strings are not counted)."""
    size = sys.getsizeof(state) + sys.getsizeof(state.fields) + sys.getsizeof(state.package_id)
    size += sys.getsizeof(state.facts) + sum(sys.getsizeof(f) for f in state.facts)
    if state.exc_done:
        size += sys.getsizeof(state.exc_done) + sum(sys.getsizeof(e) for e in state.exc_done)
    return size


def compiled_modules() -> list[str]:
    """The ``carrierwatch`` modules imported so far that run from a compiled extension."""
    return sorted(name for name, module in list(sys.modules.items())
                  if name.startswith("carrierwatch") and str(getattr(module, "__file__", "") or "")
                  .endswith((".so", ".pyd")))


def build_compiled(module_set: str, out_dir: Path) -> tuple[float, list[str]]:
    """Copy ``src/carrierwatch`` into ``out_dir`` and compile the modules of ``module_set`` there
    with mypyc (in place: each extension lands beside its source, and Python's import system
    prefers it). Returns the build's wall seconds and the compiled module paths."""
    files: list[str] = []
    for name in module_set.split("+"):
        if name not in MODULE_SETS:
            raise SystemExit(f"unknown module set {name!r} (known: {', '.join(MODULE_SETS)})")
        files.extend(f for f in MODULE_SETS[name] if f not in files)
    shutil.copytree(ROOT / "src" / "carrierwatch", out_dir / "carrierwatch",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (out_dir / "mypyc.ini").write_text(_MYPYC_CONFIG)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mypyc", "--config-file", "mypyc.ini", *files],
                          cwd=out_dir, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"mypyc failed ({done.returncode}):\n{done.stdout[-4000:]}"
                         f"{done.stderr[-4000:]}")
    return seconds, files


def _run_child(argv: list[str], python_path: Path | None) -> dict[str, Any]:
    """One bench run in a subprocess (``python_path`` first on its ``PYTHONPATH``); its JSON."""
    env = dict(os.environ, CARRIERWATCH_HOME=str(ROOT))
    if python_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(python_path), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env,
                          capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"bench subprocess failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


_COMPARED = ("end_to_end_events_per_s", "end_to_end_events_per_cpu_s",
             "normalize_only_events_per_s", "normalize_only_events_per_cpu_s",
             "pipeline_only_events_per_s", "pipeline_only_events_per_cpu_s")


def _compare_compiled(args: argparse.Namespace) -> int:
    """``--compare-compiled``: pure-Python and compiled subprocesses on the same input."""
    core = _pin_one_core()  # the subprocesses inherit the affinity
    with tempfile.TemporaryDirectory(prefix="cw-bench-compiled-") as tmp_text:
        tmp = Path(tmp_text)
        build_seconds, files = build_compiled(args.compare_compiled, tmp / "compiled")
        print(f"mypyc build of {len(files)} modules ({args.compare_compiled}): "
              f"{build_seconds:.1f} s; core {core}")
        sim_dir = args.sim_dir or tmp / "simulation"
        if not (sim_dir / "manifest.json").exists():
            simulate(args.partners, args.days, args.seed, out_dir=sim_dir,
                     packages_per_day=args.packages_per_day, home=ROOT)
        child = ["--sim-dir", str(sim_dir), "--profile-fraction", "0", "--no-traced-state",
                 "--batch-events", str(args.batch_events)]
        runs: dict[str, list[dict[str, Any]]] = {"pure": [], "compiled": []}
        for round_ in range(1, args.rounds + 1):
            for variant, path in (("pure", None), ("compiled", tmp / "compiled")):
                result = _run_child(child, path)
                runs[variant].append(result)
                print(f"round {round_} {variant:8}: end to end "
                      f"{result['end_to_end_events_per_s']:,} events/s "
                      f"({result['end_to_end_events_per_cpu_s']:,} per CPU-s), normalize only "
                      f"{result['normalize_only_events_per_s']:,} "
                      f"({result['normalize_only_events_per_cpu_s']:,}), pipeline only "
                      f"{result['pipeline_only_events_per_s']:,} "
                      f"({result['pipeline_only_events_per_cpu_s']:,}); "
                      f"{len(result['compiled_modules'])} compiled modules")
    expected = sorted(f[:-3].replace("/", ".") for f in files)
    if any(r["compiled_modules"] for r in runs["pure"]):
        raise SystemExit("the pure-Python run imported compiled modules")
    for result in runs["compiled"]:
        if not set(expected) <= set(result["compiled_modules"]):
            raise SystemExit(f"the compiled run did not import {expected}")
        if result["input"] != runs["pure"][0]["input"]:
            raise SystemExit("the compiled run saw other events than the pure-Python run")
    best = {variant: {key: max(r[key] for r in results) for key in _COMPARED}
            for variant, results in runs.items()}
    ratios = {key: round(best["compiled"][key] / best["pure"][key], 3) for key in _COMPARED}
    for key in _COMPARED:
        print(f"{key:34} pure {best['pure'][key]:>9,}  compiled {best['compiled'][key]:>9,}  "
              f"× {ratios[key]:.2f}")
    end_to_end = best["compiled"]["end_to_end_events_per_s"]
    print(f"goal ≥ {GOAL_EVENTS_PER_S:,} events/s end to end, compiled: "
          f"{'met' if end_to_end >= GOAL_EVENTS_PER_S else 'NOT met'}")
    print(json.dumps({
        "benchmark": "replay_compiled",
        "input": runs["pure"][0]["input"],
        "module_set": args.compare_compiled, "compiled_modules": expected,
        "build_seconds": round(build_seconds, 1), "rounds": args.rounds,
        "pure": best["pure"], "compiled": best["compiled"], "ratio_compiled_to_pure": ratios,
        "time_shares": {variant: max(results, key=lambda r: r["end_to_end_events_per_s"])
                        ["time_shares"] for variant, results in runs.items()},
        "goal_events_per_s": GOAL_EVENTS_PER_S,
        "goal_events_met": end_to_end >= GOAL_EVENTS_PER_S,
    }))
    return 0


def _pin_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {core})
    return core


def _normalize(records: list[RawRecord], registry: PartnerRegistry
               ) -> tuple[float, float, int]:
    """Wall and CPU seconds to transform every record, and the canonical events (not kept)."""
    partners = {p.id: p for p in registry}
    count = 0
    clear_parse_caches()
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    for record in records:
        count += len(partners[record.partner].transform(record.body, record.received_time,
                                                        record.headers).events)
    return time.perf_counter() - start, time.process_time() - cpu, count


def _events(records: list[RawRecord], registry: PartnerRegistry) -> list[CanonicalEvent]:
    partners = {p.id: p for p in registry}
    return [event for record in records for event in partners[record.partner].transform(
        record.body, record.received_time, record.headers).events]


def _batches(events: list[CanonicalEvent], size: int) -> Iterator[list[CanonicalEvent]]:
    for i in range(0, len(events), size):
        yield events[i:i + size]


def _pipeline_only(registry: PartnerRegistry, events: list[CanonicalEvent], batch: int
                   ) -> tuple[float, float]:
    pipe = pipeline_for(registry, version_base=VERSION_BASE)
    chunks = list(_batches(events, batch))
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    for chunk in chunks:
        pipe.process(chunk)
    pipe.flush()
    return time.perf_counter() - start, time.process_time() - cpu


def _replay(records: Iterable[RawRecord], registry: PartnerRegistry, data_dir: Path,
            batch: int, profile: cProfile.Profile | None = None
            ) -> tuple[ReplaySummary, Pipeline, int, float]:
    pipe = pipeline_for(registry, version_base=VERSION_BASE)
    with open_store(Settings(data_dir=data_dir), migrate=True) as store:
        clear_parse_caches()
        gc.collect()
        if profile is not None:
            profile.enable()
        cpu = time.process_time()
        summary = run_replay(records, store, registry, pipeline=pipe, batch_events=batch)
        cpu = time.process_time() - cpu
        if profile is not None:
            profile.disable()
        stored = int(store.query("SELECT count() FROM canonical_events FINAL")[0][0])
    return summary, pipe, stored, cpu


def _floor(records: list[RawRecord], events: list[CanonicalEvent], data_dir: Path,
           batch: int) -> dict[str, float]:
    """CPU µs per canonical event of the steps any Python pipeline of event objects takes.

    On the same input, each step timed on its own (CPU time), none of them doing the real work
    around it: ``orjson.loads`` of every payload (results dropped, as the transformers drop
    theirs); building every canonical event from its 23 values (:func:`event_id`'s BLAKE2b and
    :func:`~carrierwatch.core.model.new_event`, the cheapest constructor there is); dropping
    the duplicates by event id in one ``set``; and writing the event rows of the unique events
    into ``canonical_events`` of a fresh chDB store through the storage interface (Arrow
    columns, in the replay's batches). Codebook mapping, time zones, locations, the package state
    machine, the windows and every table but one are left out, so the sum is a floor: no Python
    code doing all of it can be faster.
    """
    n = len(events)
    values = [_values(e) for e in events]
    loads = orjson.loads
    figures: dict[str, float] = {}

    def timed(name: str, work: Any) -> Any:
        gc.collect()
        cpu = time.process_time()
        result = work()
        figures[name] = (time.process_time() - cpu) / n * 1e6
        return result

    def parse() -> None:
        for record in records:
            loads(record.body)

    def build() -> list[CanonicalEvent]:
        built: list[CanonicalEvent] = []
        append = built.append
        for v in values:
            append(new_event(event_id(v[1], v[2], v[4], v[7]), *v[1:]))
        return built

    def dedup(built: list[CanonicalEvent]) -> list[CanonicalEvent]:
        seen: set[str] = set()
        add = seen.add
        unique: list[CanonicalEvent] = []
        append = unique.append
        for event in built:
            if event.event_id not in seen:
                add(event.event_id)
                append(event)
        return unique

    timed("parse_us", parse)
    built = timed("build_us", build)
    if built != events:
        raise SystemExit("floor: the rebuilt events differ from the transformers' events")
    unique = timed("dedup_us", lambda: dedup(built))
    with open_store(Settings(data_dir=data_dir), migrate=True) as store:
        timed("store_us", lambda: [store.insert_events(unique[i:i + batch])
                                   for i in range(0, len(unique), batch)])
    figures["total_us"] = sum(figures.values())
    return figures


def _values(event: CanonicalEvent) -> tuple[Any, ...]:
    """An event's 23 values in schema order (what :func:`new_event` takes)."""
    return tuple(getattr(event, name) for name in event.__slots__)


def _traced_state_bytes(pipe: Pipeline) -> int:
    """tracemalloc size of the whole pipeline state, rebuilt from its serialisation."""
    data = pipe.to_bytes()
    gc.collect()
    tracemalloc.start()
    try:
        copy = Pipeline.from_bytes(data)
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del copy
    return size


def _profile_summary(profile: cProfile.Profile, top: int) -> tuple[dict[str, float],
                                                                    list[dict[str, Any]]]:
    """Shares of the replay's profiled time per stage, and the top functions by own time."""
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    areas: dict[str, float] = {}
    rows: list[tuple[float, float, int, str]] = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in raw.items():
        area = area_of(filename, name)
        if area is not None:
            areas[area] = areas.get(area, 0.0) + cumtime
        rows.append((tottime, cumtime, calls, f"{filename}:{line}({name})" if filename != "~"
                     else name))
    rows.sort(reverse=True)
    total = areas.pop("replay", 0.0)
    shares: dict[str, float] = {}
    if total:
        shares = {area: round(seconds / total, 3) for area, seconds in areas.items()}
        shares["driver"] = round(max(0.0, 1.0 - sum(shares.values())), 3)
    short = str(ROOT / "src") + "/"
    top_rows = [{"function": where.replace(short, "").replace(sys.prefix, "<venv>"),
                 "calls": calls, "tottime_s": round(tottime, 3), "cumtime_s": round(cumtime, 3)}
                for tottime, cumtime, calls, where in rows[:top]]
    return shares, top_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--partners", type=int, default=5, help="number of simulated partners")
    parser.add_argument("--days", type=int, default=2, help="simulated days")
    parser.add_argument("--packages-per-day", type=float, default=1600.0,
                        help="simulated packages per partner and day")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-events", type=int, default=20_000,
                        help="replay batch size (run_replay's default)")
    parser.add_argument("--profile-fraction", type=float, default=0.3,
                        help="share of the input replayed under cProfile (0: no profile)")
    parser.add_argument("--top", type=int, default=20, help="profile rows to print")
    parser.add_argument("--sim-dir", type=Path, default=None,
                        help="use (or create) this simulation folder instead of a temporary one")
    parser.add_argument("--compare-compiled", metavar="SET", default=None,
                        help="compile SET with mypyc (core, transformers, drivers, or a "
                             "'+'-joined combination) and compare with pure Python")
    parser.add_argument("--build-compiled", metavar="DIR", type=Path, default=None,
                        help="only build the --compare-compiled SET into DIR (which must not "
                             "exist), e.g. to run tests with PYTHONPATH=DIR")
    parser.add_argument("--rounds", type=int, default=2,
                        help="with --compare-compiled: runs of each variant, alternating")
    parser.add_argument("--no-traced-state", action="store_true",
                        help="skip the traced size of the whole pipeline state (reported as 0)")
    args = parser.parse_args(argv)
    if args.compare_compiled and args.build_compiled:
        build_seconds, files = build_compiled(args.compare_compiled, args.build_compiled)
        print(f"mypyc build of {len(files)} modules ({args.compare_compiled}) in "
              f"{build_seconds:.1f} s; use it with PYTHONPATH={args.build_compiled}")
        return 0
    if args.compare_compiled:
        return _compare_compiled(args)
    core = _pin_one_core()

    registry = load_registry(ROOT)
    with tempfile.TemporaryDirectory(prefix="cw-bench-replay-") as tmp_text:
        tmp = Path(tmp_text)
        sim_dir = args.sim_dir or tmp / "simulation"
        started = time.perf_counter()
        if not (sim_dir / "manifest.json").exists():
            simulate(args.partners, args.days, args.seed, out_dir=sim_dir,
                     packages_per_day=args.packages_per_day, home=ROOT)
        simulate_seconds = time.perf_counter() - started
        records = list(iter_inputs([sim_dir], registry=registry))
        payload_bytes = sum(len(r.body) for r in records)
        print(f"input: {len(records):,} payloads ({payload_bytes / 1e6:.1f} MB) from "
              f"{sim_dir} (simulated in {simulate_seconds:.1f} s), core {core}")

        normalize_seconds, normalize_cpu, event_count = _normalize(records, registry)
        normalize_rate = event_count / normalize_seconds
        normalize_cpu_rate = event_count / normalize_cpu
        print(f"normalize only:  {event_count:,} canonical events in {normalize_seconds:.2f} s "
              f"= {normalize_rate:,.0f} events/s ({normalize_cpu_rate:,.0f} per CPU-second)")

        events = _events(records, registry)
        pipeline_seconds, pipeline_cpu = _pipeline_only(registry, events, args.batch_events)
        pipeline_rate = len(events) / pipeline_seconds
        pipeline_cpu_rate = len(events) / pipeline_cpu
        floor = _floor(records, events, tmp / "floor-store", args.batch_events)
        del events
        print(f"pipeline only:   {pipeline_rate:,.0f} events/s ({pipeline_cpu_rate:,.0f} per "
              f"CPU-second; the same events, in batches of {args.batch_events:,}, no store)")

        floor_rate = 1e6 / floor["total_us"]
        print(f"CPython floor:   {floor['total_us']:.2f} µs per event = {floor_rate:,.0f} events "
              f"per CPU-second ({floor['total_us'] / (1e6 / GOAL_EVENTS_PER_S):.0%} of the "
              f"goal's {1e6 / GOAL_EVENTS_PER_S:.0f} µs): parse {floor['parse_us']:.2f}, build "
              f"{floor['build_us']:.2f}, dedup {floor['dedup_us']:.2f}, event rows into chDB "
              f"{floor['store_us']:.2f}")

        summary, pipe, stored, replay_cpu = _replay(records, registry, tmp / "store",
                                                    args.batch_events)
        if summary.events != event_count:
            raise SystemExit(f"replay saw {summary.events} events, normalize {event_count}")
        end_to_end = summary.events / summary.seconds
        end_to_end_cpu = summary.events / replay_cpu
        # getattr: the bench also runs against older trees, whose summary has no timers
        stage_seconds = {stage: float(getattr(summary, f"{stage}_seconds", 0.0)) or 1e-9
                         for stage in ("transform", "pipeline", "store")}
        shares = {stage: seconds / summary.seconds for stage, seconds in stage_seconds.items()}
        shares["driver"] = max(0.0, 1.0 - sum(shares.values()))
        print(f"end to end:      {summary.events:,} canonical events in {summary.seconds:.2f} s "
              f"= {end_to_end:,.0f} events/s ({end_to_end_cpu:,.0f} per CPU-second; "
              f"{end_to_end / normalize_rate:.2f} × normalize only, "
              f"{end_to_end_cpu / normalize_cpu_rate:.2f} in CPU time); "
              f"{summary.accepted:,} accepted, {summary.duplicates:,} duplicates, "
              f"{stored:,} event rows and {summary.rows_written:,} rows in all written")
        stage_us = {stage: seconds / summary.seconds * 1e6 / end_to_end_cpu
                    for stage, seconds in stage_seconds.items()}
        if not hasattr(summary, "transform_seconds"):
            print("  time shares:   n/a (this tree's replay has no stage timers)")
        else:
            print("  time shares:   " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
                  + f"  (pipeline {summary.events / stage_seconds['pipeline']:,.0f} events/s, "
                  f"store {summary.rows_written / stage_seconds['store']:,.0f} rows/s of its time)")
            print("  CPU µs/event:  " + ", ".join(f"{k} {v:.1f}" for k, v in stage_us.items())
                  + f" (of {1e6 / end_to_end_cpu:.1f})")

        states = list(pipe.packages.values())
        flying = [s for s in states if in_flight(s)]
        flying_bytes = sum(map(state_bytes, flying)) / len(flying) if flying else 0.0
        all_bytes = sum(map(state_bytes, states)) / len(states) if states else 0.0
        # a pipeline compiled by mypyc cannot be pickled (its classes have no __dict__ and their
        # constructors need arguments), so --compare-compiled's subprocesses skip this figure
        traced = 0 if args.no_traced_state else _traced_state_bytes(pipe)
        traced_per_package = traced / len(states) if states else 0.0
        print(f"state:           {len(states):,} packages held, {len(flying):,} in flight; "
              f"{flying_bytes:,.0f} B per in-flight package ({all_bytes:,.0f} B per package "
              f"held); whole pipeline state {traced / 1e6:,.1f} MB traced = "
              f"{traced_per_package:,.0f} B per package held (windows included)")

        profile_shares: dict[str, float] = {}
        top_rows: list[dict[str, Any]] = []
        if args.profile_fraction > 0:
            part = records[:max(1, int(len(records) * args.profile_fraction))]
            profile = cProfile.Profile()
            _replay(part, registry, tmp / "profile-store", args.batch_events, profile)
            profile_shares, top_rows = _profile_summary(profile, args.top)
            print(f"profile of the first {len(part):,} payloads (time by stage): "
                  + ", ".join(f"{k} {v:.0%}" for k, v in profile_shares.items()))
            print(f"  {'tottime s':>9} {'cumtime s':>9} {'calls':>9}  function")
            for row in top_rows:
                print(f"  {row['tottime_s']:9.3f} {row['cumtime_s']:9.3f} {row['calls']:9}  "
                      f"{row['function']}")

    goal_rate = end_to_end >= GOAL_EVENTS_PER_S
    goal_memory = flying_bytes < GOAL_BYTES_PER_PACKAGE
    print(f"goal ≥ {GOAL_EVENTS_PER_S:,} events/s end to end: "
          f"{'met' if goal_rate else 'NOT met'}; goal < {GOAL_BYTES_PER_PACKAGE} B per in-flight "
          f"package: {'met' if goal_memory else 'NOT met'}")
    print(json.dumps({
        "benchmark": "replay",
        "input": {"partners": args.partners, "days": args.days,
                  "packages_per_day": args.packages_per_day, "seed": args.seed,
                  "payloads": len(records), "payload_bytes": payload_bytes,
                  "canonical_events": event_count, "accepted": summary.accepted,
                  "duplicates": summary.duplicates, "batch_events": args.batch_events},
        "end_to_end_events_per_s": round(end_to_end),
        "normalize_only_events_per_s": round(normalize_rate),
        "ratio_end_to_end_to_normalize": round(end_to_end / normalize_rate, 3),
        "end_to_end_events_per_cpu_s": round(end_to_end_cpu),
        "normalize_only_events_per_cpu_s": round(normalize_cpu_rate),
        "ratio_end_to_end_to_normalize_cpu": round(end_to_end_cpu / normalize_cpu_rate, 3),
        "pipeline_only_events_per_s": round(pipeline_rate),
        "pipeline_only_events_per_cpu_s": round(pipeline_cpu_rate),
        "end_to_end_seconds": round(summary.seconds, 3),
        "end_to_end_cpu_seconds": round(replay_cpu, 3),
        "time_shares": {k: round(v, 3) for k, v in shares.items()},
        "stage_cpu_us_per_event": {k: round(v, 2) for k, v in stage_us.items()},
        "floor_cpu_us_per_event": {k: round(v, 2) for k, v in floor.items()},
        "floor_events_per_cpu_s": round(floor_rate),
        "floor_share_of_goal_budget": round(floor["total_us"] / (1e6 / GOAL_EVENTS_PER_S), 3),
        "rows_written": summary.rows_written,
        "packages_held": len(states), "packages_in_flight": len(flying),
        "bytes_per_in_flight_package": round(flying_bytes),
        "bytes_per_package_held": round(all_bytes),
        "traced_state_bytes": traced,
        "traced_bytes_per_package_held": round(traced_per_package),
        "profile_area_shares": profile_shares,
        "profile_top": top_rows[:10],
        "goal_events_per_s": GOAL_EVENTS_PER_S, "goal_events_met": goal_rate,
        "goal_bytes_per_package": GOAL_BYTES_PER_PACKAGE, "goal_memory_met": goal_memory,
        "compiled_modules": compiled_modules(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
