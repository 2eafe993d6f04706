"""`python -m central` commands as an installer runs them: provisioning, bundles, bad config."""

from __future__ import annotations

import contextlib
import json
import pathlib
import sqlite3
import stat
import subprocess
import sys
import tomllib

import pytest

from edge_agent.protocol import b64


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "central", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture()
def config(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "central.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\npublic_url = "https://attend.example.edu"\n'
        'mqtt_url = "mqtts://broker.example.edu:8883"\n'
    )
    return path


def test_provisioning_writes_a_bundle(config: pathlib.Path, tmp_path: pathlib.Path) -> None:
    assert run("site", "add", "--site", "campus", "--config", str(config)).returncode == 0
    done = run(
        "room",
        "add",
        "--site",
        "campus",
        "--room",
        "a-101",
        "--name",
        "Hall A",
        "--lat",
        "48.1",
        "--lon",
        "11.5",
        "--config",
        str(config),
    )
    assert done.returncode == 0, done.stderr
    bundle = tmp_path / "pi.toml"
    done = run(
        "device",
        "add",
        "--site",
        "campus",
        "--room",
        "a-101",
        "--device",
        "pi-1",
        "--bundle",
        str(bundle),
        "--config",
        str(config),
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    data = tomllib.loads(bundle.read_text())
    assert (data["site"], data["room"], data["device"], data["room_name"]) == (
        "campus",
        "a-101",
        "pi-1",
        "Hall A",
    )
    assert data["public_url"] == "https://attend.example.edu"
    assert data["mqtt_url"] == "mqtts://broker.example.edu:8883"
    assert len(b64.decode(data["enrollment_code"])) == 32
    assert len(b64.decode(data["central_ed25519"])) == 32
    assert (tmp_path / "data" / "central-ed25519.key").stat().st_mode & 0o077 == 0

    again = run(
        "device",
        "add",
        "--site",
        "campus",
        "--room",
        "a-101",
        "--device",
        "pi-1",
        "--bundle",
        str(tmp_path / "again.toml"),
        "--config",
        str(config),
    )
    assert again.returncode == 1 and again.stderr.startswith("error: already exists")
    missing = run(
        "device",
        "add",
        "--site",
        "campus",
        "--room",
        "b-9",
        "--device",
        "pi-2",
        "--bundle",
        str(tmp_path / "x.toml"),
        "--config",
        str(config),
    )
    assert missing.returncode == 1 and "does not exist" in missing.stderr

    shown = run("room", "profile", "--site", "campus", "--room", "a-101", "--config", str(config))
    assert shown.returncode == 0 and "no profile yet" in shown.stdout
    early = run(
        "room",
        "profile",
        "--site",
        "campus",
        "--room",
        "a-101",
        "--confirm",
        "--config",
        str(config),
    )
    assert early.returncode == 1 and "still learning (0/10 proofs)" in early.stderr
    relearn = run(
        "room",
        "profile",
        "--site",
        "campus",
        "--room",
        "a-101",
        "--relearn",
        "--learn-proofs",
        "5",
        "--config",
        str(config),
    )
    assert relearn.returncode == 0 and "learning (0/5 proofs)" in relearn.stdout
    room_args = ("--site", "campus", "--room", "a-101", "--config", str(config))
    edited = run(
        "room",
        "profile",
        *room_args,
        "--confirm",
        "--wifi",
        "00:11:22:33:44:55",
        "--ble",
        "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2",
    )
    assert edited.returncode == 0, edited.stderr
    assert "confirmed" in edited.stdout and "wifi 00:11:22:33:44:55" in edited.stdout
    bad_bssid = run("room", "profile", *room_args, "--confirm", "--wifi", "not-a-bssid")
    assert bad_bssid.returncode == 1 and "wifi: not valid: not-a-bssid" in bad_bssid.stderr
    moved = run("room", "set", *room_args, "--lat", "52.52", "--lon", "13.405", "--radius-m", "80")
    assert moved.returncode == 0 and "radius 80 m" in moved.stdout
    half = run("room", "set", *room_args, "--lat", "52.52")
    assert half.returncode == 1 and "both --lat and --lon" in half.stderr
    done = run(
        "student",
        "add",
        "--site",
        "campus",
        "--student-id",
        "s1",
        "--pin",
        "123456",
        "--config",
        str(config),
    )
    assert done.returncode == 0, done.stderr
    who = ("--site", "campus", "--student-id", "s1", "--config", str(config))
    exported = run("student", "export", *who)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["student_id"] == "s1"
    refused = run("student", "erase", *who)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    erased = run("student", "erase", *who, "--yes")
    assert erased.returncode == 0 and "1 students" in erased.stdout
    gone = run("student", "export", *who)
    assert gone.returncode == 1 and "no student campus/s1" in gone.stderr
    token = run(
        "token",
        "create",
        "--role",
        "auditor",
        "--site",
        "campus",
        "--name",
        "grafana",
        "--config",
        str(config),
    )
    assert token.returncode == 0 and token.stdout.strip().startswith("rp_")
    no_course = run(
        "token", "create", "--role", "teacher", "--site", "campus", "--config", str(config)
    )
    assert no_course.returncode == 1 and "needs at least one --course" in no_course.stderr
    unknown = run(
        "token",
        "create",
        "--role",
        "teacher",
        "--site",
        "campus",
        "--course",
        "campus/law",
        "--config",
        str(config),
    )
    assert unknown.returncode == 1 and "course campus/law does not exist" in unknown.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "central.db")) as raw:
        raw.execute("INSERT INTO courses VALUES ('campus', 'law', 'Law', 'UTC')")
        raw.commit()
    teacher = run(
        "token",
        "create",
        "--role",
        "teacher",
        "--site",
        "campus",
        "--course",
        "law",
        "--config",
        str(config),
    )
    assert teacher.returncode == 0, teacher.stderr
    listed = run("token", "list", "--config", str(config))
    assert "teacher" in listed.stdout and "[campus/law]" in listed.stdout
    assert listed.returncode == 0 and "auditor" in listed.stdout and "grafana" in listed.stdout
    token_id = next(line for line in listed.stdout.splitlines() if "grafana" in line).split()[0]
    assert token.stdout.strip() not in listed.stdout
    revoked = run("token", "revoke", token_id, "--config", str(config))
    assert revoked.returncode == 0 and f"token {token_id} revoked" in revoked.stdout
    again = run("token", "revoke", token_id, "--config", str(config))
    assert again.returncode == 1 and "no token with id" in again.stderr
    assert token.stdout.strip() not in (tmp_path / "data" / "central.db").read_bytes().decode(
        "latin-1"
    )


@pytest.mark.parametrize(
    "content,key",
    [
        ("http_port = 99999\n", "http_port"),
        ('public_url = "ftp://x"\n', "public_url"),
        ('mqtt_url = "http://broker"\n', "mqtt_url"),
        ("surprise = 1\n", "surprise"),
        ("this is not toml\n", "invalid TOML"),
    ],
)
def test_bad_config_is_one_line(tmp_path: pathlib.Path, content: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    done = run("serve", "--config", str(path))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {path}")
    assert key in done.stderr and "Traceback" not in done.stderr


def test_missing_config_and_bad_names(tmp_path: pathlib.Path) -> None:
    done = run("serve", "--config", str(tmp_path / "nope.toml"))
    assert done.returncode == 2 and "file not found" in done.stderr
    done = run("site", "add", "--site", "Bad Site", "--config", str(tmp_path / "nope.toml"))
    assert done.returncode == 2 and "not a valid name" in done.stderr
