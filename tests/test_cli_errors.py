"""Errors are messages: every command, run as a user runs it, on broken inputs.

Each command and subcommand is discovered from the click group (:func:`carrierwatch.cli.
leaf_commands`), so a new command gets the generic cases (an unknown option; garbage for every
numeric, choice and date option; a missing path, a binary file, an empty folder or an
unwritable ``/proc/nope`` for every path parameter) without anyone listing it. Every case runs
the real CLI in a subprocess with its own data directory and with
``CARRIERWATCH_KAFKA_BOOTSTRAP`` on a closed loopback port (no broker), and asserts that nothing
prints a Python traceback and that the exit code is the documented one (the table in
:mod:`carrierwatch.core.errors`). :data:`BASE` holds one valid invocation per command, into
which the broken values are put; :func:`test_every_command_has_a_base_invocation` fails until a
new command is given one (or ``None`` when no valid run fits in a test: servers, the demo).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from carrierwatch.cli import leaf_commands
from carrierwatch.core.errors import EXIT_ERROR, EXIT_UNAVAILABLE, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "fedex" / "lifecycle_delivered.json"
VX_SAMPLE = ROOT / "samples" / "valley_express" / "lifecycle_delivered.csv"

Path_ = tuple[str, ...]


@dataclass(frozen=True)
class Base:
    """A valid invocation (options, positional arguments) and its exit code in the broken
    environment (None: never run as it is, e.g. a server that runs until stopped)."""

    options: tuple[str, ...] = ()
    arguments: tuple[str, ...] = ()
    expect: int | None = 0


BASE: dict[Path_, Base | None] = {
    ("normalize",): Base(("--partner", "fedex"), (str(SAMPLE),)),
    ("replay",): Base(("--no-progress", "--no-anomalies"), (str(SAMPLE),)),
    ("reset",): Base(("--yes",)),
    ("query",): Base((), ("SELECT 1",)),
    ("partners", "list"): Base(),
    ("partners", "add"): None,  # writes into the configuration home: explicit cases below
    ("codebook", "check"): Base(),
    ("demo",): None,  # a simulated week: explicit cases below
    ("schema-registry", "serve"): Base(("--port", "0"), expect=None),  # serves until stopped
    ("schema-registry", "seed"): Base(),
    ("schema-registry", "versions"): Base(),
    ("anomaly", "detectors"): Base(),
    ("anomaly", "nab"): Base(("--data", "{nab_data}", "--windows", "{nab_windows}",
                              "--out", "{out}")),
    ("kafka", "start"): Base(("--port", "{free_port}", "--controller-port", "{free_port2}",
                              "--data-dir", "{kafka_dir}"), expect=None),  # would start Kafka
    ("kafka", "stop"): Base(("--data-dir", "{kafka_dir}")),  # not running: nothing to do
    ("kafka", "status"): Base(("--data-dir", "{kafka_dir}"), expect=3),  # 3: stopped
    ("kafka", "jars"): None,  # runs Maven when the jars are missing
    ("simulate",): Base(("--days", "1", "--packages-per-day", "1", "--partners", "1",
                         "--warmup-days", "0", "--workers", "1", "--out", "{out}")),
    ("worker",): Base(expect=EXIT_UNAVAILABLE),  # no broker
    ("sink",): Base(("--wait", "0"), expect=EXIT_UNAVAILABLE),
    ("topics",): Base(expect=EXIT_UNAVAILABLE),
    ("gateway",): Base(("--port", "0"), expect=None),  # serves until stopped (spools without Kafka)
    # no broker: the file waits in the local spool (durable), exit 0
    ("ingest-file",): Base(("--partner", "valley_express"), (str(VX_SAMPLE),)),
    ("watch",): Base(("--once", "--settle-seconds", "0"), ("{out}",)),  # an empty drop folder
    # an empty store: no data for the week, exit 2 and no report
    ("scorecard",): Base(("--week", "2026-W10", "--out", "{out}"), expect=EXIT_USAGE),
    ("status",): Base(expect=EXIT_USAGE),  # an empty store: nothing to report, exit 2
    ("decisions", "check"): Base(),
    ("escalations", "list"): Base(),
    ("escalations", "retry"): Base(expect=EXIT_ERROR),  # no dead-lettered escalation
    ("escalations", "run"): Base(("--max-seconds", "1"), expect=EXIT_UNAVAILABLE),  # no broker
    ("takeover",): Base(("--list",)),
    ("tasks", "list"): Base(),
    ("tasks", "done"): Base((), ("esc_none",), expect=EXIT_ERROR),  # no such open task
    # no Alertmanager on the closed port: unavailable
    ("silence",): Base(("--partner", "ups", "--reason", "test", "--until", "1h",
                        "--alertmanager-url", "http://127.0.0.1:9"), expect=EXIT_UNAVAILABLE),
    ("dashboards", "generate"): Base(("--out", "{out}")),
    ("feed",): None,  # needs a running gateway: tests/ingest/test_feed.py runs its cases
    # no broker: the announcements cannot be sent
    ("heartbeat",): Base(("--once", "--drop-dir", "{out}"), expect=EXIT_UNAVAILABLE),
    # no broker: polls (nothing followed) until --max-seconds, the spool holds what comes
    ("poll",): Base(("--max-seconds", "1", "--metrics-port", "0"),
                    expect=EXIT_ERROR),  # no API credentials in the environment: exit 1
    ("track", "add"): Base(("--partner", "ups"), ("1Z5R89W10300000001",)),
    ("track", "list"): Base(),
    ("track", "remove"): Base(("--partner", "ups"), ("1Z5R89W10300000001",)),
    ("track", "sync"): Base(),
    ("simulate-apis",): Base(("--port", "0"), expect=None),  # serves until stopped
    ("alerts", "validate"): Base(),
    ("alerts", "generate"): Base(("--out", "{out}")),
}

#: what each path parameter is: "input" (read), "output" (written), "state" (a data directory)
PATH_ROLES: dict[tuple[Path_, str], str] = {
    (("replay",), "files"): "input",
    (("codebook", "check"), "paths"): "input",
    (("schema-registry", "serve"), "data_dir"): "state",
    (("anomaly", "nab"), "data_dir"): "input",
    (("anomaly", "nab"), "windows_file"): "input",
    (("anomaly", "nab"), "profiles_file"): "input",
    (("anomaly", "nab"), "out_dir"): "output",
    (("kafka", "start"), "data_dir"): "state",
    (("kafka", "stop"), "data_dir"): "state",
    (("kafka", "status"), "data_dir"): "state",
    (("simulate",), "out_dir"): "output",
    (("gateway",), "secrets_file"): "input",
    (("ingest-file",), "files"): "input",  # binary.dat: not a .csv of valley_express → exit 1
    (("watch",), "directory"): "state",  # created when missing; done/ and failed/ go there
    (("scorecard",), "out_dir"): "output",
    (("decisions", "check"), "folder"): "input",
    (("dashboards", "generate"), "out_dir"): "output",
    (("feed",), "paths"): "input",
    (("heartbeat",), "drop_dir"): "state",  # created when missing; heartbeat files go there
    (("heartbeat",), "secrets_file"): "input",
    (("poll",), "secrets_file"): "input",
    (("alerts", "generate"), "out_dir"): "output",
}

#: exit codes that differ from the generic rule (input: binary → 1, empty folder → 1; output
#: or state: /proc/nope → 1; a file where a folder is wanted, or the reverse → 2; missing → 2)
EXPECT: dict[tuple[Path_, str, str], int | None] = {
    # a file in a folder that names no partner: "unknown partner" (the folder name), a usage error
    (("replay",), "files", "binary"): EXIT_USAGE,
    # an empty folder is the lead's replay item: only "no traceback, a documented code" here
    (("replay",), "files", "empty"): None,
    (("codebook", "check"), "paths", "empty"): EXIT_USAGE,  # a folder is not a codebook file
    (("decisions", "check"), "folder", "empty"): EXIT_USAGE,  # no table to check
    # a file not named <partner>.rawlog.jsonl is not a raw log: a usage error, like replay's
    (("feed",), "paths", "binary"): EXIT_USAGE,
    (("kafka", "stop"), "data_dir", "proc"): 0,  # nothing runs from there: nothing to stop
    (("kafka", "status"), "data_dir", "proc"): 3,  # stopped
}

NUMERIC = (click.types.IntParamType, click.types.FloatParamType)
#: commands whose errors are ``file:line: message`` lines (like a compiler's), not one line
FILE_LINE_ERRORS = {("codebook", "check"), ("decisions", "check")}


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    expect: int | None  # None: any documented code (an item another part decides)
    env: tuple[tuple[str, str], ...] = ()
    error_line: bool = True  # a non-zero exit says `carrierwatch: error: ...` on stderr
    seconds: float = 60.0  # bound on the run time
    id: str = field(default="", compare=False)


def _with(base: Base, param: click.Parameter, value: str) -> tuple[str, ...]:
    """The base invocation with ``param`` set to ``value``."""
    if isinstance(param, click.Argument):
        return (*base.options, value)
    flag = max(param.opts, key=len)
    options = list(base.options)
    for i, token in enumerate(options):
        if token in param.opts:
            del options[i:i + 2]
            break
    return (*options, flag, value, *base.arguments)


def generic_cases() -> Iterator[Case]:
    for path, command in sorted(leaf_commands().items()):
        name = " ".join(path)
        base = BASE.get(path) or Base()
        yield Case((*path, "--no-such-option"), EXIT_USAGE, id=f"{name} --no-such-option")
        if BASE.get(path) is not None and base.expect is not None:
            yield Case((*path, *base.options, *base.arguments), base.expect,
                       seconds=20.0 if base.expect == EXIT_UNAVAILABLE else 60.0,
                       id=f"{name} (valid, no broker)")
        for param in command.params:
            label = f"{name} {param.name}"
            if isinstance(param, click.Option) and param.is_flag:
                continue
            if isinstance(param.type, NUMERIC):
                yield Case((*path, *_with(base, param, "not-a-number")), EXIT_USAGE,
                           id=f"{label}=not-a-number")
            elif isinstance(param.type, click.Choice):
                yield Case((*path, *_with(base, param, "no-such-choice")), EXIT_USAGE,
                           id=f"{label}=no-such-choice")
            elif isinstance(param.type, click.DateTime):
                yield Case((*path, *_with(base, param, "not-a-date")), EXIT_USAGE,
                           id=f"{label}=not-a-date")
            elif isinstance(param.type, click.Path):
                role = PATH_ROLES.get((path, str(param.name)), "unclassified")
                kinds = {"binary": "{binary}", "empty": "{empty}"}
                if role == "input":
                    kinds["missing"] = "{missing}"
                else:
                    kinds["proc"] = "/proc/nope"
                for kind, value in kinds.items():
                    key = (path, str(param.name), kind)
                    if key in EXPECT:
                        expect = EXPECT[key]
                    elif kind == "missing":
                        expect = EXIT_USAGE
                    elif kind == "binary":
                        expect = EXIT_ERROR if param.type.file_okay else EXIT_USAGE
                    elif kind == "empty":
                        if not param.type.dir_okay:
                            expect = EXIT_USAGE
                        elif role == "input":
                            expect = EXIT_ERROR
                        else:
                            continue  # an empty output folder is a valid output folder
                    else:
                        expect = EXIT_ERROR
                    yield Case((*path, *_with(base, param, value)), expect,
                               error_line=path not in FILE_LINE_ERRORS, id=f"{label}={kind}")


CLOSED = "{closed_port}"


def explicit_cases() -> Iterator[Case]:
    yield Case(("kafka", "start", "--port", CLOSED, "--data-dir", "{kafka_dir}"), EXIT_ERROR,
               seconds=20, id="kafka start on a busy port")
    yield Case(("kafka", "start", "--port", "70000"), EXIT_USAGE, id="kafka start --port 70000")
    yield Case(("normalize", "--partner", "fedex", "{binary}"), 3, error_line=False,
               id="normalize a binary payload: a dead letter")
    yield Case(("normalize", "--partner", "fedex", "{missing}"), EXIT_USAGE,
               id="normalize a missing file")
    yield Case(("normalize", "--partner", "fedex", "{empty}"), EXIT_USAGE,
               id="normalize a folder")
    yield Case(("normalize", "--partner", "nosuch", str(SAMPLE)), EXIT_USAGE,
               id="normalize an unknown partner")
    yield Case(("codebook", "check", "{binary}"), EXIT_ERROR, error_line=False,
               id="codebook check a binary file")
    yield Case(("anomaly", "nab", "--data", "{empty}", "--windows", "{nab_windows}",
                "--out", "{out}"), EXIT_ERROR, id="anomaly nab on an incomplete data folder")
    yield Case(("anomaly", "nab", "--data", "{nab_data}", "--windows", "{nab_windows}",
                "--out", "{out}", "--detector", "nosuch"), EXIT_USAGE,
               id="anomaly nab --detector nosuch")
    yield Case(("simulate", "--out", "/proc/nope", "--days", "1", "--packages-per-day", "1",
                "--partners", "1", "--warmup-days", "0", "--workers", "1"), EXIT_ERROR,
               id="simulate --out /proc/nope")
    yield Case(("simulate", "--partners", "nosuch", "--out", "{out}"), EXIT_USAGE,
               id="simulate --partners nosuch")
    yield Case(("simulate", "--incident", "garbage", "--out", "{out}"), EXIT_USAGE,
               id="simulate --incident garbage")
    for option in ("--days", "--partners", "--packages-per-day"):
        yield Case(("demo", option, "0"), EXIT_USAGE, id=f"demo {option} 0")
    yield Case(("schema-registry", "serve", "--port", CLOSED), EXIT_ERROR, seconds=20,
               id="schema-registry serve on a busy port")
    yield Case(("schema-registry", "serve", "--host", "nosuchhost.invalid", "--port", "0"),
               EXIT_ERROR, seconds=20, id="schema-registry serve on an unknown host")
    for command in (("partners", "list"), ("codebook", "check"),
                    ("normalize", "--partner", "fedex", str(SAMPLE))):
        yield Case(command, EXIT_ERROR, env=(("CARRIERWATCH_HOME", "{empty}"),),
                   id=f"{' '.join(command[:2])}: CARRIERWATCH_HOME without partners/")
    yield Case(("reset",), EXIT_USAGE, id="reset without --yes and without a terminal")
    yield Case(("query", "DROP TABLE canonical_events"), EXIT_ERROR, id="query DROP TABLE")
    yield Case(("query", "SELECT nonsense FROM nowhere"), EXIT_ERROR, id="query bad SQL")
    yield Case(("--data-dir", "/proc/nope", "replay", "--no-progress", str(SAMPLE)), EXIT_ERROR,
               id="--data-dir /proc/nope replay")
    yield Case(("demo", "--incident", "garbage"), EXIT_USAGE, id="demo --incident garbage")
    yield Case(("normalize", "--partner", "fedex", "/proc/self/mem"), EXIT_ERROR,
               id="normalize an unreadable file")
    yield Case(("demo",), EXIT_ERROR, env=(("CARRIERWATCH_DATA_DIR", "/proc/nope"),),
               id="demo with an unwritable data dir")
    yield Case(("partners", "add", "Bad Id"), EXIT_USAGE, id="partners add 'Bad Id'")
    yield Case(("partners", "add", "acme_nowhere", "--timezone", "America/Chicago",
                "--country", "US"), EXIT_ERROR,
               env=(("CARRIERWATCH_HOME", "/proc/nope"),),
               id="partners add into an unwritable home")
    for command in (("schema-registry", "seed"), ("schema-registry", "versions")):
        yield Case(command, EXIT_UNAVAILABLE, seconds=20,
                   env=(("CARRIERWATCH_SCHEMA_REGISTRY_URL", "http://127.0.0.1:{closed_port}"),),
                   id=f"{' '.join(command)}: registry not answering")
        yield Case(command, EXIT_ERROR, env=(("CARRIERWATCH_DATA_DIR", "/proc/nope"),),
                   id=f"{' '.join(command)}: unwritable data dir")
    yield Case(("replay", "--no-progress", str(SAMPLE)), EXIT_UNAVAILABLE, seconds=30,
               env=(("CARRIERWATCH_CLICKHOUSE_URL", "http://127.0.0.1:{closed_port}"),),
               id="replay: ClickHouse server not answering")
    yield Case(("replay", "--no-progress", str(SAMPLE)), EXIT_ERROR,
               env=(("CARRIERWATCH_DATA_DIR", "/proc/nope"),),
               id="replay: unwritable data dir")
    for week in ("2026-47", "2026-W60", "last", "9999-W52"):
        yield Case(("scorecard", "--week", week, "--out", "{out}"), EXIT_USAGE,
                   id=f"scorecard --week {week}")
    yield Case(("status", "--since", "soon"), EXIT_USAGE, id="status --since soon")
    yield Case(("status", "--partner", "nobody"), EXIT_USAGE, id="status --partner nobody")
    yield Case(("scorecard", "--week", "2026-W10", "--partner", "nobody", "--out", "{out}"),
               EXIT_USAGE, id="scorecard --partner nobody")
    yield Case(("scorecard", "--week", "2026-W10", "--out", "{out}"), EXIT_UNAVAILABLE,
               seconds=30,
               env=(("CARRIERWATCH_CLICKHOUSE_URL", "http://127.0.0.1:{closed_port}"),),
               id="scorecard: ClickHouse server not answering")
    for command in (("worker",), ("sink",), ("topics",)):
        yield Case(command, EXIT_UNAVAILABLE, seconds=20,
                   env=(("CARRIERWATCH_KAFKA_BOOTSTRAP", "PLAINTEXT://127.0.0.1:{closed_port}"),),
                   id=f"{command[0]}: no broker (PLAINTEXT:// address)")


CASES = [*generic_cases(), *explicit_cases()]


def documented_codes(args: tuple[str, ...]) -> set[int]:
    """The exit codes the help of the command that ``args`` run names (sentences saying exit)."""
    commands = leaf_commands()
    args = args[2:] if args[:1] == ("--data-dir",) else args  # the group's own option
    path = max((p for p in commands if args[:len(p)] == p), key=len)
    command = commands[path]
    text = " ".join(command.get_help(click.Context(command, info_name=path[-1])).split())
    return {int(number) for sentence in re.split(r"\.\s", text) if "exit" in sentence.lower()
            for number in re.findall(r"\b(\d{1,3})\b", sentence)}


class World:
    """The broken inputs and the environment every case runs in."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.binary = root / "binary.dat"
        self.binary.write_bytes(bytes(range(256)) * 8 + b"\xff\xfe\x00garbage")
        self.empty = root / "empty"
        self.empty.mkdir()
        self.missing = root / "missing" / "nothing.json"
        self.nab_data = root / "nab"
        (self.nab_data / "cat").mkdir(parents=True)
        rows = "\n".join(f"2020-01-01 {h:02d}:{m:02d}:00,{(h * 7 + m) % 13}"
                         for h in range(24) for m in range(0, 60, 10))
        (self.nab_data / "cat" / "series.csv").write_text(f"timestamp,value\n{rows}\n")
        self.nab_windows = root / "windows.json"
        self.nab_windows.write_text(
            '{"cat/series.csv": [["2020-01-01 10:00:00.000000", "2020-01-01 12:00:00.000000"]]}')
        self.closed = socket.socket()  # bound, never listening: connections are refused
        self.closed.bind(("127.0.0.1", 0))
        self.closed_port = self.closed.getsockname()[1]
        self.kafka_dirs: list[Path] = []
        self.count = 0

    def run(self, case: Case) -> tuple[subprocess.CompletedProcess[bytes], float]:
        self.count += 1
        scratch = self.root / f"case{self.count}"
        scratch.mkdir()
        kafka_dir = scratch / "kafka"
        self.kafka_dirs.append(kafka_dir)
        free = []
        for _ in range(2):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                free.append(probe.getsockname()[1])
        values = {"binary": self.binary, "empty": self.empty, "missing": self.missing,
                  "nab_data": self.nab_data, "nab_windows": self.nab_windows,
                  "out": scratch / "out", "kafka_dir": kafka_dir,
                  "closed_port": self.closed_port, "free_port": free[0], "free_port2": free[1]}
        args = [a.format(**values) for a in case.args]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CARRIERWATCH_") or k == "CARRIERWATCH_NAB_DIR"}
        env.update({
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                        env.get("PYTHONPATH")])),
            "CARRIERWATCH_DATA_DIR": str(scratch / "data"),
            "CARRIERWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.closed_port}",
        })
        env.update({k: v.format(**values) for k, v in case.env})
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "carrierwatch", *args], cwd=scratch,
                              env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=case.seconds + 30, check=False)
        return done, time.monotonic() - started

    def close(self) -> None:
        from carrierwatch.streams.broker import KafkaBroker

        self.closed.close()
        for kafka_dir in self.kafka_dirs:  # a case that started a broker by mistake
            if kafka_dir.exists():
                KafkaBroker(kafka_dir).stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    made = World(tmp_path_factory.mktemp("broken"))
    yield made
    made.close()


