"""The agent's TLS to the broker: with a CA in the bundle, that CA and no other is trusted."""

from __future__ import annotations

import pathlib
import ssl

from edge_agent import bundle as bundle_mod
from edge_agent import mqttlink
from tests import system
from tests import tls


def test_bundle_ca_is_pinned(tmp_path: pathlib.Path) -> None:
    certs = tls.make(tmp_path / "certs")
    central = system.Central(tmp_path / "central", "mqtts://broker.example.edu:8883")
    with central.config.open("a") as config:
        config.write(f'mqtt_ca = "{certs.ca}"\n')
    bundle_path = tmp_path / "bundle.toml"
    central.provision(bundle_path)
    bundle = bundle_mod.load(bundle_path)
    state = tmp_path / "state"
    state.mkdir()
    context = mqttlink.tls_context_for(bundle, state)
    trusted = context.get_ca_certs()
    assert len(trusted) == 1, "only the bundle's CA may be trusted"
    assert trusted[0]["subject"] == ((("commonName", "roomproof test CA"),),)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
