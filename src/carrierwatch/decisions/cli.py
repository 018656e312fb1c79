"""Commands: ``decisions check``, ``escalations list``, ``takeover``, ``tasks list|done``,
``silence`` (see docs/decisions.md)."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from carrierwatch.decisions.engine import Escalation, Escalator
    from carrierwatch.settings import Settings

__all__ = ["decisions", "escalations", "replay_escalations", "replay_escalator", "silence",
           "takeover", "tasks"]


def _settings() -> Settings:
    from carrierwatch.settings import get_settings

    return get_settings()


def _partner_ids() -> list[str]:
    from carrierwatch.transformers.registry import load_registry

    return sorted(p.id for p in load_registry())


# ------------------------------------------------------------------------- replay helpers

def replay_escalator(settings: Settings, registry: Any) -> Escalator | None:
    """The escalator ``carrierwatch replay`` runs (None without tables)."""
    from carrierwatch.decisions.runtime import escalator_for

    partners = list(registry)
    return escalator_for(settings, {p.id: p.spec.contract for p in partners},
                         [p.id for p in partners])


def replay_escalations(settings: Settings, decided: list[Escalation]) -> int:
    """Hand what a replay decided to the dispatcher (ledger: each id executed once); the number
    of escalations dead-lettered (the replay then exits 3)."""
    if not decided:
        return 0
    from carrierwatch.decisions.runtime import dispatcher_for

    dispatcher = dispatcher_for(settings)
    try:
        done = dispatcher.handle(decided)
    finally:
        dispatcher.ledger.close()
    click.echo(f"escalations: {len(decided)} decided, {len(decided) - done.skipped} new "
               f"({done.delivered} delivered, {done.recorded} recorded without a webhook, "
               f"{done.tasks} manual tasks, {done.dead} dead-lettered), {done.skipped} "
               f"already escalated")
    if done.dead:
        click.echo(f"{done.dead} escalations dead-lettered: see `carrierwatch escalations list "
                   f"--state dead`, send them again with `carrierwatch escalations retry`",
                   err=True)
    return done.dead


# ------------------------------------------------------------------------- decisions check

@click.group("decisions")
def decisions() -> None:
    """Escalation decision tables (decisions/*.yaml)."""


@decisions.command("check")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of tables [CARRIERWATCH_DECISIONS_DIR, <home>/decisions].")
def decisions_check(folder: Path | None) -> None:
    """Validate every table; report overlapping rules and uncovered input combinations.

    Problems print as `file:line: message`. Exit codes: 0 every table valid and complete;
    1 a table is invalid (including overlapping rules under hit policy `unique`) or leaves
    input combinations uncovered; 2 the folder is missing or holds no table.
    """
    from carrierwatch.decisions.runtime import DecisionSettings
    from carrierwatch.decisions.table import analyse, check_tables, table_paths

    settings = _settings()
    folder = folder or DecisionSettings().tables_dir(settings)
    if not folder.is_dir():
        raise click.UsageError(f"no decision tables folder {folder}")
    if not table_paths(folder):
        raise click.UsageError(f"no decision tables (*.yaml) in {folder}")
    partners = _partner_ids()
    tables, problems = check_tables(folder, partners=partners)
    for problem in problems:
        click.echo(str(problem), err=True)
    incomplete = 0
    for table in tables:
        result = analyse(table, partners=partners)
        line = f"{table.source}: table {table.name!r}, hit policy {table.hit_policy}, " \
               f"{len(table.rules)} rules"
        if result.too_large:
            click.echo(f"{line}: {result.cells:,} input combinations, too many to check for gaps")
            continue
        if result.gap_cells:
            incomplete += 1
            click.echo(f"{table.source}:1: table {table.name!r}: {result.gap_cells} of "
                       f"{result.cells} input combinations match no rule:", err=True)
            for gap in result.gaps[:20]:
                click.echo("    " + "; ".join(f"{k}: {v}" for k, v in gap.items()), err=True)
            if len(result.gaps) > 20:
                click.echo(f"    ... and {len(result.gaps) - 20} more", err=True)
        else:
            click.echo(f"{line}: complete ({result.cells} input combinations covered)")
    click.echo(f"{len(table_paths(folder))} tables checked, {len(problems)} problems, "
               f"{incomplete} with gaps")
    if problems or incomplete:
        sys.exit(1)


# ------------------------------------------------------------------------- escalations

@click.group("escalations")
def escalations() -> None:
    """Escalations the decision tables decided (the ledger)."""


@escalations.command("list")
@click.option("--state", type=click.Choice(["pending", "delivered", "recorded", "task", "dead"]),
              default=None, help="Only escalations in this state.")
def escalations_list(state: str | None) -> None:
    """List escalations (JSON lines): id, partner, state, attempts, last error, rule."""
    from carrierwatch.decisions.dispatch import Ledger
    from carrierwatch.decisions.runtime import ledger_path

    ledger = Ledger(ledger_path(_settings()))
    try:
        for row in ledger.escalations(state):
            body = json.loads(row.pop("body"))
            row.update(table=body["table"], rule=body["rule"], actions=body["actions"],
                       priority=body["priority"], package_id=body["package_id"])
            click.echo(json.dumps(row))
    finally:
        ledger.close()


@escalations.command("retry")
@click.argument("ids", nargs=-1)
def escalations_retry(ids: tuple[str, ...]) -> None:
    """Send dead-lettered escalations again (all, or the IDS given).

    Exit codes: 0 every one delivered (or turned into a task); 1 some failed again (they stay
    dead-lettered) or no dead escalation matched.
    """
    from carrierwatch.decisions.runtime import dispatcher_for

    dispatcher = dispatcher_for(_settings())
    try:
        requeued = dispatcher.ledger.requeue(ids)
        if not requeued:
            raise click.ClickException("no dead-lettered escalation" + (
                f" with id {', '.join(ids)}" if ids else ""))
        done = dispatcher.handle([])
    finally:
        dispatcher.ledger.close()
    click.echo(f"{requeued} escalations retried: {done.delivered} delivered, {done.tasks} "
               f"manual tasks, {done.recorded} recorded, {done.dead} dead-lettered again")
    if done.dead:
        sys.exit(1)


@escalations.command("run")
@click.option("--namespace", default=None,
              help="Topic/group prefix, as the worker's [CARRIERWATCH_STREAM_NAMESPACE].")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve /metrics on 127.0.0.1:PORT [off].")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds [run until SIGTERM/SIGINT].")
@click.option("-l", "--loglevel", type=click.Choice(["crit", "error", "warn", "info", "debug"]),
              default="info", show_default=True, help="Logging level.")
def escalations_run(namespace: str | None, metrics_port: int | None, max_seconds: float | None,
                    loglevel: str) -> None:
    """Execute the stream's escalations: the `escalations` topic → webhook or manual tasks.

    Each escalation id is executed once (the ledger in the data directory), offsets are
    committed after execution. Exit codes: 0 stopped; 1 configuration errors; 69 no broker.
    """
    import logging
    import signal

    from carrierwatch.decisions.runtime import dispatcher_for
    from carrierwatch.decisions.stream import escalations_topic, run_dispatcher
    from carrierwatch.streams.topology import StreamConfig, Topology, ensure_topics, require_broker

    logging.basicConfig(level={"crit": 50, "error": 40, "warn": 30, "info": 20, "debug": 10}[
        loglevel], format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    settings = _settings()
    config = StreamConfig()
    if namespace is not None:
        config = config.model_copy(update={"namespace": namespace})
    partners = _partner_ids()
    topology = Topology(config, partners)
    require_broker(settings.kafka_bootstrap)
    topic = escalations_topic(topology)
    ensure_topics(settings.kafka_bootstrap, [s for s in topology.specs() if s.name == topic])
    if metrics_port is not None:
        from prometheus_client import start_http_server

        from carrierwatch.decisions.runtime import metrics

        metrics()
        start_http_server(metrics_port, addr="127.0.0.1")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    dispatcher = dispatcher_for(settings)
    try:
        handled = run_dispatcher(settings.kafka_bootstrap, topic, f"{topology.app_id}-escalations",
                                 dispatcher, partners=partners, max_seconds=max_seconds,
                                 stop=lambda: stopping)
    finally:
        dispatcher.ledger.close()
    click.echo(f"{handled} escalation messages handled")


# ------------------------------------------------------------------------- takeover and tasks

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")


#: the longest a takeover or a silence may last (they expire by themselves)
_MAX_UNTIL_S = 366 * 86_400


class Until(click.ParamType):
    """An end time: ISO 8601 (UTC unless it has an offset) or a duration from now (30m, 4h, 2d)."""

    name = "until"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        match = _DURATION.match(text)
        if match:
            seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[
                match.group(2)]
            if seconds <= 0:
                self.fail("a duration must be positive", param, ctx)
            if seconds > _MAX_UNTIL_S:
                self.fail(f"{text} is more than a year away: takeovers and silences must "
                          "expire by themselves", param, ctx)
            return time.time() + seconds
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is neither an ISO 8601 time nor a duration like 4h", param, ctx)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        stamp = moment.timestamp()
        if stamp <= time.time():
            self.fail(f"{text} is in the past", param, ctx)
        if stamp > time.time() + _MAX_UNTIL_S:
            self.fail(f"{text} is more than a year away: takeovers and silences must "
                      "expire by themselves", param, ctx)
        return stamp


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC).isoformat(
        timespec="seconds").replace("+00:00", "Z")


def _known_partner(partner: str) -> None:
    known = _partner_ids()
    if partner not in known:
        raise click.UsageError(f"unknown partner {partner!r}; known partners: {', '.join(known)}")


@click.command("takeover")
@click.option("--partner", default=None, help="Partner whose automated actions stop.")
@click.option("--reason", default=None, help="Why (recorded with who and when).")
@click.option("--until", "until", type=Until(), default=None,
              help="When it ends by itself: ISO 8601 time or a duration (4h, 2d).")
@click.option("--end", is_flag=True, help="End the partner's active takeover now.")
@click.option("--list", "list_", is_flag=True, help="List takeovers (active ones by default).")
@click.option("--all", "all_", is_flag=True, help="With --list: also ended and expired ones.")
def takeover(partner: str | None, reason: str | None, until: float | None, end: bool,
             list_: bool, all_: bool) -> None:
    """Manual takeover of a partner: its escalations become tasks of the manual queue.

    `takeover --partner P --reason R --until 4h` starts one; `takeover --partner P --end` ends
    it; `takeover --list` shows the active ones (JSON lines). A takeover ends by itself at
    --until. Exit codes: 0 done; 1 --end found no active takeover; 2 usage errors.
    """
    from carrierwatch.decisions.dispatch import Ledger, who
    from carrierwatch.decisions.runtime import ledger_path

    if list_:
        ledger = Ledger(ledger_path(_settings()))
        try:
            for row in ledger.takeovers(active_at=None if all_ else time.time()):
                for key in ("created_at", "until", "ended_at"):
                    row[key] = _iso(row[key])
                click.echo(json.dumps(row))
        finally:
            ledger.close()
        return
    if partner is None:
        raise click.UsageError("--partner is required (or --list)")
    _known_partner(partner)
    ledger = Ledger(ledger_path(_settings()))
    try:
        if end:
            if not ledger.end_takeover(partner, who(), time.time()):
                raise click.ClickException(f"no active takeover of {partner}")
            click.echo(f"takeover of {partner} ended")
            return
        if not reason or until is None:
            raise click.UsageError("--reason and --until are required to start a takeover")
        number = ledger.start_takeover(partner, reason, until, who(), time.time())
        click.echo(f"takeover {number} of {partner} until {_iso(until)}: its escalations go "
                   f"to `carrierwatch tasks list`")
    finally:
        ledger.close()


@click.group("tasks")
def tasks() -> None:
    """The manual queue: escalations of partners under takeover."""


@tasks.command("list")
@click.option("--all", "all_", is_flag=True, help="Also the tasks that are done.")
def tasks_list(all_: bool) -> None:
    """List tasks (JSON lines), oldest first."""
    from carrierwatch.decisions.dispatch import Ledger
    from carrierwatch.decisions.runtime import ledger_path

    ledger = Ledger(ledger_path(_settings()))
    try:
        for row in ledger.tasks(open_only=not all_):
            body = json.loads(row.pop("body"))
            row.update(created_at=_iso(row["created_at"]), done_at=_iso(row["done_at"]),
                       package_id=body["package_id"], table=body["table"], rule=body["rule"],
                       actions=body["actions"], priority=body["priority"])
            click.echo(json.dumps(row))
    finally:
        ledger.close()


@tasks.command("done")
@click.argument("escalation_id")
@click.option("--note", default="", help="What was done.")
def tasks_done(escalation_id: str, note: str) -> None:
    """Mark the task of ESCALATION_ID done (recorded with who and when).

    Exit codes: 0 done; 1 no open task has that id."""
    from carrierwatch.decisions.dispatch import Ledger, who
    from carrierwatch.decisions.runtime import ledger_path

    ledger = Ledger(ledger_path(_settings()))
    try:
        if not ledger.finish_task(escalation_id, who(), note, time.time()):
            raise click.ClickException(f"no open task {escalation_id}")
        click.echo(f"task {escalation_id} done")
    finally:
        ledger.close()


# ------------------------------------------------------------------------- silence

@click.command("silence")
@click.option("--partner", required=True, help="Partner whose alerts are muted.")
@click.option("--reason", required=True, help="Why (the silence's comment).")
@click.option("--until", "until", type=Until(), required=True,
              help="When the silence expires: ISO 8601 time or a duration (4h, 2d).")
@click.option("--alertmanager-url", default=None,
              help="Alertmanager [CARRIERWATCH_DECISIONS_ALERTMANAGER_URL, http://127.0.0.1:9093].")
def silence(partner: str, reason: str, until: float, alertmanager_url: str | None) -> None:
    """Mute a partner's alerts in Alertmanager (API v2) until --until, with a reason.

    The silence matches the label partner=P, is created by the operator
    (CARRIERWATCH_OPERATOR or the login name) and is recorded in the decisions ledger.
    Exit codes: 0 created; 2 usage errors; 69 Alertmanager did not answer or refused it.
    """
    from carrierwatch.core.errors import UnavailableError
    from carrierwatch.decisions.dispatch import Ledger, who
    from carrierwatch.decisions.runtime import DecisionSettings, ledger_path

    _known_partner(partner)
    url = (alertmanager_url or DecisionSettings().alertmanager_url).rstrip("/")
    now = time.time()
    by = who()
    body = {"matchers": [{"name": "partner", "value": partner, "isRegex": False,
                          "isEqual": True}],
            "startsAt": _iso(now), "endsAt": _iso(until), "createdBy": by, "comment": reason}
    silence_id = _post_silence(url, body, UnavailableError)
    ledger = Ledger(ledger_path(_settings()))
    try:
        ledger.record_silence(silence_id, partner, reason, by, now, until, url)
    finally:
        ledger.close()
    click.echo(f"silence {silence_id}: alerts of {partner} muted until {_iso(until)}")


def _post_silence(url: str, body: dict[str, Any], error: type[Exception]) -> str:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{url}/api/v2/silences", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            doc = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise error(f"Alertmanager at {url} refused the silence: HTTP {exc.code} "
                    f"{detail.strip()}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise error(f"Alertmanager at {url} does not answer: {exc}") from None
    silence_id = doc.get("silenceID") if isinstance(doc, dict) else None
    if not isinstance(silence_id, str):
        raise error(f"Alertmanager at {url} answered without a silenceID")
    return silence_id



