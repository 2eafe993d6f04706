"""Key rotation and re-enrollment on command, with the real agent and central processes.

The agent rotates its keys while proofs wait in its outbox (central's broker session is gone,
so the broker answers "no matching subscribers" and the agent keeps them); central gets them
all, old key below the switch and new key from it, in one chain. Re-enrollment moves the
device to another room with new keys; its code crosses the broker only sealed.
"""

from __future__ import annotations

import itertools
import pathlib
import signal
import sqlite3
import subprocess
import time
import typing

import pytest

from edge_agent import keystore
from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import command
from edge_agent.protocol import jws
from edge_agent.protocol import keychange
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from tests import broker as broker_mod
from tests import system

SLOT_S = 5
SITE, DEVICE = "campus", "pi-a101"


@pytest.fixture()
def room(
    tmp_path: pathlib.Path, own_broker: broker_mod.Broker
) -> typing.Iterator[dict[str, typing.Any]]:
    central = system.Central(tmp_path / "central", own_broker.url)
    bundle = tmp_path / "bundle.toml"
    token = central.provision(bundle)
    agent = system.Agent(
        tmp_path / "agent",
        bundle,
        f"slot_s = {SLOT_S}\nrequire_trusted_time = false\nenroll_retry_s = 2\n",
    )
    central.start()
    agent.start()
    try:
        yield {
            "central": central,
            "agent": agent,
            "broker": own_broker,
            "admin": system.Http(central.url, token),
        }
    finally:
        if agent.process is not None:
            agent.stop(signal.SIGKILL)
        central.stop()


def stored(admin: system.Http) -> list[dict[str, typing.Any]]:
    status, body, _ = admin.request("GET", f"/api/v1/proofs?site={SITE}&device={DEVICE}&limit=1000")
    assert status == 200, body
    return sorted(body["proofs"], key=lambda row: row["seq"])


def key_history(admin: system.Http) -> list[dict[str, typing.Any]]:
    status, body, _ = admin.request("GET", f"/api/v1/devices/{SITE}/{DEVICE}/keys")
    assert status == 200, body
    return typing.cast(list[dict[str, typing.Any]], body["keys"])


def rejections(admin: system.Http) -> dict[str, int]:
    status, body, _ = admin.request("GET", "/api/v1/rejections")
    assert status == 200, body
    return typing.cast(dict[str, int], body["counts"])


def queued_proofs(agent: system.Agent) -> int:
    with sqlite3.connect(f"file:{agent.state / 'outbox.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM items WHERE kind = 'proof'").fetchone()[0])


def made_seq(agent: system.Agent) -> int:
    """The seq of the newest proof the agent made (its outbox's chain state)."""
    with sqlite3.connect(f"file:{agent.state / 'outbox.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT seq FROM chain WHERE id = 1").fetchone()[0])


def signing_key(agent: system.Agent) -> keys.SigningKey:
    return keys.SigningKey((agent.state / "keys" / "ed25519.key").read_bytes())


def assert_one_chain(rows: list[dict[str, typing.Any]], history: list[dict[str, typing.Any]]):
    """Seqs 1..n without a hole, each linked to the one before, each signed by its key."""
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    for before, row in itertools.pairwise(rows):
        assert proof.decode(row["jws"])[1].prev == chain.link(before["jws"])
    for row in rows:
        epoch = [k for k in history if k["from_seq"] <= row["seq"]][-1]
        assert jws.verify(proof.decode(row["jws"])[0], b64.decode(epoch["public_key"]))


def forged_proof(key: keys.SigningKey, seq: int, room: str) -> str:
    iat = int(time.time() * 1000)
    slot = iat // 1000 // SLOT_S
    claims = proof.Claims.model_validate(
        {
            "site": SITE,
            "room": room,
            "device": DEVICE,
            "seq": seq,
            "boot": "0123456789abcdef",
            "iat": iat,
            "clock": {"source": "ntp", "uncertainty_ms": 10},
            "slot": slot,
            "slot_s": SLOT_S,
            "otp_step_s": 30,
            "qr": b64.encode(qrtoken.sign(key, SITE, DEVICE, room, slot)),
            "prev": chain.GENESIS,
            "env": {},
        }
    )
    return proof.sign(claims, key)


