"""The docs (README.md and docs/*.md) document every setting the code accepts."""

from __future__ import annotations

import pathlib

import pydantic_settings
import pytest

from central.core import settings as central_settings
from edge_agent import settings as agent_settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


@pytest.mark.parametrize(
    "settings_cls", [central_settings.CentralSettings, agent_settings.AgentSettings]
)
def test_every_setting_is_documented(settings_cls: type[pydantic_settings.BaseSettings]) -> None:
    missing = [name for name in settings_cls.model_fields if f"`{name}`" not in DOCS]
    assert not missing, f"the docs lack {missing}"
