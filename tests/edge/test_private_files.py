"""Issue 13 F12 on the device: in a state dir left 0755, the keys and the outbox database with
its -wal and -shm are 0600 whatever the umask, and the agent warns about the directory."""

from __future__ import annotations

import logging
import os
import pathlib
import typing

import pytest

from edge_agent import keystore
from edge_agent import outbox


@pytest.fixture()
def shared_umask() -> typing.Iterator[None]:
    """The usual umask (files 0644 unless asked otherwise), whatever the test runner's is."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _modes(directory: pathlib.Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir() if p.is_file()}


def test_outbox_and_keys_are_0600_in_a_0755_state_dir(
    tmp_path: pathlib.Path, shared_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o755)
    with caplog.at_level(logging.WARNING):
        keystore.load(state)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("open to other users" in w and "chmod 700" in w for w in warnings), warnings
    box = outbox.Outbox(state / "outbox.db")
    try:
        box.append_proof("t/proof", 1, 1000, lambda seq, prev: f"proof-{seq}")
        box.put(outbox.TELEMETRY, "t/telemetry", b"{}")
        files = _modes(state)
    finally:
        box.close()
    assert {"outbox.db", "outbox.db-wal", "outbox.db-shm"} <= set(files)
    assert files == dict.fromkeys(files, 0o600), files
    keys = _modes(state / "keys")
    assert set(keys) == {"ed25519.key", "x25519.key"} and set(keys.values()) == {0o600}


def test_a_private_state_dir_gets_no_warning(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        keystore.load(tmp_path / "state")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
