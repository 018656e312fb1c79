"""The embedded Confluent-compatible schema registry: a real HTTP server on 127.0.0.1.

It implements the part of the Confluent Schema Registry REST API that confluent-kafka's
:class:`~confluent_kafka.schema_registry.SchemaRegistryClient` and its Avro serializers use, with
Confluent's error bodies (``{"error_code": 40401, "message": "..."}``) and content type
(``application/vnd.schemaregistry.v1+json``), so the same client code runs against it and against
a production registry. The logic lives in :class:`~carrierwatch.registry.store.RegistryStore`; this
module is the HTTP mapping (aiohttp.web) and the background thread that serves it.

Endpoints
---------
``GET /`` · ``GET /schemas/types`` · ``GET /schemas/ids/{id}`` (``/schema``, ``/versions``,
``/subjects``) · ``GET /subjects`` · ``POST /subjects/{subject}`` (lookup) ·
``DELETE /subjects/{subject}`` · ``GET|POST /subjects/{subject}/versions`` ·
``GET|DELETE /subjects/{subject}/versions/{version}`` (``/schema``, ``/referencedby``) ·
``POST /compatibility/subjects/{subject}/versions[/{version}]`` (``?verbose=true``) ·
``GET|PUT|DELETE /config`` and ``/config/{subject}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from aiohttp import web

from carrierwatch.core.errors import CarrierwatchError
from carrierwatch.registry.store import (
    DEFAULT_COMPATIBILITY,
    RegistryError,
    RegistryStore,
    parse_version,
)

__all__ = [
    "CONTENT_TYPE",
    "STATE_FILE_NAME",
    "EmbeddedSchemaRegistry",
    "RegistryBusyError",
    "build_app",
]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
STATE_FILE_NAME = "registry.json"

_STORE_KEY = web.AppKey("store", RegistryStore)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RegistryBusyError(CarrierwatchError):
    """Another embedded registry (in this or another process) serves the same state file."""


def _reply(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type=CONTENT_TYPE)


def _error(status: int, code: int, message: str) -> web.Response:
    return _reply({"error_code": code, "message": message}, status)


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").strip().lower() == "true"


def _schema_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound() from None


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise _BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _BadRequest("request body must be a JSON object")
    return body


async def _schema_body(request: web.Request) -> tuple[str, str | None, Any]:
    body = await _body(request)
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema.strip():
        raise _InvalidSchema("Empty schema")
    for unsupported in ("metadata", "ruleSet"):
        if body.get(unsupported):
            raise _InvalidSchema(
                f"Invalid schema: {unsupported} is not supported by the embedded registry")
    return schema, body.get("schemaType"), body.get("references")


class _BadRequest(Exception):
    pass


class _InvalidSchema(Exception):
    pass


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as a Confluent error body."""
    try:
        return await handler(request)
    except RegistryError as exc:
        return _error(exc.http_status, exc.error_code, str(exc))
    except _InvalidSchema as exc:
        return _error(422, 42201, str(exc))
    except _BadRequest as exc:
        return _error(400, 400, str(exc))
    except web.HTTPException as exc:
        return _error(exc.status, exc.status, exc.reason)
    except Exception as exc:  # the client gets a 500 body; the server keeps serving
        return _error(500, 50001, f"Error in the backend data store: {exc!r}")


def _store(request: web.Request) -> RegistryStore:
    return request.app[_STORE_KEY]


# -- handlers -------------------------------------------------------------------------------------

async def _root(request: web.Request) -> web.Response:
    return _reply({})


async def _schema_types(request: web.Request) -> web.Response:
    return _reply(["AVRO"])


async def _schema_by_id(request: web.Request) -> web.Response:
    return _reply({"schema": _store(request).schema_by_id(_schema_id(request))})


async def _raw_schema_by_id(request: web.Request) -> web.Response:
    return _reply(json.loads(_store(request).schema_by_id(_schema_id(request))))


async def _versions_of_id(request: web.Request) -> web.Response:
    pairs = _store(request).versions_of_id(_schema_id(request), deleted=_flag(request, "deleted"))
    subject = request.query.get("subject")
    return _reply([{"subject": s, "version": v} for s, v in pairs if subject in (None, s)])


