"""A whole room on one machine: private Mosquitto, central (SQLite) and one enrolled edge agent.

Every part runs as its own process through the same commands an installer would type, so the
demo shows the real deployment path: `central device add` writes the enrollment bundle (and,
through Mosquitto's dynamic security plugin, the device's own broker account), the agent
enrolls over MQTT with it and starts publishing proofs. The broker listens on loopback only and
admits no anonymous client; central and the room screen listen on the `--host` address only.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import glob
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SITE = "demo-campus"
ROOM = "a-101"
DEVICE = "pi-a101"
STUDENT = "s1001"


class DemoError(RuntimeError):
    """Something the demo needs is missing or did not start; the message says what."""


def _free_port(preferred: int, host: str = "127.0.0.1") -> int:
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise DemoError("no free TCP port")


def _dynsec_plugin() -> pathlib.Path:
    """Mosquitto's dynamic security plugin (Debian's mosquitto package ships it)."""
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))
    for path in [*found, "/usr/lib/mosquitto_dynamic_security.so"]:
        if os.path.exists(path):
            return pathlib.Path(path)
    raise DemoError("Mosquitto's dynamic security plugin is not installed: run `bash .ci/setup`")


def _lan_address() -> str:
    """The first non-loopback address, so that a phone on the same network can reach central."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "127.0.0.1"
    for address in out.split():
        if "." in address and not address.startswith("127."):
            return address
    return "127.0.0.1"


