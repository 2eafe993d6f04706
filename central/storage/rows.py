"""Rows to the dataclasses of `central.storage.store`, by column name: a query selects exactly the
dataclass's fields (`select`), so adding a field is adding a column, not counting positions."""

from __future__ import annotations

import dataclasses
import typing

import sqlalchemy as sa

from central.domain import environment
from central.domain import timetable
from central.storage import store


def select(cls: type[typing.Any], table: sa.Table, **columns: str) -> sa.Select[typing.Any]:
    """SELECT of the table's columns named like `cls`'s fields (`columns` maps a field to a
    column of another name)."""
    return sa.select(
        *(
            table.c[columns[f.name]].label(f.name) if f.name in columns else table.c[f.name]
            for f in dataclasses.fields(cls)
        )
    )


# A row of Connection.execute, or a dict by column name from the hot path (prepared.py).
Row = sa.Row[typing.Any] | typing.Mapping[str, typing.Any]


def _fields(row: Row) -> dict[str, typing.Any]:
    return dict(row._mapping) if isinstance(row, sa.Row) else dict(row)


def room(row: Row) -> store.Room:
    return store.Room(**_fields(row))


def device(row: Row) -> store.Device:
    return store.Device(**_fields(row))


def key(row: Row) -> store.DeviceKey:
    return store.DeviceKey(**_fields(row))


def proof(row: Row) -> store.ProofRow:
    fields = _fields(row)
    fields["reasons"] = tuple(fields["reasons"] or ())
    return store.ProofRow(**fields)


def chain_event(row: Row) -> store.ChainEvent:
    return store.ChainEvent(**_fields(row))


def alert(row: Row) -> store.Alert:
    return store.Alert(**_fields(row))


def student(row: Row) -> store.Student:
    return store.Student(**_fields(row))


def checkin(row: Row) -> store.Checkin:
    fields = _fields(row)
    fields["flags"] = tuple(fields["flags"])
    return store.Checkin(**fields)


def course(row: Row) -> store.Course:
    return store.Course(**_fields(row))


def session(row: Row) -> timetable.Session:
    return timetable.Session(**_fields(row))


def override(row: Row) -> store.Override:
    return store.Override(**_fields(row))


def link(row: Row) -> store.VerifyLink:
    return store.VerifyLink(**_fields(row))


def audit_entry(row: Row) -> store.AuditEntry:
    return store.AuditEntry(**_fields(row))


def webhook(row: Row) -> store.Webhook:
    fields = _fields(row)
    fields["events"] = tuple(fields["events"])
    return store.Webhook(**fields)


def delivery(row: Row) -> store.WebhookDelivery:
    return store.WebhookDelivery(**_fields(row))


def profile(row: Row) -> environment.Profile:
    fields = _fields(row)
    fields["wifi"] = frozenset(fields["wifi"])
    fields["ble"] = frozenset(fields["ble"])
    return environment.Profile(**fields)
