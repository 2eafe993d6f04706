"""`python -m central verify`: check an evidence bundle offline, with central's public key.

Whoever doubts a record (a student, an auditor) should not need central's database, network or
settings to check it: this command reads the bundle and the keys and nothing else. A bundle
carries the device's key chain (enrollment and signed key changes up to the key that signed
it); only a bundle made before chains needs `--device-key` (the key of that proof's epoch).
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import typing

from central.checkin import evidence
from edge_agent.protocol import b64
from edge_agent.protocol import keys

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
_KEY_OPTIONS = ("--device-key", "--central-key")


class _UsageError(Exception):
    """A bad argument (key or file) that stops the command before verifying (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m central verify",
        description="Verify a roomproof evidence bundle offline with central's public key.",
    )
    parser.add_argument("bundle", metavar="BUNDLE.json", help="the bundle file, or - for stdin")
    parser.add_argument(
        "--device-key",
        metavar="KEY",
        help="the device's Ed25519 public key, base64url, or @FILE holding it: needed only for"
        " a bundle without a key chain; with one, it must be one of the chain's keys",
    )
    parser.add_argument(
        "--central-key",
        required=True,
        metavar="KEY",
        help="central's Ed25519 public key, base64url, or @FILE holding it",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _public_key(option: str, value: str) -> bytes:
    text = value
    if value.startswith("@"):
        path = pathlib.Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _UsageError(f"{option}: cannot read key file {str(path)!r}: {exc}") from exc
    text = text.strip()
    try:
        public = b64.decode(text)
    except ValueError as exc:
        raise _UsageError(f"{option}: not a base64url public key: {exc}") from exc
    if len(public) != keys.PUBLIC_BYTES:
        raise _UsageError(
            f"{option}: an Ed25519 public key is {keys.PUBLIC_BYTES} bytes, got {len(public)}"
        )
    return public


def _read_bundle(name: str) -> bytes:
    """At most a bundle, its one tolerated trailing newline and one byte more, so oversize
    input is refused, not read."""
    limit = evidence.MAX_BUNDLE_BYTES + 2
    if name == "-":
        return sys.stdin.buffer.read(limit)
    try:
        with pathlib.Path(name).open("rb") as handle:
            return handle.read(limit)
    except OSError as exc:
        raise _UsageError(f"cannot read bundle {name!r}: {exc.strerror or exc}") from exc


def _iso_utc(ms: int) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms since the epoch"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _print_valid(verified: evidence.Verified) -> None:
    record = verified.record
    print("VALID")
    for check in verified.checks:
        print(f"  ok  {check}")
    print(f"record      {record['record']}")
    print(f"place       site {record['site']} / room {record['room']} / device {record['device']}")
    print(f"student     {record['student_id']}")
    print(f"status      {record['status']}")
    print(f"checked in  {_iso_utc(record['checked_in_at'])}")
    print(f"slot        {record['slot']} (proof seq {verified.proof.seq})")
    print(f"device key  {verified.device_kid} (RFC 7638 thumbprint)")


def _emit_json(result: dict[str, typing.Any]) -> None:
    print(json.dumps(result, sort_keys=True, indent=2))


def _attach_key_values(argv: list[str]) -> list[str]:
    """`--device-key X` as `--device-key=X`: a base64url key may start with '-' (1 in 64)."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in _KEY_OPTIONS and index + 1 < len(argv):
            joined.append(f"{arg}={argv[index + 1]}")
            index += 2
        else:
            joined.append(arg)
            index += 1
    return joined


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(_attach_key_values(argv))
    except SystemExit as exc:  # argparse has printed usage or help already
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        device_public = (
            None if args.device_key is None else _public_key("--device-key", args.device_key)
        )
        central_public = _public_key("--central-key", args.central_key)
        data = _read_bundle(args.bundle)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        verified = evidence.verify_bundle(data, device_public, central_public)
    except evidence.EvidenceError as exc:
        if args.json:
            _emit_json({"valid": False, "reason": exc.reason, "message": str(exc)})
        else:
            print(f"INVALID: {exc.reason}: {exc}")
        return EXIT_INVALID
    if args.json:
        _emit_json(
            {
                "valid": True,
                "record": verified.record,
                "checks": verified.checks,
                "device_kid": verified.device_kid,
            }
        )
    else:
        _print_valid(verified)
    return EXIT_VALID
