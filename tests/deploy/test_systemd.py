"""The systemd side of an install, checked with systemd's own tools, and the agent speaking
sd_notify to a real notify socket: READY, STATUS, a watchdog fed only while healthy."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from tests import broker as broker_mod
from tests import system

ROOT = pathlib.Path(__file__).resolve().parents[2]
UNITS = ("roomproof-edge.service", "roomproof-central.service")
INSTALLED_PYTHON = "/opt/roomproof/venv/bin/python"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def installed_copy(
    tmp_path: pathlib.Path, unit: str, change: tuple[str, str] | None = None
) -> pathlib.Path:
    """The unit as the install script lays it out, with this venv's python in place of the
    install prefix (verify checks that ExecStart exists)."""
    text = (ROOT / "systemd" / unit).read_text().replace(INSTALLED_PYTHON, sys.executable)
    if change is not None:
        text = text.replace(*change)
    path = tmp_path / unit
    path.write_text(text)
    return path


def verify(path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("unit", UNITS)
def test_units_pass_systemd_analyze_verify(tmp_path: pathlib.Path, unit: str) -> None:
    done = verify(installed_copy(tmp_path, unit))
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    # The check can fail: a misspelt key and a missing program are reported.
    typo = verify(installed_copy(tmp_path, unit, ("Type=notify", "Typ=notify")))
    assert "Unknown key 'Typ'" in typo.stderr
    missing = verify(installed_copy(tmp_path, unit, (sys.executable, "/nonexistent/python")))
    assert missing.returncode != 0 and "not executable" in missing.stderr


@pytest.mark.parametrize("unit,ceiling", [(UNITS[0], 5.0), (UNITS[1], 4.0)])
def test_units_are_hardened(tmp_path: pathlib.Path, unit: str, ceiling: float) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(installed_copy(tmp_path, unit))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert found, done.stdout[-500:] + done.stderr
    assert float(found.group(1)) <= ceiling, done.stdout[-3000:]
    text = (ROOT / "systemd" / unit).read_text()
    for line in ("ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "User=roomproof"):
        assert line in text
    if unit == UNITS[0]:
        assert "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN\n" in text
        assert "ReadWritePaths=/var/lib/roomproof-edge\n" in text


def test_backup_timer_and_service_verify_and_are_hardened(tmp_path: pathlib.Path) -> None:
    """The scheduled backup (docs/operations.md): a oneshot service its timer starts every 10
    minutes, as hardened as central's own unit."""
    service = installed_copy(tmp_path, "roomproof-central-backup.service")
    timer = tmp_path / "roomproof-central-backup.timer"
    timer.write_text((ROOT / "systemd" / timer.name).read_text())
    done = verify(timer)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    assert "OnCalendar=*:0/10\n" in timer.read_text()
    text = service.read_text()
    assert "--passphrase-file ${CREDENTIALS_DIRECTORY}/backup-passphrase" in text
    assert "ROOMPROOF_BACKUP_PASSPHRASE" not in text  # never in the unit, where all can read
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(service)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert found and float(found.group(1)) <= 4.0, done.stdout[-3000:]
    typo = verify(installed_copy(tmp_path, service.name, ("Type=oneshot", "Typ=oneshot")))
    assert "Unknown key 'Typ'" in typo.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_and_tmpfiles_create_the_user_and_private_dirs(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", root / "etc" / name)
    users = subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(ROOT / "systemd" / "roomproof.sysusers.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert users.returncode == 0, users.stderr
    passwd = (root / "etc" / "passwd").read_text()
    assert re.search(r"^roomproof:x:\d+:\d+:roomproof services:", passwd, re.M), passwd
    groups = (root / "etc" / "group").read_text()
    assert re.search(r"^video:x:\d+:.*roomproof", groups, re.M), groups
    dirs = subprocess.run(
        [
            "systemd-tmpfiles",
            f"--root={root}",
            "--create",
            str(ROOT / "systemd" / "roomproof.tmpfiles.conf"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dirs.returncode == 0, dirs.stderr
    for name in ("roomproof-edge", "roomproof-central"):
        mode = (root / "var" / "lib" / name).stat().st_mode
        assert stat.S_IMODE(mode) == 0o700
    backups = (root / "var" / "backups" / "roomproof-central").stat().st_mode
    assert stat.S_IMODE(backups) == 0o700  # the backup timer's --out-dir


def test_boot_partition_bundle_is_taken_and_erased(tmp_path: pathlib.Path) -> None:
    boot = tmp_path / "boot-firmware"
    boot.mkdir()
    dropped = boot / "roomproof-bundle.toml"
    dropped.write_text('site = "campus"\nenrollment_code = "secret-one-time-code"\n')
    state = tmp_path / "state"
    command = [sys.executable, "-m", "edge_agent", "import-bundle", "--from", str(dropped)]
    done = subprocess.run(
        [*command, "--state-dir", str(state), "--owner", "root"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "taken into" in done.stdout, done.stderr
    taken = state / "bundle.toml"
    assert "secret-one-time-code" in taken.read_text()
    assert stat.S_IMODE(taken.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert not dropped.exists()
    again = subprocess.run(
        [*command, "--state-dir", str(state)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and "nothing to import" in again.stdout
    dropped.write_bytes(b"x" * 70_000)
    huge = subprocess.run(
        [*command, "--state-dir", str(state)], capture_output=True, text=True, timeout=60
    )
    assert huge.returncode == 1 and "not a bundle" in huge.stderr
    assert "secret-one-time-code" in taken.read_text()  # the good bundle was not replaced


class NotifySocket:
    """The datagram socket systemd listens on for a Type=notify service."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._cursor = 0  # messages before it were seen by collect or wait_for

    def collect(self, seconds: float) -> list[str]:
        """Every message not seen yet, after waiting `seconds` for more."""
        self._receive(seconds)
        got = [message for _, message in self.messages[self._cursor :]]
        self._cursor = len(self.messages)
        return got

    def _receive(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.messages.append((time.monotonic(), self.socket.recv(4096).decode()))
            except TimeoutError:
                continue

    def wait_for(self, needle: str, seconds: float) -> str:
        """The first message with `needle` after the one the last call returned (messages
        that arrived together with that one are not lost)."""
        deadline = time.monotonic() + seconds
        while True:
            while self._cursor < len(self.messages):
                message = self.messages[self._cursor][1]
                self._cursor += 1
                if needle in message:
                    return message
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {needle!r} in {seconds} s: {self.messages[-5:]}")
            self._receive(0.3)


def test_agent_notifies_systemd_and_feeds_the_watchdog_only_while_healthy(
    tmp_path: pathlib.Path,
) -> None:
    central = system.Central(tmp_path / "central", f"mqtt://127.0.0.1:{broker_mod.free_port()}")
    bundle = tmp_path / "bundle.toml"
    central.provision(bundle)
    screen = tmp_path / "screen"
    screen.mkdir()
    agent = system.Agent(
        tmp_path / "agent",
        bundle,
        f'slot_s = 5\nrequire_trusted_time = false\npng_path = "{screen / "frame.png"}"\n',
    )
    notify = NotifySocket(tmp_path / "notify.sock")
    agent.start(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="2000000")
    try:
        ready = notify.wait_for("READY=1", 30)
        assert "STATUS=campus/pi-a101" in ready
        beats = [m for m in notify.collect(4) if m == "WATCHDOG=1"]
        assert len(beats) >= 3, notify.messages[-10:]  # every second (half of WatchdogSec)

        shutil.rmtree(screen)  # the only display sink now fails: the screen is frozen
        unhealthy = notify.wait_for("STATUS=unhealthy: the display has not been updated", 15)
        assert unhealthy
        silent = notify.collect(3)
        assert "WATCHDOG=1" not in silent, silent
        assert "unhealthy: the display has not been updated" in agent.log.read_text()

        screen.mkdir()
        notify.wait_for("WATCHDOG=1", 10)
        assert agent.process is not None
        agent.process.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", 10)
        assert agent.process.wait(timeout=20) == 0
        agent.process = None
    finally:
        if agent.process is not None:
            agent.stop(signal.SIGKILL)
        notify.socket.close()
        os.unlink(notify.path)


def test_central_notifies_systemd(tmp_path: pathlib.Path, broker: broker_mod.Broker) -> None:
    central = system.Central(tmp_path / "central", broker.url)
    notify = NotifySocket(tmp_path / "central-notify.sock")
    central.start(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="2000000")
    try:
        assert "STATUS=serving" in notify.wait_for("READY=1", 30)
        notify.wait_for("STATUS=serving; broker connected; store ok", 15)
        beats = [m for m in notify.collect(3) if m == "WATCHDOG=1"]
        assert len(beats) >= 2, notify.messages[-10:]
        central.stop()
        notify.wait_for("STOPPING=1", 5)
    finally:
        central.stop()
        notify.socket.close()
        os.unlink(notify.path)


def test_central_logs_json_lines_with_request_ids(
    tmp_path: pathlib.Path, broker: broker_mod.Broker
) -> None:
    central = system.Central(tmp_path / "central", broker.url)
    with central.config.open("a") as config:
        config.write('log_format = "json"\n')
    central.start()
    try:
        status, _, headers = system.Http(central.url).request("GET", "/api/v1/devices")
        assert status == 401
        request_id = headers["X-Request-Id"]

        def logged() -> dict | None:
            for line in central.log.read_text().splitlines():
                entry = json.loads(line)  # every line is JSON
                if entry.get("request_id") == request_id:
                    return entry
            return None

        entry = system.wait_for(logged, 10, "the request's log line")
        assert entry["level"] == "INFO" and entry["code"] == "unauthorized"
        assert entry["status"] == 401 and entry["logger"] == "central.http.middleware"
    finally:
        central.stop()