def test_every_command_has_a_base_invocation() -> None:
    commands = leaf_commands()
    assert sorted(set(commands) - set(BASE)) == [], "give each new command a BASE entry"
    assert sorted(set(BASE) - set(commands)) == []
    paths = [(path, str(p.name)) for path, c in commands.items() for p in c.params
             if isinstance(p.type, click.Path)]
    assert sorted(set(paths) - set(PATH_ROLES)) == [], "classify each new path parameter"
    assert len(CASES) > 3 * len(commands)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_errors_are_one_line_messages_with_documented_exit_codes(world: World,
                                                                  case: Case) -> None:
    done, seconds = world.run(case)
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert "Traceback" not in output, output
    assert done.returncode != 70, output  # an internal error is a bug
    assert done.returncode in documented_codes(case.args), output
    if case.expect is not None:
        assert done.returncode == case.expect, output
    if done.returncode not in (0, 3) and case.error_line:
        lines = done.stderr.decode("utf-8", "replace").splitlines()
        errors = [line for line in lines if line.startswith("carrierwatch: error: ")]
        assert len(errors) == 1, output
        assert len(errors[0]) > len("carrierwatch: error: ") + 10, output
    assert seconds < case.seconds, f"{case.id} took {seconds:.1f} s"


def test_every_help_documents_the_shared_exit_codes() -> None:
    for path in leaf_commands():
        assert {0, 1, 2, 69, 70, 130} <= documented_codes(path), path
    assert {0, 3} <= documented_codes(("normalize",))
    assert {0, 1, 3} <= documented_codes(("kafka", "status"))


