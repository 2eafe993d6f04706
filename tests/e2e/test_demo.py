"""The README's main command: `python -m central demo` brings a whole room up and down."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request

import aiomqtt
import pytest

from tests import broker as broker_mod
from tests import system


def _listening(port: int) -> set[str]:
    """The local addresses (IPv4 as dotted quads, IPv6 as hex) that listen on a TCP port."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, port_hex = local.split(":")
                if state != "0A" or int(port_hex, 16) != port:
                    continue
                if len(address) == 8:
                    address = str(ipaddress.IPv4Address(bytes.fromhex(address)[::-1]))
                found.add(address)
    return found


async def _outsider(port: int, bundle: dict) -> tuple[int, int, int]:
    """SUBACK reasons, for a device's own account, on central's shared subscription, on every
    device's commands, and on its own commands (for comparison)."""
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        username=bundle["mqtt_username"],
        password=bundle["mqtt_password"],
        identifier=bundle["mqtt_username"],
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        shared = await client.subscribe("$share/central/roomproof/v1/+/+/proof", qos=1)
        every = await client.subscribe("roomproof/v1/+/+/cmd", qos=1)
        own = await client.subscribe(f"roomproof/v1/{bundle['site']}/{bundle['device']}/cmd")
    return shared[0].value, every[0].value, own[0].value  # type: ignore[index,union-attr]


async def _anonymous(port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="anonymous-outsider"):
        pass


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_demo_runs_a_room_and_stops_cleanly(tmp_path: pathlib.Path) -> None:
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
            "--data-dir",
            str(tmp_path / "demo"),
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

        # The broker is never open: no anonymous client, a device's account reads only its
        # own commands and cannot join central's shared subscription; everything listens on
        # the --host address (here loopback) only.
        mqtt_port = int(re.search(r"Mosquitto on 127\.0\.0\.1:(\d+)", output).group(1))  # type: ignore[union-attr]
        with pytest.raises(aiomqtt.MqttError):
            asyncio.run(_anonymous(mqtt_port))
        other = tmp_path / "other.toml"
        added = subprocess.run(
            [
                *(sys.executable, "-m", "central", "device", "add", "--site", "demo-campus"),
                *("--room", "a-101", "--device", "pi-other", "--bundle", str(other)),
                *("--config", str(tmp_path / "demo" / "central.toml")),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr
        bundle = tomllib.loads(other.read_text())
        shared, every, own = asyncio.run(_outsider(mqtt_port, bundle))
        assert shared == 0x87 and every == 0x87 and own < 0x80
        for port in (mqtt_port, http_port, screen_port):
            assert _listening(port) == {"127.0.0.1"}, port
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "nothing left running" in rest
    assert _port_closed(http_port) and _port_closed(screen_port)
