"""Tries what a sandboxed module must not be able to do, and reports each
outcome as an event (the test asserts every one failed inside the guest)."""

import os
import socket

from sluice import config, emit, log


def attempt(f):
    try:
        return f"succeeded: {f()}"
    except Exception as e:
        return f"failed: {type(e).__name__}: {e}"


def connect(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.connect(("127.0.0.1", port))
        return "connected"
    finally:
        s.close()


def handle(event):
    port = int(config.get("port", "0"))
    tried = {
        "file": attempt(lambda: open("/etc/hostname").read()),
        "listdir": attempt(lambda: os.listdir("/")),
        "socket": attempt(lambda: connect(port)),
        "env": attempt(lambda: os.environ["HOME"]),
        "environ": dict(os.environ),
    }
    log.info(f"snoop-py tried {len(tried)} things")
    emit("snoop-out", "snoop.result", key="py", json=tried)