def test_kafka_status_exit_codes_stopped_3_not_answering_1(world: World, tmp_path: Path) -> None:
    """Through `carrierwatch kafka status` (main() used to drop the code and exit 0); 0 for a
    broker that answers is tested with a real broker in tests/streams/test_broker.py."""
    data = tmp_path / "kafka"
    stopped, _ = world.run(Case(("kafka", "status", "--data-dir", str(data)), 3))
    assert stopped.returncode == 3, stopped.stderr
    assert stopped.stdout.decode().startswith(f"stopped ({data})")
    data.mkdir()
    # a process whose command line is this data dir's broker, but that answers nothing
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                              "kafka.Kafka", str(data / "server.properties")])
    try:
        (data / "kafka.pid").write_text(f"{decoy.pid}\n")
        silent, seconds = world.run(Case(("kafka", "status", "--data-dir", str(data)), 1))
        assert silent.returncode == 1, silent.stderr
        assert f"running pid={decoy.pid}" in silent.stdout.decode()
        assert "Traceback" not in silent.stderr.decode()
        assert seconds < 30
    finally:
        decoy.kill()
        decoy.wait()


@pytest.fixture
def failing_command() -> Iterator[dict[str, BaseException]]:
    """A command ``boom`` that raises what the test puts in the returned dict (then removed)."""
    from carrierwatch.cli import cli

    raised: dict[str, BaseException] = {}

    @click.command("boom")
    def boom() -> None:
        raise raised["error"]

    cli.add_command(boom)
    try:
        yield raised
    finally:
        cli.commands.pop("boom")


