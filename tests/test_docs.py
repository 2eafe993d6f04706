"""The README documents every setting the code accepts (docs that match the code)."""

from __future__ import annotations

import pathlib

import pydantic_settings
import pytest

from central import settings as central_settings
from edge_agent import settings as agent_settings

README = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize(
    "settings_cls", [central_settings.CentralSettings, agent_settings.AgentSettings]
)
def test_every_setting_is_documented(settings_cls: type[pydantic_settings.BaseSettings]) -> None:
    missing = [name for name in settings_cls.model_fields if f"`{name}`" not in README]
    assert not missing, f"README lacks {missing}"
