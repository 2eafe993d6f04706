"""`python -m central ...`: serve, provisioning commands, the demo."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import secrets
import sys
import time
import typing

import aiomqtt

from central.admin import privacy
from central.admin import profiles
from central.admin import status
from central.checkin import students
from central.cli import backup_cmd
from central.cli import reports_cmd
from central.cli import verify_cmd
from central.core import keyring
from central.core import settings as settings_mod
from central.http import audit
from central.http import auth
from central.ingest import devicecmd
from central.ingest import dynsec
from central.storage import database
from central.storage import store
from central.storage import stores
from edge_agent import logsetup
from edge_agent import tomlsettings
from edge_agent.protocol import b64
from edge_agent.protocol import command
from edge_agent.protocol import names


class CommandError(Exception):
    """A command that cannot be carried out; the message says why (exit code 1)."""


def _name(kind: str) -> typing.Callable[[str], str]:
    def check(value: str) -> str:
        try:
            return names.validate(kind, value)
        except names.NameError_ as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return check


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m central", description="roomproof central")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=pathlib.Path, help=f"TOML settings (or ${settings_mod.CONFIG_ENV})"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", parents=[common], help="run the service")
    commands.add_parser("demo", help="a whole room on this machine", add_help=False)
    commands.add_parser(
        "verify", help="verify a check-in's evidence bundle offline", add_help=False
    )

    site = commands.add_parser("site", help="sites").add_subparsers(dest="action", required=True)
    add = site.add_parser("add", parents=[common])
    add.add_argument("--site", type=_name("site"), required=True)
    add.add_argument("--name")

    room = commands.add_parser("room", help="rooms").add_subparsers(dest="action", required=True)
    add = room.add_parser("add", parents=[common])
    add.add_argument("--site", type=_name("site"), required=True)
    add.add_argument("--room", type=_name("room"), required=True)
    add.add_argument("--name")
    add.add_argument("--lat", type=float)
    add.add_argument("--lon", type=float)
    add.add_argument("--radius-m", type=float, default=50.0)
    prof = room.add_parser("profile", parents=[common], help="show, confirm or relearn a profile")
    prof.add_argument("--site", type=_name("site"), required=True)
    prof.add_argument("--room", type=_name("room"), required=True)
    what = prof.add_mutually_exclusive_group()
    what.add_argument("--confirm", action="store_true", help="confirm the learned profile")
    what.add_argument("--relearn", action="store_true", help="learn again from the next proofs")
    prof.add_argument("--learn-proofs", type=int, default=10)
    prof.add_argument(
        "--wifi", nargs="*", metavar="BSSID", help="with --confirm: the room's access points"
    )
    prof.add_argument(
        "--ble", nargs="*", metavar="KIND:ID", help="with --confirm: the room's beacons"
    )
    change = room.add_parser("set", parents=[common], help="change a room's geofence")
    change.add_argument("--site", type=_name("site"), required=True)
    change.add_argument("--room", type=_name("room"), required=True)
    change.add_argument("--lat", type=float)
    change.add_argument("--lon", type=float)
    change.add_argument("--radius-m", type=float)

    device = commands.add_parser("device", help="devices").add_subparsers(
        dest="action", required=True
    )
    add = device.add_parser("add", parents=[common])
    add.add_argument("--site", type=_name("site"), required=True)
    add.add_argument("--room", type=_name("room"), required=True)
    add.add_argument("--device", type=_name("device"), required=True)
    add.add_argument(
        "--bundle", type=pathlib.Path, required=True, help="enrollment bundle to write"
    )
    revoke = device.add_parser(
        "revoke", parents=[common], help="forget a device's keys (and disable its broker account)"
    )
    revoke.add_argument("--site", type=_name("site"), required=True)
    revoke.add_argument("--device", type=_name("device"), required=True)
    rotate = device.add_parser(
        "rotate-keys", parents=[common], help="have a device make and announce new keys"
    )
    reenroll = device.add_parser(
        "re-enroll", parents=[common], help="re-bind a device with new keys (optionally elsewhere)"
    )
    reenroll.add_argument(
        "--room", type=_name("room"), help="bind it to this room (default: its own)"
    )
    for sub in (rotate, reenroll):
        sub.add_argument("site", type=_name("site"))
        sub.add_argument("device", type=_name("device"))
        sub.add_argument("--ttl-s", type=int, default=3600, help="the command expires after this")
        sub.add_argument(
            "--wait", type=float, default=30.0, help="seconds to wait for the device's result"
        )

    student = commands.add_parser("student", help="students").add_subparsers(
        dest="action", required=True
    )
    add = student.add_parser("add", parents=[common])
    set_pin = student.add_parser(
        "set-pin",
        parents=[common],
        help="reset a student's PIN (revokes the student's remembered browsers)",
    )
    for with_pin in (add, set_pin):
        with_pin.add_argument("--site", type=_name("site"), required=True)
        with_pin.add_argument("--student-id", type=_name("student id"), required=True)
        pin = with_pin.add_mutually_exclusive_group(required=True)
        pin.add_argument("--pin", help="at least pin_min_length (6) characters")
        pin.add_argument(
            "--pin-stdin", action="store_true", help="read the PIN from standard input"
        )
    export = student.add_parser("export", parents=[common], help="everything about a student")
    export.add_argument("--site", type=_name("site"), required=True)
    export.add_argument("--student-id", type=_name("student id"), required=True)
    export.add_argument("--out", type=pathlib.Path, help="JSON file (default: standard output)")
    erase = student.add_parser("erase", parents=[common], help="forget a student entirely")
    erase.add_argument("--site", type=_name("site"), required=True)
    erase.add_argument("--student-id", type=_name("student id"), required=True)
    erase.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")

    token = commands.add_parser("token", help="admin API tokens").add_subparsers(
        dest="action", required=True
    )
    commands.add_parser("status", parents=[common], help="one screen: what is healthy, what not")
    add = token.add_parser(
        "create",
        parents=[common],
        help="admin, teacher and auditor tokens act in one --site; operators in --all-sites",
    )
    add.add_argument("--role", choices=auth.ROLES, required=True)
    add.add_argument("--name", default="")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument("--site", type=_name("site"), help="the one site the token acts in")
    where.add_argument(
        "--all-sites", action="store_true", help="operators only: the token spans every site"
    )
    add.add_argument(
        "--course",
        action="append",
        default=[],
        metavar="COURSE",
        help="teachers: a course of --site the token is limited to (COURSE or SITE/COURSE;"
        " repeat for several)",
    )
    token.add_parser(
        "list", parents=[common], help="ids, roles, sites and names (never the secrets)"
    )
    migrate = token.add_parser(
        "migrate",
        parents=[common],
        help="give tokens from before sites were sealed a site (or make admins operators)",
    )
    target = migrate.add_mutually_exclusive_group()
    target.add_argument("--site", type=_name("site"), help="assign them to this site")
    target.add_argument(
        "--operator", action="store_true", help="make the admin tokens among them operators"
    )
    migrate.add_argument(
        "--id", action="append", default=[], help="only this token (repeat; default: all)"
    )
    revoke = token.add_parser("revoke", parents=[common], help="revoke a token by its id")
    revoke.add_argument("id", help="the 12-character id that `token list` shows")
    reports_cmd.add_parsers(commands, common)
    backup_cmd.add_parsers(commands, common)
    return parser


def _toml(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value)


async def _with_store(
    settings: settings_mod.CentralSettings,
    action: typing.Callable[[database.Database], typing.Awaitable[None]],
) -> None:
    keyring.ensure_data_dir(settings.data_dir)
    db = stores.make(settings)
    await db.open()
    try:
        await action(db)
    except store.Conflict as exc:
        raise CommandError(f"already exists ({exc})") from exc
    except store.NotFound as exc:
        raise CommandError(str(exc)) from exc
    finally:
        await db.close()


def _now_ms() -> int:
    return int(time.time() * 1000)


def run_command(args: argparse.Namespace, settings: settings_mod.CentralSettings) -> int:
    """Runs one provisioning command; returns the exit code (errors raise CommandError)."""
    key = (args.command, getattr(args, "action", None))
    if args.command in ("import", "export"):
        return reports_cmd.main(args, settings)
    if args.command in ("backup", "restore"):
        return backup_cmd.main(args, settings)
    if key == ("site", "add"):

        async def add_site(db: database.Database) -> None:
            await db.add_site(args.site, args.name or args.site)
            print(f"site {args.site} added")

        asyncio.run(_with_store(settings, add_site))
    elif key == ("status", None):
        outcome: list[int] = []

        async def show(db: database.Database) -> None:
            result = await status.report(settings, db)
            print(status.render(result))
            outcome.append(1 if result.problems else 0)

        asyncio.run(_with_store(settings, show))
        return outcome[0]
    elif key == ("room", "add"):
        if (args.lat is None) != (args.lon is None):
            raise CommandError("give both --lat and --lon, or neither")
        if args.lat is not None and not (-90 <= args.lat <= 90 and -180 <= args.lon <= 180):
            raise CommandError("--lat must be in [-90, 90] and --lon in [-180, 180]")
        if args.radius_m <= 0:
            raise CommandError("--radius-m must be positive")

        async def add_room(db: database.Database) -> None:
            await db.add_room(
                args.site, args.room, args.name or args.room, args.lat, args.lon, args.radius_m
            )
            print(f"room {args.site}/{args.room} added")

        asyncio.run(_with_store(settings, add_room))
    elif key == ("room", "set"):
        if (args.lat is None) != (args.lon is None):
            raise CommandError("give both --lat and --lon, or neither")
        if args.lat is not None and not (-90 <= args.lat <= 90 and -180 <= args.lon <= 180):
            raise CommandError("--lat must be in [-90, 90] and --lon in [-180, 180]")
        if args.radius_m is not None and args.radius_m <= 0:
            raise CommandError("--radius-m must be positive")

        async def set_room(db: database.Database) -> None:
            room = await db.get_room(args.site, args.room)
            if room is None:
                raise CommandError(f"room {args.site}/{args.room} does not exist")
            lat = args.lat if args.lat is not None else room.lat
            lon = args.lon if args.lon is not None else room.lon
            radius = args.radius_m if args.radius_m is not None else room.radius_m
            await db.update_room(args.site, args.room, lat, lon, radius)
            await audit.cli(
                db, "room_geofence", f"{args.site}/{args.room}", f"{lat} {lon} {radius}", args.site
            )
            print(f"room {args.site}/{args.room}: centre {lat}, {lon}, radius {radius:g} m")

        asyncio.run(_with_store(settings, set_room))
    elif key == ("room", "profile"):

        async def profile(db: database.Database) -> None:
            if (args.wifi is not None or args.ble is not None) and not args.confirm:
                raise CommandError("--wifi and --ble go with --confirm")
            if args.confirm or args.relearn:
                if not 1 <= args.learn_proofs <= 10_000:
                    raise CommandError("--learn-proofs must be 1..10000")
                action = "confirm" if args.confirm else "relearn"
                try:
                    await profiles.apply(
                        db, args.site, args.room, action, args.learn_proofs, args.wifi, args.ble
                    )
                except profiles.ProfileError as exc:
                    raise CommandError(str(exc)) from exc
            current = await db.get_profile(args.site, args.room)
            if current is None:
                print(
                    f"room {args.site}/{args.room}: no profile yet (learns from its first proofs)"
                )
                return
            print(
                f"room {args.site}/{args.room}: {current.state}"
                f" ({current.learned}/{current.learn_target} proofs)"
            )
            for bssid in sorted(current.wifi):
                print(f"  wifi {bssid}")
            for beacon in sorted(current.ble):
                print(f"  ble  {beacon}")

        asyncio.run(_with_store(settings, profile))
    elif key == ("device", "add"):
        _device_add(args, settings)
    elif key == ("device", "revoke"):

        async def revoke_device(db: database.Database) -> None:
            if not await db.revoke_device(args.site, args.device):
                raise CommandError(f"device {args.site}/{args.device} does not exist")
            await audit.cli(db, "device_revoke", f"{args.site}/{args.device}", site=args.site)

        asyncio.run(_with_store(settings, revoke_device))
        if settings.broker_dynsec:
            try:
                asyncio.run(dynsec.run(settings, dynsec.revoke_commands(args.site, args.device)))
            except dynsec.DynsecError as exc:
                raise CommandError(f"device revoked here, but the broker: {exc}") from exc
        print(f"device {args.site}/{args.device} revoked")
    elif key in (("device", "rotate-keys"), ("device", "re-enroll")):
        _device_command(args, settings)
    elif key in (("student", "add"), ("student", "set-pin")):
        pin = sys.stdin.readline().strip() if args.pin_stdin else args.pin
        problem = students.pin_problem(pin or "", settings.pin_min_length)
        if problem:
            raise CommandError(problem)
        pin_hash = students.hash_pin(pin)
        target = f"{args.site}/{args.student_id}"

        async def add_student(db: database.Database) -> None:
            await db.add_student(args.site, args.student_id, pin_hash)
            print(f"student {target} added")

        async def set_student_pin(db: database.Database) -> None:
            if not await db.set_student_pin(args.site, args.student_id, pin_hash):
                raise CommandError(f"student {target} does not exist")
            await audit.cli(
                db, "student_pin_set", target, "remembered browsers revoked", site=args.site
            )
            print(f"PIN of {target} set; the student's remembered browsers are revoked")

        action = add_student if args.action == "add" else set_student_pin
        asyncio.run(_with_store(settings, action))
    elif key == ("student", "export"):

        async def export_student(db: database.Database) -> None:
            try:
                data = await privacy.export(db, args.site, args.student_id)
            except privacy.NoSuchStudent as exc:
                raise CommandError(str(exc)) from exc
            await audit.cli(db, "student_export", f"{args.site}/{args.student_id}", site=args.site)
            text = json.dumps(data, indent=2) + "\n"
            if args.out is None:
                sys.stdout.write(text)
            else:
                args.out.write_text(text)
                print(f"exported {args.site}/{args.student_id} to {args.out}", file=sys.stderr)

        asyncio.run(_with_store(settings, export_student))
    elif key == ("student", "erase"):
        if not args.yes:
            raise CommandError("erasing cannot be undone: add --yes to confirm")

        async def erase_student(db: database.Database) -> None:
            try:
                deleted = await privacy.erase(db, args.site, args.student_id)
            except privacy.NoSuchStudent as exc:
                raise CommandError(str(exc)) from exc
            await audit.cli(
                db, "student_erase", f"{args.site}/{args.student_id}", str(deleted), args.site
            )
            counts = ", ".join(f"{n} {table}" for table, n in deleted.items() if n)
            print(f"erased {args.site}/{args.student_id}: {counts}")

        asyncio.run(_with_store(settings, erase_student))
    elif key == ("token", "list"):

        async def list_tokens(db: database.Database) -> None:
            for item in await db.list_admin_tokens():
                created = datetime.datetime.fromtimestamp(item.created_at / 1000, datetime.UTC)
                courses = f"  [{', '.join(item.courses)}]" if item.courses else ""
                site = _token_site(item)
                print(
                    f"{item.id}  {item.role:<8} {site:<16} {created:%Y-%m-%d %H:%M}"
                    f"  {item.name}{courses}"
                )

        asyncio.run(_with_store(settings, list_tokens))
    elif key == ("token", "revoke"):

        async def revoke_token(db: database.Database) -> None:
            if not await db.revoke_admin_token(args.id):
                raise CommandError(f"no token with id {args.id!r} (see `token list`)")
            await audit.cli(db, "token_revoke", args.id)
            print(f"token {args.id} revoked")

        asyncio.run(_with_store(settings, revoke_token))
    elif key == ("token", "migrate"):
        asyncio.run(_with_store(settings, lambda db: _migrate_tokens(db, args)))
    elif key == ("token", "create"):
        secret = auth.new_token()
        scope = _token_scope(args)

        async def add_token(db: database.Database) -> None:
            if args.site is not None and not await db.site_exists(args.site):
                raise CommandError(f"site {args.site} does not exist")
            for site, course in scope:
                if await db.get_course(site, course) is None:
                    raise CommandError(f"course {site}/{course} does not exist")
            await db.add_admin_token(
                auth.token_hash(secret), args.role, args.name, _now_ms(), tuple(scope), args.site
            )
            token_id = auth.token_hash(secret)[: store.TOKEN_ID_CHARS]
            where = args.site or "all sites"
            await audit.cli(
                db, "token_create", token_id, f"{args.role} {where} {args.name}", args.site
            )

        asyncio.run(_with_store(settings, add_token))
        print(
            f"{args.role} token for {args.site or 'all sites'}"
            " (shown once; only its hash is stored):",
            file=sys.stderr,
        )
        print(secret)
    return 0


def _token_site(token: store.AdminToken) -> str:
    if token.site is not None:
        return token.site
    return "(all sites)" if token.role == auth.OPERATOR else "(none: migrate)"


def _token_scope(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Checks role against --site/--all-sites and returns a teacher's (site, course) pairs."""
    if args.role == auth.OPERATOR and not args.all_sites:
        raise CommandError("an operator token spans every site: give --all-sites, not --site")
    if args.role != auth.OPERATOR and args.all_sites:
        raise CommandError(f"a {args.role} token acts in one site: give --site SITE")
    if args.role == "teacher" and not args.course:
        raise CommandError("a teacher token needs at least one --course COURSE")
    if args.role != "teacher" and args.course:
        raise CommandError("--course limits teacher tokens only")
    scope = []
    for item in args.course:
        site, _, course = item.rpartition("/")
        site = site or args.site
        if not (names.is_valid(site) and names.is_valid(course)):
            raise CommandError(f"--course {item!r}: expected COURSE or SITE/COURSE")
        if site != args.site:
            raise CommandError(f"--course {item!r}: a teacher's courses are of --site {args.site}")
        scope.append((site, course))
    return scope


