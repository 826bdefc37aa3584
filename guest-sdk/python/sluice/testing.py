"""An in-memory Sluice host for unit tests of Python modules on a normal Python.

    from sluice.testing import TestHost, event
    host = TestHost.install(config={"min-amount": "100"})
    assert handler.handle is not None
    outcome = host.handle(handler.handle, event("orders", "order.created", {"amount": 150}))
    assert outcome is None and len(host.emitted) == 1

Each ``host.handle`` is one event: its writes and emits are kept only if it
succeeds, as in the real host.
"""

import json as _json
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import sluice


@dataclass
class RawEvent:
    id: str
    source: str
    type: str
    data: bytes
    key: Optional[bytes] = None
    subject: Optional[str] = None
    time: Optional[str] = None
    datacontenttype: Optional[str] = "application/json"
    dataschema: Optional[str] = None
    headers: List[Tuple[str, bytes]] = field(default_factory=list)
    topic: str = "test"
    partition: int = 0
    offset: int = 0


_counter = [0]


def event(topic, type, data, key=None, id=None, source="/test"):
    """A test event; ``data`` may be a dict (JSON), str or bytes."""
    _counter[0] += 1
    if isinstance(data, (dict, list)):
        data = _json.dumps(data).encode()
    elif isinstance(data, str):
        data = data.encode()
    return RawEvent(
        id=id or f"test-{_counter[0]}",
        source=source,
        type=type,
        data=data,
        key=None if key is None else (key.encode() if isinstance(key, str) else key),
        topic=topic,
        offset=_counter[0],
    )


@dataclass
class Emitted:
    topic: str
    type: str
    key: Optional[bytes]
    data: bytes

    def json(self):
        return _json.loads(self.data)


class _StateApi:
    def __init__(self, host):
        self.h = host

    def get(self, key):
        return self.h._overlay.get(key, self.h.state.get(key))

    def set(self, key, value):
        self.h._overlay[key] = value

    def delete(self, key):
        self.h._overlay[key] = None

    def scan_prefix(self, prefix, start_after, limit):
        merged = dict(self.h.state)
        merged.update(self.h._overlay)
        keys = sorted(k for k, v in merged.items() if v is not None and k.startswith(prefix))
        if start_after is not None:
            keys = [k for k in keys if k > start_after]
        page = keys[:limit]
        nxt = page[-1] if len(keys) > limit else None
        return _Page([(k, merged[k]) for k in page], nxt)


@dataclass
class _Page:
    entries: list
    next: Optional[bytes]


class _ConfigApi:
    def __init__(self, values):
        self.values = values

    def get(self, key):
        return self.values.get(key)

    def all(self):
        return sorted(self.values.items())


class TestHost:
    """State (committed), emitted events and log lines of the events handled so far."""

    def __init__(self, config=None):
        self.state = {}
        self.emitted: List[Emitted] = []
        self.logs: List[Tuple[str, str]] = []
        self._overlay = {}
        self._pending = []
        self.state_api = _StateApi(self)
        self.config = _ConfigApi(dict(config or {}))

    @classmethod
    def install(cls, config=None):
        """A fresh host that the ``sluice`` helpers now talk to."""
        host = cls(config)
        sluice._backend.host = _HostView(host)
        return host

    def emit(self, topic, type, key, data, subject, datacontenttype, headers):
        self._pending.append(Emitted(topic, type, key, data))

    def log(self, level, message):
        self.logs.append((level, message))

    def handle(self, handle, raw):
        """Run one event through ``handle``; commit its effects only if it succeeds."""
        self._overlay, self._pending = {}, []
        outcome = sluice.run(handle, raw)
        if outcome is None:
            for k, v in self._overlay.items():
                if v is None:
                    self.state.pop(k, None)
                else:
                    self.state[k] = v
            self.emitted.extend(self._pending)
        self._overlay, self._pending = {}, []
        return outcome

    def state_json(self, key):
        v = self.state.get(key.encode() if isinstance(key, str) else key)
        return None if v is None else _json.loads(v)


class _HostView:
    """What ``sluice._backend`` sees: ``state`` is the state API, not the dict."""

    def __init__(self, host):
        self.host = host
        self.state = host.state_api
        self.config = host.config

    def emit(self, *a):
        self.host.emit(*a)

    def log(self, *a):
        self.host.log(*a)
