"""Run central and the edge agent as real processes, the way an installer would."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import ssl
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.request

from tests import broker as broker_mod


def wait_for(predicate: typing.Callable[[], typing.Any], timeout: float, what: str) -> typing.Any:
    """Poll until predicate returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


class Http:
    """A tiny JSON client (urllib) so that tests exercise the real server over TCP."""

    def __init__(
        self, base: str, token: str | None = None, context: ssl.SSLContext | None = None
    ) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.context = context

    def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, typing.Any, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
                raw = response.read()
                status, response_headers = response.status, dict(response.headers)
        except urllib.error.HTTPError as error:
            raw, status, response_headers = error.read(), error.code, dict(error.headers)
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        return status, payload, response_headers


class Central:
    """`python -m central` with a config file in its own data dir."""

    def __init__(self, workdir: pathlib.Path, mqtt_url: str) -> None:
        self.workdir = workdir
        self.port = broker_mod.free_port()
        self.config = workdir / "central.toml"
        self.log = workdir / "central.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.scheme = "http"
        self.context: ssl.SSLContext | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'data_dir = "{workdir / "data"}"\nhttp_host = "127.0.0.1"\n'
            f'http_port = {self.port}\npublic_url = "http://127.0.0.1:{self.port}"\n'
            f'mqtt_url = "{mqtt_url}"\nlog_level = "INFO"\nallow_anonymous_broker = true\n'
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def serve_https(self, cert: pathlib.Path, key: pathlib.Path, ca: pathlib.Path) -> None:
        """Central's own HTTPS listener; clients trust `ca`."""
        with self.config.open("a") as config:
            config.write(f'http_tls_cert = "{cert}"\nhttp_tls_key = "{key}"\n')
        self.scheme = "https"
        self.context = ssl.create_default_context(cafile=str(ca))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "central", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"central {args} failed: {done.stdout}{done.stderr}")
        return done

    def provision(self, bundle: pathlib.Path, room_name: str | None = None) -> str:
        """Site `campus`, room `a-101`, device `pi-a101` with its bundle; returns an admin token."""
        self.cli("site", "add", "--site", "campus")
        self.cli(
            "room",
            "add",
            "--site",
            "campus",
            "--room",
            "a-101",
            *(["--name", room_name] if room_name else []),
        )
        self.cli(
            "device",
            "add",
            "--site",
            "campus",
            "--room",
            "a-101",
            "--device",
            "pi-a101",
            "--bundle",
            str(bundle),
        )
        return self.cli("token", "create", "--role", "admin", "--site", "campus").stdout.split()[-1]

    def start(self, **env: str) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "central", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=log,
                env=dict(os.environ, **env),
            )
        wait_for(self._healthy, 30, "central /healthz")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"central exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(
                self.url + "/healthz", timeout=1, context=self.context
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)
            self.process = None


class Agent:
    """`python -m edge_agent run` from an enrollment bundle."""

    def __init__(self, workdir: pathlib.Path, bundle: pathlib.Path, settings: str) -> None:
        self.workdir = workdir
        self.bundle = bundle
        self.state = workdir / "state"
        self.settings = workdir / "settings.toml"
        self.log = workdir / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.settings.write_text(settings)

    def start(self, **env: str) -> None:
        """Start the agent; `env` adds environment variables (e.g. LD_PRELOAD of libfaketime)."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge_agent",
                    "run",
                    "--config",
                    str(self.bundle),
                    "--state-dir",
                    str(self.state),
                    "--settings",
                    str(self.settings),
                ],
                stdout=log,
                stderr=log,
                env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
            )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=20)
        self.process = None
        return code
