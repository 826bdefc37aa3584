"""Sluice module helpers for Python.

A module is one file (``handler.py``) defining ``handle(event)``::

    from sluice import state, emit, Reject

    def handle(event):
        order = event.json()                       # Reject if not JSON
        t = state.get_json(f"total/{order['customer']}", {"total": 0})
        t["total"] += order["amount"]
        state.set_json(f"total/{order['customer']}", t)
        emit("totals", "total.updated", key=order["customer"], json=t)

Return normally: the event's state writes and emits commit together. Raise
``Retry(msg)`` for a transient failure (retried with backoff), ``Reject(msg)``
for a permanent one (dead-lettered); any other exception is a reject with its
message. The build (``scripts/build-module.sh``) packages this helper with the
module and wraps ``handle`` with :func:`run`.

Inside the component the helpers call the ``sluice:processor`` imports; on a
normal Python (unit tests), :mod:`sluice.testing` provides an in-memory host.
"""

import json as _json

__all__ = ["Retry", "Reject", "Event", "state", "emit", "config", "log", "run"]


class Retry(Exception):
    """A transient failure: the host retries the event in place, with backoff."""


class Reject(Exception):
    """A permanent failure: the event goes to the module's dead-letter topic."""


def _bytes(v):
    return v.encode() if isinstance(v, str) else bytes(v)


def _dumps(value):
    # Compact, like JSON.stringify and serde_json: the same event gives the
    # same bytes in every language.
    return _json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


try:
    # Inside the component. (Imported here, at build time: componentize-py
    # keeps the bindings of the interfaces imported while it snapshots.)
    from wit_world.imports import config as _w_config
    from wit_world.imports import emit as _w_emit
    from wit_world.imports import log as _w_log
    from wit_world.imports import state as _w_state
    from wit_world.imports import types as _w_types
except ImportError:  # on a normal Python: sluice.testing installs a host
    _w_state = None


class _Backend:
    """Where the helpers send their calls: the component's imports, or a test host."""

    def __init__(self):
        self.host = None  # set by sluice.testing

    def __getattr__(self, name):
        if self.host is None:
            if _w_state is None:
                raise RuntimeError("no Sluice host: in unit tests, call sluice.testing.TestHost.install() first")
            self.host = _Imports(_w_state, _w_emit, _w_log, _w_config, _w_types)
        return getattr(self.host, name)


class _Imports:
    def __init__(self, state, emit, log, config, types):
        self.state, self._emit, self._log, self.config, self.types = state, emit, log, config, types

    def emit(self, topic, type, key, data, subject, datacontenttype, headers):
        self._emit.emit(
            self.types.OutgoingEvent(
                topic=topic,
                type=type,
                key=key,
                data=data,
                subject=subject,
                datacontenttype=datacontenttype,
                headers=headers,
            )
        )

    def log(self, level, message):
        self._log.log(getattr(self._log.Level, level.upper()), message)


_backend = _Backend()


class _State:
    """The module's state, scoped to the event's partition. Keys and values are str or bytes."""

    def get(self, key):
        return _backend.state.get(_bytes(key))

    def get_str(self, key, default=None):
        v = self.get(key)
        return default if v is None else v.decode()

    def get_json(self, key, default=None):
        v = self.get(key)
        return default if v is None else _json.loads(v)

    def set(self, key, value):
        _backend.state.set(_bytes(key), _bytes(value))

    def set_json(self, key, value):
        _backend.state.set(_bytes(key), _dumps(value))

    def delete(self, key):
        _backend.state.delete(_bytes(key))

    def scan(self, prefix, start_after=None, limit=100):
        """One page of ``(key, value)`` pairs under ``prefix``, and the key to pass as ``start_after`` next (None when done)."""
        page = _backend.state.scan_prefix(
            _bytes(prefix), None if start_after is None else _bytes(start_after), limit
        )
        return page.entries, page.next


state = _State()


def emit(topic, type, *, key=None, json=None, data=None, subject=None, datacontenttype=None, headers=()):
    """Emit an event to ``topic`` (declared under [[produce]] in module.toml)."""
    payload = _dumps(json) if json is not None else _bytes(data if data is not None else b"")
    _backend.emit(
        topic,
        type,
        None if key is None else _bytes(key),
        payload,
        subject,
        datacontenttype,
        [(n, _bytes(v)) for n, v in headers],
    )


class _Config:
    """The module's [config] table: strings as written, other values as JSON text."""

    def get(self, key, default=None):
        v = _backend.config.get(key)
        return default if v is None else v

    def get_json(self, key, default=None):
        v = _backend.config.get(key)
        return default if v is None else _json.loads(v)

    def all(self):
        return list(_backend.config.all())


config = _Config()


class _Log:
    """Leveled lines in the host's log, tagged with the module and event id."""

    def __getattr__(self, level):
        if level not in ("trace", "debug", "info", "warn", "error"):
            raise AttributeError(level)
        return lambda message: _backend.log(level, str(message))


log = _Log()


class Event:
    """The event a handler gets: the record's fields plus ``json()``, ``text()`` and ``key_str``."""

    __slots__ = ("_raw",)

    def __init__(self, raw):
        self._raw = raw

    def __getattr__(self, name):
        return getattr(self._raw, name)

    @property
    def key_str(self):
        k = self._raw.key
        return None if k is None else k.decode()

    def text(self):
        return self._raw.data.decode()

    def json(self):
        try:
            return _json.loads(self._raw.data)
        except ValueError as e:
            raise Reject(f"event {self._raw.id} data is not JSON: {e}") from None


def run(handle, raw):
    """Call ``handle`` on one event; returns ``None`` or ``("retry"|"reject", message)``."""
    try:
        handle(Event(raw))
        return None
    except Retry as e:
        return ("retry", str(e))
    except Reject as e:
        return ("reject", str(e))
    except Exception as e:  # a bug in the module: permanent for this event
        return ("reject", f"uncaught {type(e).__name__}: {e}")