def _wait_http(url: str, timeout: float, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"{what} exited with code {process.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise DemoError(f"{what} did not answer at {url} within {timeout:.0f}s")


def _wait_port(port: int, timeout: float, process: subprocess.Popen[bytes], what: str) -> None:
    """Wait until `port` on loopback accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"{what} exited with code {process.returncode}; see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise DemoError(f"{what} did not listen on port {port} within {timeout:.0f}s")


class Demo:
    """Owns the demo's processes and files; `close()` leaves nothing behind."""

    def __init__(self, workdir: pathlib.Path, host: str, http_port: int, screen_port: int) -> None:
        self.workdir = workdir
        self.host = host
        self.http_port = http_port
        self.screen_port = screen_port
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.central_config = workdir / "central.toml"
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()
        self.processes.append((name, process))
        return process

    def _central(self, *args: str, stdin: str | None = None) -> str:
        argv = [sys.executable, "-m", "central", *args, "--config", str(self.central_config)]
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, env=self.env, timeout=60
        )
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().splitlines()
            raise DemoError(
                f"`central {' '.join(args[:2])}` failed: {message[-1] if message else ''}"
            )
        return done.stdout

    def start(self) -> dict[str, str]:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(mosquitto):
            raise DemoError("mosquitto is not installed: run `bash .ci/setup` first")
        plugin = _dynsec_plugin()
        ctrl = shutil.which("mosquitto_ctrl")
        if ctrl is None:
            raise DemoError("mosquitto_ctrl is not installed: run `bash .ci/setup` first")
        mqtt_port = _free_port(18830)
        broker_dir = self.workdir / "mosquitto"
        broker_dir.mkdir(mode=0o700, exist_ok=True)
        # Production's setup: no anonymous clients, an account per device (made by `central
        # device add`), central with the plugin's admin account.
        dynsec_file = broker_dir / "dynamic-security.json"
        admin_password = self._admin_password(broker_dir)
        if not dynsec_file.exists():
            done = subprocess.run(
                [ctrl, "dynsec", "init", str(dynsec_file), "admin", admin_password],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if done.returncode != 0:
                raise DemoError(f"mosquitto_ctrl dynsec init failed: {done.stderr.strip()}")
        dynsec_file.chmod(0o600)
        (broker_dir / "mosquitto.conf").write_text(
            f"listener {mqtt_port} 127.0.0.1\nallow_anonymous false\n"
            f"plugin {plugin}\nplugin_opt_config_file {dynsec_file}\n"
            f"persistence true\npersistence_location {broker_dir}/\n"
            # Run as whoever runs the demo (as root, Mosquitto would switch to its own user,
            # which cannot write this private directory).
            f"user {getpass.getuser()}\n"
        )
        print(f"demo: starting Mosquitto on 127.0.0.1:{mqtt_port}", flush=True)
        broker = self._spawn("mosquitto", [mosquitto, "-c", str(broker_dir / "mosquitto.conf")])
        _wait_port(mqtt_port, 10, broker, "mosquitto")

        public_url = f"http://{self.host}:{self.http_port}"
        self.central_config.write_text(
            f'data_dir = "{self.workdir / "central"}"\n'
            f"http_host = {json.dumps(self.host)}\nhttp_port = {self.http_port}\n"
            f'public_url = "{public_url}"\nmqtt_url = "mqtt://127.0.0.1:{mqtt_port}"\n'
            f'mqtt_username = "admin"\nmqtt_password = "{admin_password}"\n'
            "broker_dynsec = true\n"
        )
        self.central_config.chmod(0o600)
        print("demo: provisioning site, room, device and a student", flush=True)
        self._central("site", "add", "--site", SITE, "--name", "Demo Campus")
        self._central("room", "add", "--site", SITE, "--room", ROOM, "--name", "Lecture Hall A-101")
        bundle = self.workdir / "edge" / "bundle.toml"
        bundle.parent.mkdir(exist_ok=True)
        self._central(
            "device",
            "add",
            "--site",
            SITE,
            "--room",
            ROOM,
            "--device",
            DEVICE,
            "--bundle",
            str(bundle),
        )
        pin = f"{secrets.randbelow(10**6):06d}"
        self._central("student", "add", "--site", SITE, "--student-id", STUDENT, "--pin", pin)
        token = self._central(
            "token", "create", "--role", "admin", "--site", SITE, "--name", "demo"
        ).split()[-1]

        print(f"demo: starting central on {public_url}", flush=True)
        central = self._spawn(
            "central",
            [sys.executable, "-m", "central", "serve", "--config", str(self.central_config)],
        )
        _wait_http(f"{self.local_url(self.http_port)}/healthz", 30, central, "central")

        settings = self.workdir / "edge" / "settings.toml"
        settings.write_text(
            f'display_sinks = ["png", "web"]\nweb_host = {json.dumps(self.host)}\n'
            f"web_port = {self.screen_port}\n"
            # A laptop or VM may not be NTP-synchronised; a real room device waits for time.
            "require_trusted_time = false\n"
        )
        print("demo: starting the room's edge agent (it enrolls itself over MQTT)", flush=True)
        agent = self._spawn(
            "edge_agent",
            [
                sys.executable,
                "-m",
                "edge_agent",
                "run",
                "--config",
                str(bundle),
                "--state-dir",
                str(self.workdir / "edge" / "state"),
                "--settings",
                str(settings),
            ],
        )
        _wait_http(f"{self.local_url(self.screen_port)}/", 30, agent, "edge agent")
        self._wait_enrolled(token, central)
        return {
            "screen": f"http://{self.host}:{self.screen_port}/",
            "checkin": f"{public_url}/c/... (scan the QR on the room screen)",
            "otp": f"{public_url}/otp",
            "events": f"{public_url}/api/v1/events",
            "token": token,
            "student_id": STUDENT,
            "pin": pin,
            "public_url": public_url,
            "logs": str(self.logs),
        }

    def local_url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    def _admin_password(self, broker_dir: pathlib.Path) -> str:
        """The broker admin's password, kept (0600) with the broker for a kept --data-dir."""
        path = broker_dir / "admin-password"
        if path.exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(password)
        return password

    def _wait_enrolled(self, token: str, central: subprocess.Popen[bytes]) -> None:
        """Wait until central has the device's first proof: the room is live."""
        request = urllib.request.Request(
            f"{self.local_url(self.http_port)}/api/v1/devices",
            headers={"Authorization": f"Bearer {token}"},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if central.poll() is not None:
                raise DemoError("central exited; see its log")
            with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                with urllib.request.urlopen(request, timeout=2) as response:
                    devices = json.load(response)["devices"]
                if any(d["device"] == DEVICE and d.get("last_seq") for d in devices):
                    return
            time.sleep(0.5)
        raise DemoError("the edge agent did not deliver a proof within 60s; see the logs")

    def alive(self) -> str | None:
        for name, process in self.processes:
            if process.poll() is not None:
                return name
        return None

    def close(self) -> None:
        for _, process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m central demo", description=__doc__)
    parser.add_argument(
        "--host",
        help="address phones use to reach this machine; central and the room screen listen on"
        " it only (default: the first LAN address)",
    )
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--screen-port", type=int, default=8081)
    parser.add_argument("--data-dir", type=pathlib.Path, help="keep state here (default: temp)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    args = parser.parse_args(argv)

    temporary = args.data_dir is None
    workdir = (
        pathlib.Path(tempfile.mkdtemp(prefix="roomproof-demo-")) if temporary else args.data_dir
    )
    workdir.mkdir(parents=True, exist_ok=True)
    host = args.host or _lan_address()
    demo = Demo(
        workdir,
        host,
        _free_port(args.http_port, host),
        _free_port(args.screen_port, host),
    )
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    try:
        urls = demo.start()
        print(
            "\nroomproof demo is running. Open:\n"
            f"  room screen (rotating QR + code): {urls['screen']}\n"
            f"  check-in page:                    {urls['checkin']}\n"
            f"  one-time-code check-in:           {urls['otp']} (site {SITE}, room {ROOM})\n"
            f"  dashboard:                        {urls['public_url']}/dashboard (paste the token)"
            "\n"
            f"  admin token:                      {urls['token']}\n"
            f"  admin event stream:               curl -N -H 'Authorization: Bearer "
            f"{urls['token']}' {urls['events']}\n"
            f"  admin devices:                    {urls['public_url']}/api/v1/devices\n"
            f"  try it with student id {urls['student_id']} and PIN {urls['pin']}\n"
            f"  logs: {urls['logs']}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        while not stop:
            failed = demo.alive()
            if failed is not None:
                raise DemoError(f"{failed} stopped unexpectedly; see {demo.logs}/{failed}.log")
            if args.duration is not None and time.monotonic() - started > args.duration:
                break
            time.sleep(0.2)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print("demo: stopping", flush=True)
        demo.close()
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    print("demo: stopped, nothing left running", flush=True)
    return 0