async def _migrate_tokens(db: database.Database, args: argparse.Namespace) -> None:
    """`token migrate`: tokens from before sites were sealed (no site, not operators) get
    --site, or (--operator) their admin tokens become operators; without either, lists them."""
    unscoped = [
        t
        for t in await db.list_admin_tokens()
        if t.role != auth.OPERATOR and t.site is None and (not args.id or t.id in args.id)
    ]
    missing = sorted(set(args.id) - {t.id for t in unscoped})
    if missing:
        raise CommandError(f"no site-less token with id {', '.join(missing)} (see `token list`)")
    if not unscoped:
        print("every token has a site (or is an operator's): nothing to migrate")
        return
    if args.site is None and not args.operator:
        for item in unscoped:
            print(f"{item.id}  {item.role:<8} {item.name}  [{', '.join(item.courses)}]")
        print(
            f"{len(unscoped)} token(s) without a site: run `token migrate --site SITE`"
            " or `--operator` (admins only), or revoke them",
            file=sys.stderr,
        )
        return
    if args.site is not None:
        if not await db.site_exists(args.site):
            raise CommandError(f"site {args.site} does not exist")
        for item in unscoped:
            elsewhere = [c for c in item.courses if not c.startswith(f"{args.site}/")]
            if elsewhere:
                raise CommandError(
                    f"token {item.id} is limited to courses of another site ({elsewhere[0]}):"
                    " revoke it and create a new one per site"
                )
    else:
        others = [t for t in unscoped if t.role != "admin"]
        if others:
            raise CommandError(
                f"token {others[0].id} is a {others[0].role}'s: --operator makes only admin"
                " tokens operators (give it a --site, or revoke it)"
            )
    for item in unscoped:
        role = auth.OPERATOR if args.operator else item.role
        await db.set_token_site(item.id, role, args.site)
        await audit.cli(
            db, "token_migrate", item.id, f"{role} {args.site or 'all sites'}", args.site
        )
        print(f"token {item.id}: {role} of {args.site or 'all sites'}")


