"""Test-only: reports what the sandbox lets a plugin reach (environment, files, network,
clock) as fields of each event, so a test can assert that nothing was granted."""

import os
import socket
import time

import sluice_plugin as sluice


def attempt(action):
    try:
        return f"allowed: {action()!r}"[:200]
    except Exception as exc:  # noqa: BLE001 - the refusal is the answer
        return f"refused: {type(exc).__name__}"


def probe(event):
    return {
        "env": len(os.environ),
        "file": attempt(lambda: open("/etc/hostname").read()),
        "listdir": attempt(lambda: os.listdir("/")),
        "network": attempt(lambda: socket.create_connection(("127.0.0.1", 6379), timeout=1)),
        "clock": time.time(),
    }


Transformer = sluice.transformer(probe)
