"""What comes from the rooms: the MQTT bridge, proof verification, enrollment and key changes,
commands to devices and the broker's dynamic-security accounts.

May import: central.storage, central.core, central.domain (not central.checkin)."""