def _device_command(args: argparse.Namespace, settings: settings_mod.CentralSettings) -> None:
    """rotate-keys / re-enroll: signed with central's key, published with a client of our own;
    the device reports the outcome as for any command (re-enroll: once central bound it)."""
    kind = "rotate_keys" if args.action == "rotate-keys" else "re_enroll"
    if not 1 <= args.ttl_s <= 86400:
        raise CommandError("--ttl-s: 1..86400")
    keys = keyring.load(settings.data_dir)
    prepared: list[tuple[str, dict[str, typing.Any]]] = []
    device_key: list[bytes] = []  # the key that signs the device's result

    async def prepare(db: database.Database) -> None:
        found = await db.get_device(args.site, args.device)
        if found is None or found.ed25519 is None:
            raise CommandError(f"no enrolled device {args.site}/{args.device}")
        device_key.append(found.ed25519)
        wanted = {"room": args.room} if kind == "re_enroll" and args.room else {}
        try:
            prepared.append(
                await devicecmd.prepare(
                    db, keys, _now_ms(), args.site, args.device, kind, wanted, args.ttl_s
                )
            )
        except command.CommandError as exc:
            raise CommandError(str(exc)) from exc
        await audit.cli(
            db, f"command_{kind}", f"{args.site}/{args.device}", prepared[0][1]["nonce"], args.site
        )

    asyncio.run(_with_store(settings, prepare))
    signed, sent = prepared[0]
    try:
        result = asyncio.run(
            devicecmd.publish(
                settings, args.site, args.device, signed, sent["nonce"], args.wait, device_key[0]
            )
        )
    except aiomqtt.MqttError as exc:
        raise CommandError(f"broker {settings.mqtt_url}: {exc}") from exc
    print(f"{kind} sent to {args.site}/{args.device} (nonce {sent['nonce']})")
    if result is None:
        if args.wait > 0:
            print(
                f"no result within {args.wait:g} s; the broker keeps the command until it expires"
            )
        return
    reason = f": {result.get('reason')}" if result.get("reason") else ""
    print(f"device reported: {result.get('outcome')}{reason}")
    if result.get("outcome") != "applied":
        raise CommandError(f"the device refused {kind}{reason}")


