"""SIGTERM and SIGHUP stop nlpfw as Ctrl-C does (what `kill`, Docker, Kubernetes and Slurm
send): training finishes its step, writes a checkpoint and prints the resume command; at any
other moment the command stops with its message. The exit code is 128 + the signal's number
(130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""

from __future__ import annotations

import signal
import threading
from typing import Any

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
received = signal.SIGINT  # the last stop signal that came


def _raise(signum: int, frame: Any) -> None:
    global received
    received = signum
    raise KeyboardInterrupt


def install() -> None:
    """Make SIGTERM and SIGHUP raise `KeyboardInterrupt`, as SIGINT does."""
    if threading.current_thread() is threading.main_thread():
        for number in STOP_SIGNALS:
            if number != signal.SIGINT:
                signal.signal(number, _raise)


def note(signum: int) -> None:
    global received
    received = signum


def exit_code() -> int:
    return 128 + int(received)


def name() -> str:
    return "Ctrl-C" if received == signal.SIGINT else signal.Signals(received).name