def test_a_bug_is_one_line_exit_70_with_the_traceback_saved(
        failing_command: dict[str, BaseException], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from carrierwatch.cli import run

    monkeypatch.delenv("CARRIERWATCH_DEBUG", raising=False)
    failing_command["error"] = ZeroDivisionError("division by zero")
    assert run(["boom"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("carrierwatch: error: internal error (a bug in carrierwatch): "
                          "ZeroDivisionError: division by zero; traceback saved to ")
    saved = Path(err.split("traceback saved to ")[1].split(";")[0])
    try:
        text = saved.read_text()
        assert text.startswith("Traceback") and 'raise raised["error"]' in text
    finally:
        saved.unlink()
    assert "run with CARRIERWATCH_DEBUG=1 to print it" in err

    monkeypatch.setenv("CARRIERWATCH_DEBUG", "1")  # the developer's view: the exception itself
    with pytest.raises(ZeroDivisionError):
        run(["boom"])


def test_debug_shows_the_traceback_of_a_reported_error_too(
        failing_command: dict[str, BaseException], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from carrierwatch.cli import run
    from carrierwatch.core.errors import BrokerUnavailableError

    failing_command["error"] = BrokerUnavailableError("127.0.0.1:1", "Connection refused")
    monkeypatch.delenv("CARRIERWATCH_DEBUG", raising=False)
    assert run(["boom"]) == EXIT_UNAVAILABLE
    assert capsys.readouterr().err == (
        "carrierwatch: error: no Kafka broker answers at 127.0.0.1:1 (Connection refused); "
        "start the development broker with `carrierwatch kafka start` or point "
        "CARRIERWATCH_KAFKA_BOOTSTRAP at yours\n")
    monkeypatch.setenv("CARRIERWATCH_DEBUG", "1")
    assert run(["boom"]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("at yours\n")


def test_ctrl_c_is_130_and_one_line(failing_command: dict[str, BaseException],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from carrierwatch.cli import run

    failing_command["error"] = KeyboardInterrupt()
    assert run(["boom"]) == 130
    assert capsys.readouterr().err.strip() == "carrierwatch: error: interrupted"


@pytest.mark.parametrize("group", [(), ("kafka",), ("anomaly",)])
def test_a_group_without_a_command_prints_its_help_exit_2(world: World,
                                                          group: tuple[str, ...]) -> None:
    done, _ = world.run(Case(group, EXIT_USAGE))
    assert done.returncode == EXIT_USAGE
    err = done.stderr.decode()
    assert err.startswith(f"Usage: carrierwatch {' '.join(group)}".rstrip() + " [OPTIONS]")
    assert "Commands:" in err and not err.startswith("carrierwatch: error")


def test_run_returns_the_code_a_command_exits_with(capsys: pytest.CaptureFixture[str]) -> None:
    from carrierwatch.cli import run

    assert run(["normalize", "--partner", "fedex", str(ROOT / "samples" / "fedex" /
                                                       "error_response.json")]) == 3
    assert run(["normalize", "--partner", "fedex", str(SAMPLE)]) == 0
    assert run(["normalize", "--partner", "fedex", "/nonexistent.json"]) == EXIT_USAGE
    assert capsys.readouterr().err.endswith(
        "carrierwatch: error: no such file: /nonexistent.json\n")
