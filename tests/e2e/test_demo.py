"""The README's main command: `python -m central demo` brings a whole room up and down."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests import broker as broker_mod
from tests import system


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_demo_runs_a_room_and_stops_cleanly() -> None:
    http_port, screen_port = broker_mod.free_port(), broker_mod.free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "central",
            "demo",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(http_port),
            "--screen-port",
            str(screen_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl-C" in line:
            break
    output = "".join(lines)
    try:
        assert "Press Ctrl-C" in output, output
        student, pin = re.search(r"student id (\S+) and PIN (\d+)", output).groups()  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{screen_port}/" in output

        with urllib.request.urlopen(f"http://127.0.0.1:{screen_port}/", timeout=5) as page:
            assert "html" in page.read().decode().lower()
        dashboard = re.search(r"dashboard: +(\S+)", output).group(1)  # type: ignore[union-attr]
        with urllib.request.urlopen(dashboard, timeout=5) as page:
            assert "roomproof" in page.read().decode().lower()
        with urllib.request.urlopen(f"http://127.0.0.1:{screen_port}/frame.json", timeout=5) as f:
            url = json.load(f)["url"]
        status, body, _ = system.Http(f"http://127.0.0.1:{http_port}").request(
            "POST", "/api/v1/checkins", {"token": url, "student_id": student, "pin": pin}
        )
        assert status == 201, body
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "nothing left running" in rest
    assert _port_closed(http_port) and _port_closed(screen_port)