async def _subjects_of_id(request: web.Request) -> web.Response:
    pairs = _store(request).versions_of_id(_schema_id(request), deleted=_flag(request, "deleted"))
    subject = request.query.get("subject")
    return _reply(sorted({s for s, _ in pairs if subject in (None, s)}))


async def _subjects(request: web.Request) -> web.Response:
    deleted = _flag(request, "deleted") or _flag(request, "deleted_only")
    names = _store(request).subjects(prefix=request.query.get("subjectPrefix", ""),
                                     deleted=deleted)
    if _flag(request, "deleted_only"):
        live = set(_store(request).subjects(prefix=request.query.get("subjectPrefix", "")))
        names = [name for name in names if name not in live]
    return _reply(names)


async def _lookup(request: web.Request) -> web.Response:
    schema, schema_type, references = await _schema_body(request)
    found = _store(request).lookup(request.match_info["subject"], schema,
                                   deleted=_flag(request, "deleted"), schema_type=schema_type,
                                   references=references)
    return _reply(found.to_json())


async def _delete_subject(request: web.Request) -> web.Response:
    return _reply(_store(request).delete_subject(request.match_info["subject"],
                                                 permanent=_flag(request, "permanent")))


async def _list_versions(request: web.Request) -> web.Response:
    return _reply(_store(request).versions(request.match_info["subject"],
                                           deleted=_flag(request, "deleted")))


async def _register(request: web.Request) -> web.Response:
    schema, schema_type, references = await _schema_body(request)
    registered = _store(request).register(request.match_info["subject"], schema,
                                          schema_type=schema_type, references=references)
    return _reply({"id": registered.schema_id})


async def _get_version(request: web.Request) -> web.Response:
    found = _store(request).get_version(request.match_info["subject"],
                                        request.match_info["version"],
                                        deleted=_flag(request, "deleted"))
    return _reply(found.to_json())


async def _get_version_schema(request: web.Request) -> web.Response:
    found = _store(request).get_version(request.match_info["subject"],
                                        request.match_info["version"],
                                        deleted=_flag(request, "deleted"))
    return _reply(json.loads(found.schema))


async def _referenced_by(request: web.Request) -> web.Response:
    _store(request).get_version(request.match_info["subject"], request.match_info["version"])
    return _reply([])  # the embedded registry accepts no schema references


async def _delete_version(request: web.Request) -> web.Response:
    return _reply(_store(request).delete_version(request.match_info["subject"],
                                                 request.match_info["version"],
                                                 permanent=_flag(request, "permanent")))


async def _compatibility(request: web.Request) -> web.Response:
    schema, schema_type, references = await _schema_body(request)
    version = request.match_info.get("version")
    if version is not None:
        parse_version(version)
    result = _store(request).test_compatibility(request.match_info["subject"], schema, version,
                                                schema_type=schema_type, references=references)
    body: dict[str, Any] = {"is_compatible": result.is_compatible}
    if _flag(request, "verbose"):
        body["messages"] = result.messages
    return _reply(body)


def _level_from(body: dict[str, Any]) -> str:
    level = body.get("compatibility", body.get("compatibilityLevel"))
    if level is None:
        raise _BadRequest("request body needs a 'compatibility' value")
    return str(level)


async def _get_config(request: web.Request) -> web.Response:
    return _reply({"compatibilityLevel": _store(request).global_compatibility().value})


async def _put_config(request: web.Request) -> web.Response:
    level = _store(request).set_global_compatibility(_level_from(await _body(request)))
    return _reply({"compatibility": level.value})


async def _delete_config(request: web.Request) -> web.Response:
    previous = _store(request).global_compatibility()
    _store(request).set_global_compatibility(DEFAULT_COMPATIBILITY.value)
    return _reply({"compatibilityLevel": previous.value})


async def _get_subject_config(request: web.Request) -> web.Response:
    level = _store(request).subject_compatibility(
        request.match_info["subject"], default_to_global=_flag(request, "defaultToGlobal"))
    return _reply({"compatibilityLevel": level.value})


async def _put_subject_config(request: web.Request) -> web.Response:
    level = _store(request).set_subject_compatibility(request.match_info["subject"],
                                                      _level_from(await _body(request)))
    return _reply({"compatibility": level.value})


