"""`python -m edge_agent` as an installer runs it: render a frame, refuse bad configuration."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import zxingcpp
from PIL import Image

from edge_agent.protocol import b64
from edge_agent.protocol import keys
from edge_agent.protocol import qrtoken


def write_bundle(path: pathlib.Path, **overrides: str | None) -> pathlib.Path:
    fields: dict[str, str | None] = {
        "site": "campus",
        "room": "a-101",
        "device": "pi-a101",
        "mqtt_url": "mqtt://127.0.0.1:1",
        "public_url": "http://127.0.0.1:8080",
        "central_ed25519": b64.encode(keys.SigningKey.generate().public),
        "central_x25519": b64.encode(keys.AgreementKey.generate().public),
        "enrollment_code": b64.encode(os.urandom(32)),
    }
    fields.update(overrides)
    path.write_text("".join(f'{k} = "{v}"\n' for k, v in fields.items() if v is not None))
    return path


def agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_render_writes_a_genuine_frame(tmp_path: pathlib.Path) -> None:
    bundle = write_bundle(tmp_path / "bundle.toml")
    before = bundle.read_text()
    done = agent(
        "render",
        "--config",
        str(bundle),
        "--state-dir",
        str(tmp_path / "state"),
        "--out",
        str(tmp_path / "f.png"),
    )
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "f.png") as image:
        text = zxingcpp.read_barcodes(image.convert("RGB"))[0].text
    assert text.startswith("http://127.0.0.1:8080/c/campus/pi-a101/")
    seed = (tmp_path / "state" / "keys" / "ed25519.key").read_bytes()
    token = qrtoken.parse(text)
    assert qrtoken.verify(
        keys.SigningKey(seed).public, "campus", "pi-a101", "a-101", token.slot, token.signature
    )
    assert bundle.read_text() == before, "render must not consume the enrollment code"


@pytest.mark.parametrize(
    "settings,key",
    [
        ("slot_s = 2\n", "slot_s"),
        ('display_sinks = ["hdmi"]\n', "display_sinks"),
        ("foo = 1\n", "foo"),
        ("slot_s = [\n", "invalid TOML"),
    ],
)
def test_bad_settings_are_one_line(tmp_path: pathlib.Path, settings: str, key: str) -> None:
    bundle = write_bundle(tmp_path / "bundle.toml")
    (tmp_path / "s.toml").write_text(settings)
    done = agent(
        "run",
        "--config",
        str(bundle),
        "--state-dir",
        str(tmp_path / "st"),
        "--settings",
        str(tmp_path / "s.toml"),
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert key in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "bundle_fields,settings_env,key",
    [
        ({}, {"ROOMPROOF_EDGE_SLOT_S": "1"}, "slot_s"),
        ({"enrollment_code": None}, {}, "enrollment_code"),
        ({"central_ed25519": "abc"}, {}, "central_ed25519"),
        ({"site": "Bad Site"}, {}, "site"),
        ({"mqtt_url": "http://x"}, {}, "mqtt_url"),
        ({"enrollment_expires": "2020-01-01T00:00:00Z"}, {}, "enrollment_expires"),
    ],
)
def test_bad_bundle_or_environment(
    tmp_path: pathlib.Path,
    bundle_fields: dict[str, str | None],
    settings_env: dict[str, str],
    key: str,
) -> None:
    bundle = write_bundle(tmp_path / "bundle.toml", **bundle_fields)
    done = agent(
        "run", "--config", str(bundle), "--state-dir", str(tmp_path / "st"), env=settings_env
    )
    assert done.returncode == 2, done.stderr
    assert key in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_missing_files(tmp_path: pathlib.Path) -> None:
    done = agent("run", "--config", str(tmp_path / "nope.toml"), "--state-dir", str(tmp_path))
    assert done.returncode == 2 and "file not found" in done.stderr
    bundle = write_bundle(tmp_path / "bundle.toml")
    done = agent(
        "run",
        "--config",
        str(bundle),
        "--state-dir",
        str(tmp_path / "st"),
        "--settings",
        str(tmp_path / "missing.toml"),
    )
    assert done.returncode == 2 and "missing.toml: file not found" in done.stderr