@pytest.mark.slow
def test_rotation_while_proofs_wait_in_the_outbox(room: dict[str, typing.Any]) -> None:
    central, agent, broker, admin = room["central"], room["agent"], room["broker"], room["admin"]
    system.wait_for(lambda: len(stored(admin)) >= 1, 60, "the first proof at central")
    old = signing_key(agent)

    # Central away and its broker session gone: the agent's proofs stay in its outbox. The
    # agent is paused meanwhile, so that no proof the broker acknowledged is wiped with the
    # broker's store before central got it (what it sent unacknowledged it sends again).
    assert agent.process is not None
    agent.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(1)  # the broker delivers what it accepted; central stores it
        stored_before = len(stored(admin))
        central.stop()
        broker.stop()
        (broker.workdir / "mosquitto.db").unlink(missing_ok=True)
        broker.start()
    finally:
        agent.process.send_signal(signal.SIGCONT)
    # A proof made while central is away (the outbox may also still hold proofs central
    # stored whose ack did not come before it stopped).
    system.wait_for(lambda: made_seq(agent) > stored_before, 40, "a proof queued in the outbox")

    # The result waits behind the queued proofs too, so do not wait for it here.
    done = central.cli("device", "rotate-keys", SITE, DEVICE, "--wait", "0")
    assert "rotate_keys sent" in done.stdout, done.stdout + done.stderr
    system.wait_for(lambda: "keys rotated" in agent.log.read_text(), 30, "the rotation")
    new = signing_key(agent)
    assert new.public != old.public
    queued = queued_proofs(agent)
    system.wait_for(lambda: queued_proofs(agent) > queued, 30, "a proof under the new key")

    central.start()
    history = system.wait_for(
        lambda: (h := key_history(admin)) and len(h) == 2 and h, 30, "the key change at central"
    )
    switch = history[1]["from_seq"]
    assert [(k["kind"], k["current"]) for k in history] == [("enroll", False), ("rotate", True)]
    assert history[1]["public_key"] == b64.encode(new.public)
    rows = system.wait_for(
        lambda: (r := stored(admin)) and r[-1]["seq"] > switch and r, 40, "the queued proofs"
    )
    assert switch >= 3  # proofs from before the outage, then the queued ones, then the new key
    assert_one_chain(rows, history)
    assert jws.verify(proof.decode(rows[switch - 2]["jws"])[0], old.public)
    assert not jws.verify(proof.decode(rows[switch - 1]["jws"])[0], old.public)
    assert not {"bad_signature", "chain_broken", "retired_key"} & set(rejections(admin))

    # The old key signs nothing from the switch on; forged and replayed key changes fail.
    topic = f"roomproof/v1/{SITE}/{DEVICE}"
    broker.publish_raw(f"{topic}/proof", forged_proof(old, rows[-1]["seq"] + 1000, "a-101"))
    stranger = keys.SigningKey.generate()
    forged = keychange.sign(
        stranger, keys.SigningKey.generate(), bytes(32), SITE, "a-101", DEVICE, 10_000, 1
    )
    broker.publish_raw(f"{topic}/enroll", forged)
    broker.publish_raw(f"{topic}/enroll", history[1]["evidence"])
    expected = {"retired_key", "key_change_bad_signature", "key_change_replay"}
    system.wait_for(lambda: expected <= set(rejections(admin)), 20, "the three refusals")
    assert len(key_history(admin)) == 2


@pytest.mark.slow
def test_a_staged_rotation_is_finished_after_a_crash(room: dict[str, typing.Any]) -> None:
    """SIGKILL after the new keys were staged and their key change queued, before the key
    files were replaced: the next start finishes (queueing the change again, which central
    refuses as a replay, harmlessly) and signs with the new keys; central agrees."""
    agent, admin = room["agent"], room["admin"]
    system.wait_for(lambda: len(stored(admin)) >= 1, 60, "the first proof at central")
    agent.stop(signal.SIGKILL)
    old = signing_key(agent)
    new = keystore.generate()
    with sqlite3.connect(agent.state / "outbox.db") as db:
        (seq,) = db.execute("SELECT seq FROM chain WHERE id = 1").fetchone()
    message = keychange.sign(
        old, new.signing, new.agreement.public, SITE, "a-101", DEVICE, seq + 1, 1
    )
    intent = {"kind": "rotate", "from_seq": seq + 1, "message": message}
    keystore.stage(agent.state, new, intent)
    with sqlite3.connect(agent.state / "outbox.db") as db:
        db.execute(
            "INSERT INTO items (kind, topic, payload, created_ms) VALUES ('proof', ?, ?, 0)",
            (f"roomproof/v1/{SITE}/{DEVICE}/enroll", message.encode()),
        )
    assert signing_key(agent).public == old.public
    agent.start()
    history = system.wait_for(
        lambda: (h := key_history(admin)) and len(h) == 2 and h, 40, "the staged key at central"
    )
    assert history[1]["from_seq"] == seq + 1
    assert signing_key(agent).public == new.signing.public
    assert not (agent.state / "keys" / keystore.STAGED).exists()
    rows = system.wait_for(
        lambda: (r := stored(admin)) and r[-1]["seq"] > seq + 1 and r, 30, "new-key proofs"
    )
    assert_one_chain(rows, history)
    assert "finishing a staged key change" in agent.log.read_text()
    counts = system.wait_for(
        lambda: (c := rejections(admin)).get("key_change_replay") and c, 20, "the repeat"
    )
    assert counts["key_change_replay"] == 1
    assert not {"bad_signature", "chain_broken", "retired_key"} & set(counts)