async def _delete_subject_config(request: web.Request) -> web.Response:
    level = _store(request).delete_subject_compatibility(request.match_info["subject"])
    return _reply({"compatibilityLevel": level.value})


def build_app(store: RegistryStore) -> web.Application:
    """The aiohttp application serving ``store`` over the Confluent REST API."""
    app = web.Application(middlewares=[_errors])
    app[_STORE_KEY] = store
    subject = "/subjects/{subject}"
    version = subject + "/versions/{version}"
    app.add_routes([
        web.get("/", _root),
        web.get("/schemas/types", _schema_types),
        web.get("/schemas/ids/{id}", _schema_by_id),
        web.get("/schemas/ids/{id}/schema", _raw_schema_by_id),
        web.get("/schemas/ids/{id}/versions", _versions_of_id),
        web.get("/schemas/ids/{id}/subjects", _subjects_of_id),
        web.get("/subjects", _subjects),
        web.post(subject, _lookup),
        web.delete(subject, _delete_subject),
        web.get(subject + "/versions", _list_versions),
        web.post(subject + "/versions", _register),
        web.get(version, _get_version),
        web.delete(version, _delete_version),
        web.get(version + "/schema", _get_version_schema),
        web.get(version + "/referencedby", _referenced_by),
        web.post("/compatibility" + subject + "/versions", _compatibility),
        web.post("/compatibility" + version, _compatibility),
        web.get("/config", _get_config),
        web.put("/config", _put_config),
        web.delete("/config", _delete_config),
        web.get("/config/{subject}", _get_subject_config),
        web.put("/config/{subject}", _put_subject_config),
        web.delete("/config/{subject}", _delete_subject_config),
    ])
    return app


class EmbeddedSchemaRegistry:
    """The registry served from a background thread (its own asyncio loop) on ``host:port``.

    Parameters
    ----------
    state_file
        The JSON file the registry persists to (``None``: in memory only). One registry at a time
        may serve a file: a second one, in any process, raises :class:`RegistryBusyError`.
    host, port
        Where to listen; port 0 picks a free ephemeral port (see :attr:`url`).

    Examples
    --------
    >>> import httpx
    >>> with EmbeddedSchemaRegistry() as registry:
    ...     httpx.get(registry.url + "/config").json()
    {'compatibilityLevel': 'BACKWARD'}
    """

    def __init__(self, state_file: Path | None = None, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.state_file = state_file
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._lock_handle: IO[str] | None = None
        self._store: RegistryStore | None = None

    @property
    def url(self) -> str:
        """The base URL clients use (``http://127.0.0.1:PORT``)."""
        if self._runner is None:
            raise RuntimeError("the embedded schema registry is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def store(self) -> RegistryStore:
        """The registry state being served."""
        if self._store is None:
            raise RuntimeError("the embedded schema registry is not running")
        return self._store

    @property
    def running(self) -> bool:
        return self._runner is not None

    def _acquire_state_file(self) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.state_file.with_suffix(".lock"), "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RegistryBusyError(
                f"another embedded schema registry serves {self.state_file}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle

    def _release_state_file(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def start(self, timeout: float = 10.0) -> EmbeddedSchemaRegistry:
        """Load the state, bind the port and serve in a daemon thread; returns ``self``."""
        if self._runner is not None:
            raise RuntimeError("the embedded schema registry is already running")
        self._acquire_state_file()
        try:
            self._store = RegistryStore(self.state_file)
            loop = asyncio.new_event_loop()
            runner = web.AppRunner(build_app(self._store), access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            loop.run_until_complete(site.start())
        except BaseException:
            self._release_state_file()
            raise
        self.port = int(runner.addresses[0][1])
        self._loop, self._runner = loop, runner
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="carrierwatch-schema-registry",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the embedded schema registry did not start in time")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and release the state file (the state is already on disk)."""
        loop, runner, thread = self._loop, self._runner, self._thread
        if loop is None or runner is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
            self._loop = self._runner = self._thread = None
            self._release_state_file()

    def __enter__(self) -> EmbeddedSchemaRegistry:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
