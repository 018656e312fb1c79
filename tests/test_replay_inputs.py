"""What replay makes of its inputs: bad lines, any order, backfills, and what it tells the user.

Each test compares a replay of damaged, shuffled or re-shaped input with the replay of the clean,
ordered simulator feed (``result_snapshot``), so that "nothing good was lost" is checked row by
row, not by a count.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from carrierwatch.replay import iter_inputs, pipeline_for, result_snapshot, run_replay
from carrierwatch.settings import Settings
from carrierwatch.storage import open_store
from carrierwatch.synthetic.rawlog import read_rawlog
from carrierwatch.synthetic.simulator import simulate
from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = load_registry(ROOT)
EXE = Path(sys.executable).parent / "carrierwatch"
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of three partners' feeds (webhook, poll and CSV drop), warm-up included."""
    out = tmp_path_factory.mktemp("feed")
    simulate(["fedex", "ups", "valley_express"], 2, 11, [], out_dir=out, packages_per_day=60)
    return out


def _replay(inputs: list[Path], data_dir: Path, **options: Any) -> tuple[Any, dict[str, Any]]:
    with open_store(Settings(data_dir=data_dir), migrate=True) as store:
        summary = run_replay(iter_inputs(inputs, **options), store, REGISTRY,
                             pipeline=pipeline_for(REGISTRY, version_base=0))
        return summary, result_snapshot(store)


def _lines(folder: Path) -> list[bytes]:
    return [line for log in sorted(folder.glob("*.rawlog.jsonl"))
            for line in log.read_bytes().splitlines(keepends=True)]


def _run_cli(*args: str, data_dir: Path, stdin: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "CARRIERWATCH_DATA_DIR": str(data_dir),
           "CARRIERWATCH_HOME": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=600,
                          env=env, input=stdin)


