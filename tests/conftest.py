"""Shared fixtures: a private Mosquitto per session, the recorded corpora in ../shared/data."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest

from tests import broker as broker_mod

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = pathlib.Path(os.environ.get("ROOMPROOF_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The recorded public data; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"recorded corpus not found at {SHARED_DATA} (set ROOMPROOF_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[broker_mod.Broker]:
    """A private Mosquitto for the whole test session (never the system one on 1883)."""
    if not broker_mod.mosquitto_available():
        pytest.fail("mosquitto is not installed: run .ci/setup (apt-get install mosquitto)")
    with broker_mod.Broker(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


@pytest.fixture()
def own_broker(tmp_path: pathlib.Path) -> Iterator[broker_mod.Broker]:
    """A broker of the test's own, for tests that stop and restart it."""
    with broker_mod.Broker(tmp_path / "mosquitto") as running:
        yield running
