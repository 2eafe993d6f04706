"""Fuzzing setup: hypothesis profiles, the shared corpora, and the central fixtures.

`default` is what every test run uses: deterministic (a failure reproduces on the next run and
on every machine) and small enough for the 2-core CI box. `nightly` draws fresh random inputs
in volume; select it with HYPOTHESIS_PROFILE=nightly (docs/fuzzing.md).
"""

from __future__ import annotations

import os
import pathlib

import hypothesis
import pytest

from tests import conftest as root_conftest
from tests.central.conftest import central  # noqa: F401
from tests.central.conftest import central_overrides  # noqa: F401
from tests.central.conftest import clock  # noqa: F401
from tests.central.conftest import enrolled  # noqa: F401

hypothesis.settings.register_profile(
    "default",
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
)
hypothesis.settings.register_profile(
    "nightly",
    max_examples=20_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
hypothesis.settings.load_profile(PROFILE)
NIGHTLY = PROFILE == "nightly"


def scaled(examples: int) -> int:
    """Examples for a costly property: `examples` by default, a tenth of nightly's volume."""
    return max(examples, hypothesis.settings.default.max_examples // 10) if NIGHTLY else examples


def corpus(*parts: str) -> pathlib.Path:
    """A path in ../shared/data; the calling test skips with a reason when it is absent."""
    path = root_conftest.SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"recorded corpus {path} not found (set ROOMPROOF_SHARED_DATA)")
    return path