def test_bad_lines_become_dead_letters_and_every_good_record_is_replayed(
        feed: Path, tmp_path: Path) -> None:
    clean_summary, clean = _replay([feed], tmp_path / "clean")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for log in feed.glob("*.rawlog.jsonl"):
        (damaged / log.name).write_bytes(log.read_bytes())
    ups = damaged / "ups.rawlog.jsonl"
    lines = ups.read_bytes().splitlines(keepends=True)
    soon = orjson.loads(lines[5])
    soon["received_time"] = "soon"
    random_bytes = bytes(random.Random(3).randrange(256) for _ in range(300)).replace(b"\n", b"")
    # a line of random bytes and a record received "soon" in the middle, a truncated last line
    lines[5:5] = [random_bytes + b"\n", orjson.dumps(soon) + b"\n"]
    truncated = lines[-1][: len(lines[-1]) // 2]
    ups.write_bytes(b"".join(lines[:-1]) + truncated)

    done = _run_cli("replay", "--no-progress", "--no-anomalies", str(damaged),
                    data_dir=tmp_path / "cli")
    assert done.returncode == 3, done.stdout + done.stderr  # completed with dead letters
    assert "Traceback" not in done.stdout + done.stderr
    assert "ups.rawlog.jsonl:6: not a raw-log record" in done.stdout
    assert "ups.rawlog.jsonl:7: received_time is not an integer (ms): 'soon'" in done.stdout
    assert f"ups.rawlog.jsonl:{len(lines)}: not a raw-log record" in done.stdout
    assert 'carrierwatch query "SELECT partner_id, path, error FROM dead_letters' in done.stdout

    summary, snapshot = _replay([damaged], tmp_path / "api")
    # the truncated record is lost (it is a dead letter), so compare without its payload:
    # every other record, of every file, is in the store exactly as in the clean replay
    assert summary.dead_letters == clean_summary.dead_letters + 3
    assert summary.payloads == clean_summary.payloads - 1
    assert [(b.line, b.partner) for b in summary.bad_inputs] == [
        (6, "ups"), (7, "ups"), (len(lines), "ups")]
    stored = {(p, path): n for p, path, _, n in snapshot["dead_letters"]}
    assert stored[("ups", "ups.rawlog.jsonl:6")] == 1
    assert stored[("ups", "ups.rawlog.jsonl:7")] == 1
    without_last = tmp_path / "without-last"
    without_last.mkdir()
    for log in feed.glob("*.rawlog.jsonl"):
        data = log.read_bytes().splitlines(keepends=True)
        (without_last / log.name).write_bytes(b"".join(data[:-1] if log.name == ups.name
                                                       else data))
    _, reference = _replay([without_last], tmp_path / "reference")
    assert snapshot["metric_windows"] == reference["metric_windows"]
    assert snapshot["package_outcomes"] == reference["package_outcomes"]
    assert snapshot["canonical_events"] == reference["canonical_events"]
    assert clean["canonical_events"] != []


def test_a_shuffled_copy_of_the_feed_replays_exactly_as_the_ordered_feed(
        feed: Path, tmp_path: Path) -> None:
    summary, ordered = _replay([feed], tmp_path / "ordered")
    lines = _lines(feed)
    random.Random(5).shuffle(lines)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    # records of every partner mixed over three files, in no order at all
    for number in range(3):
        (shuffled / f"part{number}.rawlog.jsonl").write_bytes(b"".join(lines[number::3]))
    shuffled_summary, snapshot = _replay([shuffled], tmp_path / "replayed")
    assert snapshot == ordered
    assert (shuffled_summary.accepted, shuffled_summary.duplicates,
            shuffled_summary.too_late) == (summary.accepted, summary.duplicates,
                                           summary.too_late)


def test_an_export_in_order_id_order_is_not_discarded_as_too_late(feed: Path,
                                                                  tmp_path: Path) -> None:
    """A partner's historical export delivered at once, sorted by anything but time: all of it
    arrives together, so its events are applied in event-time order and none is too late."""
    records = [record for record in read_rawlog((feed / "fedex.rawlog.jsonl").open("rb"))]
    export = tmp_path / "export"
    export.mkdir()
    exported_at = records[-1].received_time + 30 * DAY_MS
    by_body = sorted(records, key=lambda r: r.body)  # e.g. by order id: no time order at all
    with (export / "fedex.rawlog.jsonl").open("wb") as out:
        for record in by_body:
            out.write(orjson.dumps({"partner": "fedex", "received_time": exported_at,
                                    "headers": dict(record.headers),
                                    "body": record.body.decode()}) + b"\n")
    summary, snapshot = _replay([export], tmp_path / "store")
    assert summary.too_late == 0
    events = sum(1 for r in records for _ in REGISTRY.get("fedex").transform(
        r.body, r.received_time).events)
    assert summary.events == events
    unique = len({e.event_id for r in records
                  for e in REGISTRY.get("fedex").transform(r.body, r.received_time).events})
    assert summary.accepted == unique
    assert snapshot["canonical_events"][0][1:3] == (unique, unique)


def test_loose_payload_files_replay_alike_whatever_their_modification_times(
        feed: Path, tmp_path: Path) -> None:
    records = list(read_rawlog((feed / "ups.rawlog.jsonl").open("rb")))[:400]
    snapshots = []
    for run, seed in enumerate((1, 2)):
        folder = tmp_path / f"run{run}" / "ups"
        folder.mkdir(parents=True)
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        for rank, index in enumerate(order):
            path = folder / f"{index:05d}.json"
            path.write_bytes(records[index].body)
            stamp = 1_700_000_000 + rank  # copied in a random order, a second apart
            os.utime(path, (stamp, stamp))
        summary, snapshot = _replay([folder], tmp_path / f"store{run}")
        assert summary.too_late == 0 and summary.payloads == len(records)
        snapshots.append(snapshot)
    # received times (the files' mtimes) differ between the runs, so compare what they decide
    assert snapshots[0]["package_outcomes"] == snapshots[1]["package_outcomes"]
    assert snapshots[0]["canonical_events"] == snapshots[1]["canonical_events"]


def _csv_drop(rows: list[tuple[str, str, str]]) -> str:
    header = ("tracking_number,status_code,local_timestamp,time_zone,location,reason,"
              "service_level,promised_by\n")
    return header + "".join(
        f'{number},{code},{local},America/Denver,"Salt Lake City, UT 84104",,STD,'
        "2026-03-12T20:00:00-07:00\n" for number, code, local in rows)


def _late_backfill(folder: Path, *, newest_first: bool) -> Path:
    """A courier's backfill in two CSV drops: every package's delivery (day 10) and its
    manifest and pickup (days 1-2). Received newest first, the old scans of each package are
    eight days older than its delivery: too late for the default two days of lateness."""
    numbers = [f"VX9{n:05d}" for n in range(40)]
    old = _csv_drop([row for number in numbers for row in (
        (number, "MAN", "2026-03-01 16:40"), (number, "PUP", "2026-03-02 09:12"))])
    new = _csv_drop([(number, "DLV", "2026-03-10 11:05") for number in numbers])
    first, second = (new, old) if newest_first else (old, new)
    folder.mkdir()
    received = 1_773_500_000_000
    with (folder / "valley_express.rawlog.jsonl").open("wb") as out:
        for offset, body in enumerate((first, second)):
            out.write(orjson.dumps({"partner": "valley_express",
                                    "received_time": received + offset * 3_600_000,
                                    "headers": {"content-type": "text/csv"},
                                    "body": body}) + b"\n")
    return folder


def test_a_run_with_many_events_too_late_fails_loudly(tmp_path: Path) -> None:
    """A backfill whose newest drop came first: 80 of 120 events are too late, so the run ends
    with exit 4 and says so, unless that is allowed; in the right order it exits 0."""
    late = _late_backfill(tmp_path / "late", newest_first=True)
    done = _run_cli("replay", "--no-progress", "--no-anomalies", str(late),
                    data_dir=tmp_path / "a")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "INCOMPLETE: 80 events (66.7 %) came too late" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    allowed = _run_cli("replay", "--no-progress", "--no-anomalies", "--max-too-late", "100",
                       str(late), data_dir=tmp_path / "b")
    assert allowed.returncode == 0, allowed.stderr
    in_order = _late_backfill(tmp_path / "in-order", newest_first=False)
    clean = _run_cli("replay", "--no-progress", "--no-anomalies", str(in_order),
                     data_dir=tmp_path / "c")
    assert clean.returncode == 0, clean.stdout + clean.stderr


def test_replay_validates_its_options_and_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in (
            (["--batch-events", "0", str(empty)], "'--batch-events': 0 is not in the range"),
            (["--batch-events", "-5", str(empty)], "'--batch-events': -5 is not in the range"),
            ([str(empty)], "holds no raw logs"),
            ([str(tmp_path / "missing")], "no such file")):
        done = _run_cli("replay", *args, data_dir=tmp_path / "store")
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr
    blank = tmp_path / "blank.rawlog.jsonl"
    blank.write_text("\n\n")
    done = _run_cli("replay", str(blank), data_dir=tmp_path / "store")
    assert done.returncode == 2 and "no records in" in done.stderr


def test_replay_ends_with_the_scorecards_and_query_and_reset_read_and_empty_the_store(
        feed: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = _run_cli("replay", "--no-progress", "--no-anomalies", str(feed), data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Partner scorecards" in out and "decided:" in out
    for partner in ("fedex", "ups", "valley_express"):
        assert partner in out
    assert "too late" in out and "days older than an event its package" in out  # terms explained
    assert f"chDB (embedded) at {data_dir / 'clickhouse'}" in out
    assert "<EmbeddedStore" not in out

    counted = _run_cli("query", "SELECT partner_id, count() AS n FROM canonical_events FINAL "
                       "GROUP BY partner_id ORDER BY partner_id", "--format", "csv",
                       data_dir=data_dir)
    assert counted.returncode == 0, counted.stderr
    rows = [line.split(",") for line in counted.stdout.splitlines()]
    assert rows[0] == ["partner_id", "n"]
    with open_store(Settings(data_dir=data_dir)) as store:
        expected = store.query("SELECT partner_id, count() FROM canonical_events FINAL "
                               "GROUP BY partner_id ORDER BY partner_id")
        stored_rows = store.query("SELECT count() FROM canonical_events")[0][0]
    assert [(p, int(n)) for p, n in rows[1:]] == [(p, int(n)) for p, n in expected]
    as_json = _run_cli("query", "SELECT min(event_time) AS first FROM canonical_events",
                       "--format", "json", data_dir=data_dir)
    first = orjson.loads(as_json.stdout)[0]["first"]
    assert first.endswith("Z") and first[:2] == "20"  # ISO 8601, UTC
    refused = _run_cli("query", "DROP TABLE canonical_events", data_dir=data_dir)
    assert refused.returncode == 1 and "readonly" in refused.stderr.lower()
    assert "Traceback" not in refused.stderr

    unconfirmed = _run_cli("reset", data_dir=data_dir, stdin="")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    emptied = _run_cli("reset", "--yes", data_dir=data_dir)
    assert emptied.returncode == 0, emptied.stderr
    # the rows held, versions not yet merged included
    assert f"removed {stored_rows:,} rows from canonical_events" in emptied.stdout
    with open_store(Settings(data_dir=data_dir)) as store:
        assert store.query("SELECT count() FROM canonical_events")[0][0] == 0
        assert store.query("SELECT count() FROM metric_windows")[0][0] == 0
        assert store.migration_status()  # the schema stays


def test_the_data_directory_is_per_user_and_can_be_overridden(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.delenv("CARRIERWATCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.data_dir == tmp_path / "xdg" / "carrierwatch"
    assert settings.demo_data_dir == tmp_path / "xdg" / "carrierwatch" / "demo"
    monkeypatch.setenv("CARRIERWATCH_DATA_DIR", str(tmp_path / "env"))
    assert Settings().data_dir == tmp_path / "env"
    # --data-dir wins over the environment, for the command and what it runs
    done = subprocess.run([str(EXE), "--data-dir", str(tmp_path / "flag"), "query",
                           "SELECT 1 AS one", "--format", "csv"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "CARRIERWATCH_HOME": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["one", "1"]
    assert (tmp_path / "flag" / "clickhouse").is_dir()
    assert not (tmp_path / "env").exists() and not (tmp_path / ".carrierwatch").exists()