@pytest.mark.slow
def test_re_enroll_moves_the_device_with_a_sealed_code(
    room: dict[str, typing.Any], tmp_path: pathlib.Path
) -> None:
    central, agent, broker, admin = room["central"], room["agent"], room["broker"], room["admin"]
    system.wait_for(lambda: len(stored(admin)) >= 1, 60, "the first proof at central")
    central.cli("room", "add", "--site", SITE, "--room", "b-202")
    old = signing_key(agent)
    old_agreement = keys.AgreementKey((agent.state / "keys" / "x25519.key").read_bytes())
    wire = tmp_path / "wire.txt"
    with wire.open("w") as out:
        sniffer = subprocess.Popen(
            [
                "mosquitto_sub",
                "-p",
                str(broker.port),
                "-t",
                f"roomproof/v1/{SITE}/{DEVICE}/#",
                "-F",
                "%t %x",
                "-q",
                "1",
            ],
            stdout=out,
        )
    try:
        time.sleep(0.5)
        done = central.cli("device", "re-enroll", SITE, DEVICE, "--room", "b-202", "--wait", "40")
        assert "device reported: applied" in done.stdout, done.stdout + done.stderr
        new = signing_key(agent)
        rows = system.wait_for(
            lambda: (r := stored(admin)) and proof.decode(r[-1]["jws"])[1].room == "b-202" and r,
            30,
            "a proof from the new room",
        )
    finally:
        sniffer.terminate()
        sniffer.wait(timeout=10)

    history = key_history(admin)
    assert [(k["kind"], k["room"], k["current"]) for k in history] == [
        ("enroll", "a-101", False),
        ("re_enroll", "b-202", True),
    ]
    assert history[1]["public_key"] == b64.encode(new.public) != b64.encode(old.public)
    status, body, _ = admin.request("GET", "/api/v1/devices")
    assert status == 200, body
    (device,) = [d for d in body["devices"] if d["device"] == DEVICE]
    assert device["room"] == "b-202" and device["public_key"] == b64.encode(new.public)
    assert_one_chain(rows, history)

    # The code crossed the broker only sealed to the old X25519 key.
    captured = [line.split(" ", 1) for line in wire.read_text().splitlines() if " " in line]
    (sealed_command,) = [
        bytes.fromhex(payload)
        for topic, payload in captured
        if topic.endswith("/cmd") and b"re_enroll" in _jws_payload(bytes.fromhex(payload))
    ]
    found = command.verify(
        sealed_command, b64.decode(_central_key(admin)), SITE, DEVICE, int(time.time() * 1000)
    )
    code = command.open_code(old_agreement, found.args["code"])
    raw_code = b64.decode(code)
    for _, payload in captured:
        data = bytes.fromhex(payload)
        assert raw_code not in data and code.encode() not in data
        assert raw_code.hex().encode() not in data
        assert code.encode() not in _jws_payload(data) and raw_code not in _jws_payload(data)

    # Proofs signed with the old key are refused from the switch on.
    broker.publish_raw(
        f"roomproof/v1/{SITE}/{DEVICE}/proof",
        forged_proof(old, rows[-1]["seq"] + 500, "b-202"),
    )
    system.wait_for(lambda: "retired_key" in rejections(admin), 20, "the old key refused")


def _jws_payload(data: bytes) -> bytes:
    parts = data.split(b".")
    try:
        return b64.decode(parts[1].decode("ascii")) if len(parts) == 3 else b""
    except ValueError:
        return b""


def _central_key(admin: system.Http) -> str:
    status, body, _ = admin.request("GET", "/api/v1/keys")
    assert status == 200, body
    return str(body["ed25519"])
