"""Slot arithmetic: the QR token changes each slot of `slot_s` seconds of the device's clock."""

from __future__ import annotations


def slot_of(unix_ms: int, slot_s: int) -> int:
    return unix_ms // (slot_s * 1000)


def slot_start_ms(slot: int, slot_s: int) -> int:
    return slot * slot_s * 1000


def slot_end_ms(slot: int, slot_s: int) -> int:
    return (slot + 1) * slot_s * 1000
