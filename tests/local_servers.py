"""Helpers for tests that start a server of the project's own (`sparklio serve`, `dagster dev`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import httpx


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, timeout_s: float, what: str, proc: subprocess.Popen | None = None,
                  poll_s: float = 0.3) -> None:
    """Poll `url` until it answers 200; fail with `what` after timeout_s, or at once with the
    server's stderr when `proc` (started with stderr=PIPE) has exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc is not None:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else f"{what} exited"
        assert time.monotonic() < deadline, f"{what} did not come up"
        time.sleep(poll_s)


def stop_group(proc: subprocess.Popen, grace_s: float = 120) -> None:
    """Stop a server started with start_new_session=True and everything it started: SIGTERM to
    its process group, SIGKILL after `grace_s` (generous: a loaded machine stops slowly)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
