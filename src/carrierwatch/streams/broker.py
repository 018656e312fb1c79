"""A real Apache Kafka broker for development and tests: single node, KRaft, loopback only.

The broker runs from the jars that ``kafka/pom.xml`` fetches from Maven Central into
``kafka/lib`` (no Docker, no downloaded tarball)::

    mvn -q -f kafka/pom.xml dependency:copy-dependencies

:func:`ensure_jars` runs that command when ``kafka/lib`` is missing, incomplete or was made from
another version of the POM. :class:`KafkaBroker` renders ``kafka/config/server.properties.template``
into its data directory, formats KRaft storage once (``kafka.tools.StorageTool format
--standalone``) and runs ``java -cp 'kafka/lib/*' kafka.Kafka server.properties`` as one combined
broker + controller (``process.roles=broker,controller``, ``node.id=1``) on 127.0.0.1.

Lifecycle rules:

* the process id goes to ``<data dir>/kafka.pid``; :meth:`KafkaBroker.stop` signals only a
  process whose command line is ``kafka.Kafka`` with *this* data directory's
  ``server.properties`` (a stale PID file pointing at an unrelated process is removed, never
  acted on): SIGTERM first (controlled shutdown), SIGKILL after a bounded wait;
* ports and data survive :meth:`KafkaBroker.restart`, so clients keep their bootstrap address
  and everything acknowledged before the restart is still there (also after ``restart(hard=True)``,
  which is ``kill -9``);
* topics are never created implicitly (``auto.create.topics.enable=false`` unless asked
  otherwise): use :func:`create_topic`, as production declares its topics with their partition
  counts.

The click group :data:`kafka_cli` offers ``start`` (detached; writes the PID file, prints the
bootstrap address), ``stop``, ``status`` and ``jars``.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any

import click

from carrierwatch.core.errors import CarrierwatchError
from carrierwatch.settings import get_settings

__all__ = [
    "MAVEN_GOAL",
    "MIN_JAVA",
    "BrokerError",
    "BrokerStatus",
    "KafkaBroker",
    "ToolMissingError",
    "create_topic",
    "default_data_dir",
    "die_with_parent",
    "ensure_jars",
    "ensure_java",
    "find_free_ports",
    "jars_ready",
    "kafka_cli",
    "kafka_dir",
    "kafka_version",
    "new_cluster_id",
    "parse_java_major",
]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# resolved here, not in the child between fork and exec (where nothing may be loaded)
_LIBC = ctypes.CDLL(None, use_errno=True) if os.uname().sysname == "Linux" else None


def die_with_parent() -> None:
    """``preexec_fn`` for a child that must not outlive the process that started it (a test
    session's broker or worker killed with its session): the kernel sends it SIGTERM when its
    parent ends (``prctl(PR_SET_PDEATHSIG)``; Linux only, elsewhere nothing). Not for
    ``carrierwatch kafka start``, whose broker is meant to outlive the command.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
#: librdkafka's own log lines (connection refused while the broker boots, ...) go here.
_rdkafka_log = logging.getLogger(__name__ + ".rdkafka")

#: The oldest Java that runs a Kafka 4.x broker.
MIN_JAVA = 17
#: The Maven goal that copies the broker's runtime jars (``-f kafka/pom.xml`` in front).
MAVEN_GOAL = "dependency:copy-dependencies"
#: Artifacts that must be in ``kafka/lib`` for the broker to run (prefixes of jar names).
_REQUIRED_JARS = ("kafka_2.13-", "kafka-tools-", "kafka-clients-", "log4j-core-",
                  "log4j-slf4j2-impl-", "slf4j-api-")
_MARKER = ".carrierwatch-jars.json"
_PID_FILE = "kafka.pid"
_PROPERTIES = "server.properties"
_CONSOLE_LOG = "kafka.out"
_MAIN_CLASS = "kafka.Kafka"
_NODE_ID = 1
_MAVEN_TIMEOUT_S = 1200.0
_FORMAT_TIMEOUT_S = 180.0


class BrokerError(CarrierwatchError):
    """The development broker could not be prepared, started, probed or stopped."""


class ToolMissingError(BrokerError):
    """Java (17+) or Maven, needed to fetch and run the broker, is not installed."""


# --------------------------------------------------------------------------------------------
# locating things


def kafka_dir() -> Path:
    """The folder holding ``pom.xml`` and ``config/`` of the development broker.

    ``CARRIERWATCH_KAFKA_DIR`` wins; otherwise ``<project home>/kafka``.
    """
    override = os.environ.get("CARRIERWATCH_KAFKA_DIR")
    if override:
        return Path(override).resolve()
    return get_settings().home / "kafka"


def default_data_dir() -> Path:
    """Where ``carrierwatch kafka start`` keeps its data: ``<data dir>/kafka``.

    A relative ``CARRIERWATCH_DATA_DIR`` is taken from the project home, so that ``start`` and
    ``stop`` find the same PID file from any working directory.
    """
    settings = get_settings()
    base = settings.data_dir if settings.data_dir.is_absolute() else settings.home / settings.data_dir
    return base / "kafka"


def parse_java_major(version_output: str) -> int | None:
    """The major Java version in the output of ``java -version``.

    Examples
    --------
    >>> parse_java_major('openjdk version "17.0.15" 2025-04-15')
    17
    >>> parse_java_major('java version "1.8.0_402"')
    8
    >>> parse_java_major('openjdk version "21" 2023-09-19')
    21
    >>> parse_java_major('no java here') is None
    True
    """
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:  # "1.8.0" style
        return int(match.group(2))
    return major


def ensure_java(java: str | None = None) -> str:
    """The path of a Java ``MIN_JAVA``+ executable; raises :class:`ToolMissingError` otherwise.

    ``java`` defaults to ``$JAVA_HOME/bin/java`` when ``JAVA_HOME`` is set, else ``java`` on PATH.
    """
    if java is None:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else "java"
    found = shutil.which(java)
    if found is None:
        raise ToolMissingError(
            f"Java {MIN_JAVA}+ is needed to run the Kafka broker, but {java!r} was not found "
            "(install a JDK, e.g. `apt-get install openjdk-17-jdk-headless`, or set JAVA_HOME)")
    try:
        done = subprocess.run([found, "-version"], capture_output=True, text=True, timeout=60,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolMissingError(f"{found} -version failed: {exc}") from exc
    major = parse_java_major(done.stderr + done.stdout)
    if major is None or major < MIN_JAVA:
        raise ToolMissingError(
            f"Kafka 4.x needs Java {MIN_JAVA}+, but {found} reports "
            f"{(done.stderr or done.stdout).strip().splitlines()[:1]}")
    return found


def kafka_version(lib_dir: Path | None = None) -> str | None:
    """The Kafka version of the jars in ``lib_dir`` (``kafka/lib``), or None if there are none."""
    lib = lib_dir if lib_dir is not None else kafka_dir() / "lib"
    for jar in sorted(lib.glob("kafka_2.13-*.jar")):
        match = re.fullmatch(r"kafka_2\.13-(.+)\.jar", jar.name)
        if match:
            return match.group(1)
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _jars_complete(lib: Path, pom: Path) -> bool:
    marker = lib / _MARKER
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get("pom_sha256") != _sha256(pom):
        return False
    jars = recorded.get("jars")
    if not isinstance(jars, list) or not jars:
        return False
    return all(isinstance(name, str) and (lib / name).is_file() and (lib / name).stat().st_size > 0
               for name in jars)


def jars_ready(kafka_home: Path | None = None) -> bool:
    """Whether ``kafka/lib`` holds every jar of the current ``pom.xml`` (no Maven run needed)."""
    home = kafka_home if kafka_home is not None else kafka_dir()
    return (home / "pom.xml").is_file() and _jars_complete(home / "lib", home / "pom.xml")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_jars(kafka_home: Path | None = None, *, maven: str = "mvn",
                extra_maven_args: Sequence[str] = ()) -> Path:
    """Make sure ``kafka/lib`` holds the broker jars the POM names; return that folder.

    When the folder is missing, incomplete, or was filled from another version of ``pom.xml``,
    this runs ``mvn -B -q -f kafka/pom.xml dependency:copy-dependencies`` into a staging folder
    under ``kafka/target`` and swaps it in whole, so a broker never sees two Kafka versions on
    its classpath. A lock file serialises concurrent callers (parallel test sessions).

    Raises
    ------
    ToolMissingError
        Maven is needed (the jars are not there yet) but not installed.
    BrokerError
        Maven failed (no network and an empty ``~/.m2``, say); the message ends with its output.
    """
    home = kafka_home if kafka_home is not None else kafka_dir()
    pom = home / "pom.xml"
    if not pom.is_file():
        raise BrokerError(f"no {pom}: the Kafka broker POM is part of the carrierwatch checkout "
                          "(set CARRIERWATCH_HOME or CARRIERWATCH_KAFKA_DIR to find it)")
    lib = home / "lib"
    if _jars_complete(lib, pom):
        return lib
    with _file_lock(home / "target" / "jars.lock"):
        if _jars_complete(lib, pom):  # another process finished while we waited
            return lib
        mvn = shutil.which(maven)
        if mvn is None:
            raise ToolMissingError(
                f"Maven ({maven!r}) is needed to fetch the Kafka broker jars into {lib} but was "
                "not found (install Maven 3.6+, e.g. `apt-get install maven`)")
        staging = home / "target" / f"lib-staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        command = [mvn, "-B", "-q", "-f", str(pom), MAVEN_GOAL, f"-Dkafka.lib.dir={staging}",
                   *extra_maven_args]
        log.info("fetching Kafka broker jars: %s", " ".join(command))
        started = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=_MAVEN_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise BrokerError(f"Maven did not finish within {_MAVEN_TIMEOUT_S:.0f} s: "
                              f"{' '.join(command)}") from exc
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            output = (done.stdout + done.stderr).strip()[-4000:]
            raise BrokerError(f"Maven failed to fetch the Kafka jars (exit {done.returncode}): "
                              f"{' '.join(command)}\n{output}")
        jars = sorted(p.name for p in staging.glob("*.jar"))
        missing = [prefix for prefix in _REQUIRED_JARS
                   if not any(name.startswith(prefix) for name in jars)]
        if missing:
            shutil.rmtree(staging, ignore_errors=True)
            raise BrokerError(f"Maven ran but {staging} lacks jars starting with {missing}")
        (staging / _MARKER).write_text(
            json.dumps({"pom_sha256": _sha256(pom), "jars": jars}, indent=1), encoding="utf-8")
        old = home / "target" / f"lib-old-{os.getpid()}"
        if lib.exists():
            lib.rename(old)
        staging.rename(lib)
        shutil.rmtree(old, ignore_errors=True)
        log.info("fetched %d Kafka jars (%s) in %.1f s", len(jars), kafka_version(lib),
                 time.monotonic() - started)
        return lib


# --------------------------------------------------------------------------------------------
# small helpers


def find_free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (held together while chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).

    This is the form of Kafka's ``Uuid.randomUuid().toString()``; like Kafka, ids starting with
    ``-`` are avoided so they can be passed on a command line.

    Examples
    --------
    >>> cid = new_cluster_id()
    >>> len(cid), cid[0] != "-"
    (22, True)
    >>> len(base64.urlsafe_b64decode(cid + "=="))
    16
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


def _read_properties(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "!")) or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def _listener_ports(properties: Mapping[str, str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for listener in properties.get("listeners", "").split(","):
        match = re.fullmatch(r"\s*(\w+)://[^:]*:(\d+)\s*", listener)
        if match:
            ports[match.group(1)] = int(match.group(2))
    return ports


def _command_line(pid: int) -> list[str] | None:
    """The argv of process ``pid`` (None if it does not exist or is a zombie)."""
    proc = Path("/proc") / str(pid)
    if proc.is_dir():
        try:
            if ") Z" in (proc / "stat").read_text(encoding="utf-8", errors="replace"):
                return None
            raw = (proc / "cmdline").read_bytes()
        except OSError:
            return None
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    try:  # no /proc (macOS): ask ps
        done = subprocess.run(["ps", "-ww", "-o", "stat=,args=", "-p", str(pid)],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = done.stdout.strip()
    if done.returncode != 0 or not line or line.startswith("Z"):
        return None
    return line.split()[1:]


def _admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _rdkafka_log}
    return AdminClient(conf)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# the broker


@dataclasses.dataclass(frozen=True)
class BrokerStatus:
    """What :meth:`KafkaBroker.status` found.

    ``running``: a ``kafka.Kafka`` process of this data directory is alive (PID file + command
    line agree); ``ready``: it also answered a metadata request (None when not probed).
    """

    running: bool
    pid: int | None
    bootstrap: str | None
    data_dir: Path
    ready: bool | None = None
    detail: str = ""

    def __str__(self) -> str:
        if not self.running:
            return f"stopped ({self.data_dir}){': ' + self.detail if self.detail else ''}"
        readiness = {True: "ready", False: "not answering", None: "not probed"}[self.ready]
        return f"running pid={self.pid} bootstrap={self.bootstrap} {readiness} ({self.data_dir})"


class KafkaBroker:
    """One single-node Kafka (KRaft, combined broker + controller) on 127.0.0.1.

    Parameters
    ----------
    data_dir
        Holds ``server.properties``, the KRaft log directory (``kraft-logs``), ``logs/``, the
        console output ``kafka.out`` and ``kafka.pid``.
    port, controller_port
        Client (PLAINTEXT) and controller listener ports; 0 reuses the ports of an existing
        ``server.properties`` in ``data_dir``, else picks free ones. The controller port is
        recorded in the KRaft voter set when storage is formatted and cannot change afterwards.
    heap
        JVM ``-Xmx``; small by default since the broker shares a 2-core machine with tests.
    auto_create_topics
        ``auto.create.topics.enable``; off by default (see the module docs).
    kafka_home
        The folder with ``pom.xml``, ``config/`` and ``lib/`` (default :func:`kafka_dir`).
    java, maven
        Executables; ``java`` defaults as in :func:`ensure_java`.
    """

    def __init__(self, data_dir: Path | str, *, port: int = 0, controller_port: int = 0,
                 heap: str = "512m", auto_create_topics: bool = False,
                 kafka_home: Path | None = None, java: str | None = None,
                 maven: str = "mvn", jvm_options: Sequence[str] = ()) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.kafka_home = (kafka_home if kafka_home is not None else kafka_dir()).resolve()
        self.heap = heap
        self.auto_create_topics = auto_create_topics
        self.java = java
        self.maven = maven
        self.jvm_options = list(jvm_options)
        self._proc: subprocess.Popen[bytes] | None = None
        #: Seconds from launching the JVM to the first good metadata answer, of the last start.
        self.startup_seconds: float | None = None

        stored = self._stored_ports()
        if controller_port and "CONTROLLER" in stored and self.formatted \
                and stored["CONTROLLER"] != controller_port:
            raise BrokerError(
                f"{self.data_dir} was formatted with controller port {stored['CONTROLLER']}; "
                f"it cannot move to {controller_port} (use that port or a fresh data dir)")
        port = port or stored.get("PLAINTEXT", 0)
        controller_port = controller_port or stored.get("CONTROLLER", 0)
        if not port or not controller_port:
            free = find_free_ports(3)
            free = [p for p in free if p not in (port, controller_port)]
            port = port or free.pop(0)
            controller_port = controller_port or free.pop(0)
        if port == controller_port:
            raise BrokerError(f"client and controller ports must differ (both {port})")
        self.port = port
        self.controller_port = controller_port

    # -- paths and identity -------------------------------------------------------------------

    @property
    def properties_path(self) -> Path:
        """The rendered ``server.properties`` of this broker."""
        return self.data_dir / _PROPERTIES

    @property
    def pid_file(self) -> Path:
        """``<data dir>/kafka.pid``: the id of the broker process while it runs."""
        return self.data_dir / _PID_FILE

    @property
    def log_dir(self) -> Path:
        """Kafka's ``log.dirs`` (topic partitions and the KRaft metadata log)."""
        return self.data_dir / "kraft-logs"

    @property
    def console_log(self) -> Path:
        """The broker's stdout/stderr (warnings and errors; the full log is ``logs/server.log``)."""
        return self.data_dir / _CONSOLE_LOG

    @property
    def bootstrap(self) -> str:
        """The client bootstrap address, ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def formatted(self) -> bool:
        """Whether KRaft storage in :attr:`log_dir` has been formatted."""
        return (self.log_dir / "meta.properties").is_file()

    @property
    def pid(self) -> int | None:
        """The process id of the running broker of this data dir, if any."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        pid = self._read_pid()
        return pid if pid is not None and self._is_our_broker(pid) else None

    def _stored_ports(self) -> dict[str, int]:
        if not self.properties_path.is_file():
            return {}
        return _listener_ports(_read_properties(self.properties_path))

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def _is_our_broker(self, pid: int) -> bool:
        argv = _command_line(pid)
        return argv is not None and _MAIN_CLASS in argv and str(self.properties_path) in argv

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return _command_line(pid) is not None

    # -- lifecycle ----------------------------------------------------------------------------

    def _java_command(self, java: str, lib: Path, main: str, *args: str,
                      heap: str | None = None) -> list[str]:
        config = self.kafka_home / "config" / "log4j2.xml"
        return [
            java, "-Xms128m", f"-Xmx{heap or self.heap}", "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent", "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={config}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}", *self.jvm_options,
            "-cp", f"{lib}{os.sep}*", main, *args,
        ]

    def _render_properties(self) -> None:
        template = Template((self.kafka_home / "config" / "server.properties.template")
                            .read_text(encoding="utf-8"))
        text = template.substitute(
            node_id=_NODE_ID, broker_port=self.port, controller_port=self.controller_port,
            log_dir=self.log_dir, offsets_partitions=4,
            auto_create_topics=str(self.auto_create_topics).lower())
        self.properties_path.write_text(text, encoding="utf-8")

    def _format_storage(self, java: str, lib: Path) -> None:
        cluster_id = new_cluster_id()
        command = self._java_command(java, lib, "kafka.tools.StorageTool", "format",
                                     "--standalone", "--ignore-formatted", "-t", cluster_id,
                                     "-c", str(self.properties_path), heap="256m")
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=_FORMAT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting KRaft storage took over {_FORMAT_TIMEOUT_S:.0f} s") \
                from exc
        if done.returncode != 0 or not self.formatted:
            raise BrokerError(f"formatting KRaft storage in {self.log_dir} failed "
                              f"(exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
        log.info("formatted KRaft storage %s (cluster id %s)", self.log_dir, cluster_id)

    def start(self, timeout: float = 90.0, *, detach: bool = False) -> None:
        """Launch the broker and wait until it answers metadata requests.

        Fetches the jars first if needed (:func:`ensure_jars`) and formats storage on first use.
        ``detach`` puts the JVM in its own session, so it outlives this process and ignores the
        terminal's Ctrl-C (``carrierwatch kafka start``). Quorum formation on a busy 2-core
        machine can take a while, hence the generous default ``timeout`` (seconds, for readiness
        only; the jar download has its own bound).

        Raises
        ------
        BrokerError
            Already running, a port is taken, the JVM exited, or it was not ready in time (it
            is then stopped); the message carries the end of its console output.
        """
        running = self.pid
        if running is not None:
            raise BrokerError(f"a broker already runs from {self.data_dir} (pid {running})")
        for name, port in (("client", self.port), ("controller", self.controller_port)):
            if not _port_free(port):  # before fetching jars: a busy port is known at once
                raise BrokerError(f"{name} port 127.0.0.1:{port} is already in use; choose "
                                  f"another with --port/--controller-port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        java = ensure_java(self.java)
        lib = ensure_jars(self.kafka_home, maven=self.maven)
        self._render_properties()
        if not self.formatted:
            self._format_storage(java, lib)
        command = self._java_command(java, lib, _MAIN_CLASS, str(self.properties_path))
        started = time.monotonic()
        with self.console_log.open("ab") as console:
            self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=console,
                                          stderr=subprocess.STDOUT, cwd=self.data_dir,
                                          start_new_session=detach,
                                          preexec_fn=None if detach else die_with_parent)
        self.pid_file.write_text(f"{self._proc.pid}\n", encoding="ascii")
        log.info("started Kafka pid %d on %s", self._proc.pid, self.bootstrap)
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        admin = None
        last_error = "no answer yet"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(f"the Kafka broker exited with code {code} while starting; "
                                  f"end of {self.console_log}:\n{_tail(self.console_log)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(f"the Kafka broker on {self.bootstrap} was not ready in time "
                                  f"({last_error}); end of {self.console_log}:\n"
                                  f"{_tail(self.console_log)}")
            if _port_open(self.port):
                if admin is None:
                    admin = _admin(self.bootstrap)
                try:
                    metadata = admin.list_topics(timeout=max(0.5, min(5.0, remaining)))
                except Exception as exc:  # KafkaException while the quorum forms
                    last_error = str(exc)
                else:
                    if _NODE_ID in metadata.brokers:
                        return
                    last_error = "metadata lists no broker yet"
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop this data dir's broker: SIGTERM, then SIGKILL after ``timeout`` seconds.

        Only a process whose command line is ``kafka.Kafka <this data dir>/server.properties``
        is signalled. Returns whether such a process was running; a stale PID file is removed.
        """
        return self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> bool:
        """``kill -9`` the broker (a crash, for fault tests); returns whether it was running."""
        return self._signal_and_wait(signal.SIGKILL, 0.0)

    def _signal_and_wait(self, first: signal.Signals, timeout: float) -> bool:
        pid = self._proc.pid if self._proc is not None and self._proc.poll() is None \
            else self._read_pid()
        if pid is None or not self._is_our_broker(pid):
            if pid is not None:
                log.warning("PID file %s names pid %d, which is not this broker; left alone",
                            self.pid_file, pid)
            self.pid_file.unlink(missing_ok=True)
            self._proc = None
            return False
        os.kill(pid, first)
        if not self._wait_exit(pid, timeout) and first != signal.SIGKILL:
            log.warning("Kafka pid %d ignored SIGTERM for %.0f s; sending SIGKILL", pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not self._wait_exit(pid, 15.0):
            raise BrokerError(f"Kafka pid {pid} survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        self._proc = None
        return True

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def restart(self, timeout: float = 90.0, *, hard: bool = False) -> None:
        """Stop (or with ``hard`` kill -9) and start again on the same ports and data."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def status(self, *, probe: bool = True, probe_timeout: float = 3.0) -> BrokerStatus:
        """Whether this data dir's broker runs and, if ``probe``, answers a metadata request."""
        pid = self._read_pid()
        if pid is None:
            return BrokerStatus(False, None, None, self.data_dir, detail="no PID file")
        if not self._is_our_broker(pid):
            return BrokerStatus(False, None, None, self.data_dir,
                                detail=f"stale PID file (pid {pid} is not this broker)")
        ready: bool | None = None
        if probe:
            try:
                metadata = _admin(self.bootstrap).list_topics(timeout=probe_timeout)
                ready = _NODE_ID in metadata.brokers
            except Exception:  # KafkaException: not answering
                ready = False
        return BrokerStatus(True, pid, self.bootstrap, self.data_dir, ready=ready)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# topics


def create_topic(bootstrap: str, name: str, partitions: int = 1, *, replication_factor: int = 1,
                 config: Mapping[str, str] | None = None, timeout: float = 30.0) -> None:
    """Create topic ``name`` and wait until every partition has a leader.

    Raises
    ------
    BrokerError
        The broker refused (the topic exists, bad settings) or did not answer within
        ``timeout`` seconds.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.cimpl import NewTopic

    deadline = time.monotonic() + timeout
    admin = _admin(bootstrap)
    topic = NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                     config=dict(config or {}))
    future = admin.create_topics([topic], operation_timeout=timeout)[name]
    try:
        future.result(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"creating topic {name!r} on {bootstrap} failed: {exc}") from exc
    except Exception as exc:  # concurrent.futures.TimeoutError
        raise BrokerError(f"creating topic {name!r} on {bootstrap} timed out") from exc
    while True:
        remaining = deadline - time.monotonic()
        try:
            metadata = admin.list_topics(topic=name, timeout=max(0.5, min(5.0, remaining)))
            found = metadata.topics.get(name)
            if (found is not None and found.error is None and len(found.partitions) == partitions
                    and all(p.leader >= 0 for p in found.partitions.values())):
                return
        except KafkaException:
            pass
        if remaining <= 0:
            raise BrokerError(f"topic {name!r} on {bootstrap} has no leader for every partition "
                              f"after {timeout:.0f} s")
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# command line


def _default_port(name: str) -> int:
    if name == "controller":
        return 9093
    match = re.search(r":(\d+)$", get_settings().kafka_bootstrap.split(",")[0])
    return int(match.group(1)) if match else 9092


_data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Broker data dir [default: <data dir>/kafka].")


@click.group("kafka")
def kafka_cli() -> None:
    """Run the development Apache Kafka broker (KRaft, single node, 127.0.0.1)."""


@kafka_cli.command("start")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Client port [default: the port of CARRIERWATCH_KAFKA_BOOTSTRAP, 9092].")
@click.option("--controller-port", type=click.IntRange(1, 65535), default=None,
              help="Controller port [9093].")
@_data_dir_option
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=90.0,
              show_default=True, help="Seconds to wait for readiness.")
@click.option("--auto-create-topics/--no-auto-create-topics", default=False, show_default=True,
              help="Let clients create topics implicitly.")
@click.option("--heap", default="512m", show_default=True, help="JVM -Xmx.")
def start_command(port: int | None, controller_port: int | None, data_dir: Path | None,
                  timeout: float, auto_create_topics: bool, heap: str) -> None:
    """Start the broker in the background; print its bootstrap address."""
    data = data_dir or default_data_dir()
    probe = KafkaBroker(data)
    if probe.pid is not None:
        click.echo(f"already running: pid {probe.pid}, bootstrap {probe.bootstrap}")
        return
    if not jars_ready(probe.kafka_home):
        click.echo(f"fetching the Kafka broker jars with Maven into {probe.kafka_home / 'lib'} "
                   "(first run only) ...", err=True)
    try:
        broker = KafkaBroker(
            data, port=port if port is not None else _default_port("client"),
            # 0 keeps the controller port a formatted data dir was made with
            controller_port=(controller_port if controller_port is not None
                             else 0 if probe.formatted else _default_port("controller")),
            heap=heap, auto_create_topics=auto_create_topics)
        broker.start(timeout, detach=True)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Kafka {kafka_version(broker.kafka_home / 'lib')} running: pid {broker.pid}, "
               f"ready in {broker.startup_seconds:.1f} s, data {broker.data_dir}")
    click.echo(f"bootstrap: {broker.bootstrap}")


@kafka_cli.command("stop")
@_data_dir_option
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds after SIGTERM before SIGKILL.")
def stop_command(data_dir: Path | None, timeout: float) -> None:
    """Stop the broker started from this data dir (only that process)."""
    broker = KafkaBroker(data_dir or default_data_dir())
    try:
        stopped = broker.stop(timeout)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("stopped" if stopped else f"not running ({broker.data_dir})")


@kafka_cli.command("status")
@_data_dir_option
@click.pass_context
def status_command(ctx: click.Context, data_dir: Path | None) -> None:
    """Print whether the broker runs; exit 0 if running and answering, 1 if not answering,
    3 if stopped."""
    status = KafkaBroker(data_dir or default_data_dir()).status()
    click.echo(str(status))
    ctx.exit(0 if status.running and status.ready else 1 if status.running else 3)


@kafka_cli.command("jars")
def jars_command() -> None:
    """Fetch the broker jars into kafka/lib (Maven) if needed; print the Kafka version."""
    try:
        lib = ensure_jars()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    jars = list(lib.glob("*.jar"))
    size = sum(j.stat().st_size for j in jars) / 1e6
    click.echo(f"Kafka {kafka_version(lib)}: {len(jars)} jars, {size:.1f} MB in {lib}")


if __name__ == "__main__":  # python -m carrierwatch.streams.broker start|stop|status|jars
    kafka_cli()