def _device_add(args: argparse.Namespace, settings: settings_mod.CentralSettings) -> None:
    keys = keyring.load(settings.data_dir)
    code = b64.encode(secrets.token_bytes(32))
    expires = _now_ms() + int(settings.enrollment_ttl_h * 3600 * 1000)
    room_name: list[str] = []

    async def add_device(db: database.Database) -> None:
        room = await db.get_room(args.site, args.room)
        if room is None:
            raise CommandError(f"room {args.site}/{args.room} does not exist; add it first")
        room_name.append(room.name)
        await db.add_device(args.site, args.room, args.device, code, expires)

    ca = None
    if settings.mqtt_ca is not None:
        try:
            ca = settings.mqtt_ca.read_text()
        except OSError as exc:
            raise CommandError(f"mqtt_ca {settings.mqtt_ca}: {exc.strerror}") from exc
    asyncio.run(_with_store(settings, add_device))
    device_username = settings.device_mqtt_username
    device_password = settings.device_mqtt_password
    if settings.broker_dynsec:
        device_username = dynsec.username(args.site, args.device)
        device_password = secrets.token_urlsafe(24)
        try:
            asyncio.run(dynsec.grant_central(settings))
            asyncio.run(
                dynsec.run(
                    settings, dynsec.device_commands(args.site, args.device, device_password)
                )
            )
        except dynsec.DynsecError as exc:
            raise CommandError(f"broker account for {args.site}/{args.device}: {exc}") from exc
    fields: dict[str, object | None] = {
        "site": args.site,
        "room": args.room,
        "room_name": room_name[0],
        "device": args.device,
        "mqtt_url": settings.device_mqtt_url or settings.mqtt_url,
        "mqtt_username": device_username,
        "mqtt_password": device_password,
        "mqtt_ca": ca,
        "public_url": settings.public_base,
        "central_ed25519": b64.encode(keys.signing.public),
        "central_x25519": b64.encode(keys.agreement.public),
        "enrollment_code": code,
        "enrollment_expires": datetime.datetime.fromtimestamp(expires / 1000, datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
    }
    lines = [
        "# roomproof enrollment bundle: copy to the device (e.g. the SD card's boot partition)"
    ]
    lines += [f"{k} = {_toml(v)}" for k, v in fields.items() if v is not None]
    args.bundle.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(args.bundle, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    print(
        f"device {args.site}/{args.device} added; bundle written to {args.bundle}"
        f" (enroll before {fields['enrollment_expires']})"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify"]:
        return verify_cmd.main(argv[1:])
    if argv[:1] == ["demo"]:
        from central.cli import demo

        return demo.main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        settings = settings_mod.load(args.config)
        logsetup.configure(settings.log_level, settings.log_format)
        if args.command == "serve":
            from central import app

            keyring.ensure_data_dir(settings.data_dir)
            asyncio.run(_with_store(settings, auth.check_tokens))  # before anything starts
            app.serve(settings)
        else:
            return run_command(args, settings)
    except tomlsettings.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (CommandError, auth.UnscopedTokens) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
