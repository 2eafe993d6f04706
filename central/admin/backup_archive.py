"""The backup archive: a gzip'd tar of a manifest, the database snapshot and central's keys.

The keys (and the database's SHA-256) are sealed with a passphrase (Argon2id, then NaCl's
SecretBox), so the archive can sit on shared backup storage without handing out the key that
countersigns evidence; the manifest says what is inside (engine, versions, table row counts,
each member's SHA-256) so a damaged or altered archive is refused before anything is restored.
Knows nothing of databases: the caller hands it files and counts.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import gzip
import hashlib
import json
import os
import pathlib
import tarfile
import typing
import zlib

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from edge_agent.protocol import b64

FORMAT = "roomproof-central-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SEALED_KEYS = "keys.sealed"
Engine = typing.Literal["sqlite", "postgresql"]
DATABASE_MEMBER: dict[Engine, str] = {
    "sqlite": "database/central.db",
    "postgresql": "database/central.pgdump",
}
MIN_PASSPHRASE_CHARS = 12
# Argon2id at libsodium's "moderate" cost (256 MiB, 3 passes): about a second per backup,
# costly for a guesser. An archive states its own cost; restore caps what it accepts.
OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MODERATE
_MAX_MEMLIMIT = 1 << 30
_MAX_OPSLIMIT = 16
_MAX_SMALL_MEMBER = 1 << 20
_CHUNK = 1 << 20


class ArchiveError(Exception):
    """The archive cannot be used (damaged, altered, foreign, or the wrong passphrase)."""


@dataclasses.dataclass(frozen=True)
class Contents:
    """What a verified archive holds, ready to restore (the database file is extracted)."""

    manifest: dict[str, typing.Any]
    engine: Engine
    database: pathlib.Path
    keys: dict[str, bytes]
    tables: dict[str, int]


def sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _box(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> nacl.secret.SecretBox:
    key = nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        passphrase.encode(),
        salt,
        opslimit=opslimit,
        memlimit=memlimit,
    )
    return nacl.secret.SecretBox(key)


def _iso(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write(
    out: pathlib.Path,
    *,
    engine: Engine,
    database: pathlib.Path,
    keys: dict[str, bytes],
    tables: dict[str, int],
    passphrase: str,
    now_ms: int,
    central_version: str,
    progress: collections.abc.Callable[[str], None],
) -> dict[str, typing.Any]:
    """Writes the archive to `out` atomically (a 0600 temp file in its folder, fsynced, then
    renamed over it); returns the manifest."""
    progress(f"hashing the database snapshot ({database.stat().st_size / 1e6:.1f} MB)")
    database_sha = sha256_file(database)
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    progress("sealing the keys with the passphrase (Argon2id)")
    sealed_payload = json.dumps(
        {
            "files": {name: b64.encode(data) for name, data in sorted(keys.items())},
            "database_sha256": database_sha,
            "created_at_ms": now_ms,
        }
    ).encode()
    sealed = bytes(_box(passphrase, salt, OPSLIMIT, MEMLIMIT).encrypt(sealed_payload))
    manifest: dict[str, typing.Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": _iso(now_ms),
        "created_at_ms": now_ms,
        "engine": engine,
        "central_version": central_version,
        "tables": dict(sorted(tables.items())),
        "members": {
            DATABASE_MEMBER[engine]: {
                "sha256": database_sha,
                "bytes": database.stat().st_size,
            },
            SEALED_KEYS: {"sha256": hashlib.sha256(sealed).hexdigest(), "bytes": len(sealed)},
        },
        "keys": {
            "files": sorted(keys),
            "kdf": "argon2id",
            "opslimit": OPSLIMIT,
            "memlimit": MEMLIMIT,
            "salt": b64.encode(salt),
            "cipher": "nacl-secretbox",
        },
    }
    manifest_bytes = (json.dumps(manifest, indent=2) + "\n").encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
                _add_bytes(tar, MANIFEST, manifest_bytes, now_ms)
                _add_bytes(tar, SEALED_KEYS, sealed, now_ms)
                progress(f"writing {out.name}")
                info = tar.gettarinfo(str(database), arcname=DATABASE_MEMBER[engine])
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o600
                with database.open("rb") as source:
                    tar.addfile(info, _Counting(source, info.size, progress))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp, out)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(out.parent)
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, now_ms: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = now_ms // 1000
    tar.addfile(info, _BytesReader(data))


class _Counting:
    """Reads a file on, saying at each tenth how far it got (a large database takes a while)."""

    def __init__(
        self,
        source: typing.IO[bytes],
        total: int,
        progress: collections.abc.Callable[[str], None],
    ) -> None:
        self._source = source
        self._total = max(total, 1)
        self._done = 0
        self._told = 0
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        self._done += len(chunk)
        tenth = self._done * 10 // self._total
        if tenth > self._told and tenth < 10:
            self._told = tenth
            self._progress(f"{tenth * 10}% ({self._done / 1e6:.0f} of {self._total / 1e6:.0f} MB)")
        return chunk


class _BytesReader:
    """The smallest file object tarfile.addfile reads from."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk = self._data[self._at : end]
        self._at += len(chunk)
        return chunk


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(archive: pathlib.Path) -> dict[str, typing.Any]:
    """The manifest alone (no passphrase needed): what the archive says it holds."""
    with _open(archive) as tar:
        member = _next_member(tar, archive)
        if member.name != MANIFEST:
            raise ArchiveError(f"{archive}: not a roomproof backup (no manifest first)")
        return _parse_manifest(_small(tar, member, archive), archive)


def open_verified(archive: pathlib.Path, passphrase: str, workdir: pathlib.Path) -> Contents:
    """Checks every member against the manifest's SHA-256 while extracting the database into
    `workdir`, then opens the sealed keys with the passphrase; raises ArchiveError, before the
    caller writes anything, when any of it fails."""
    manifest: dict[str, typing.Any] | None = None
    sealed: bytes | None = None
    database: pathlib.Path | None = None
    with _open(archive) as tar:
        while True:
            member = _next_member(tar, archive, allow_end=True)
            if member is None:
                break
            if manifest is None:
                if member.name != MANIFEST:
                    raise ArchiveError(f"{archive}: not a roomproof backup (no manifest first)")
                manifest = _parse_manifest(_small(tar, member, archive), archive)
                continue
            expected = manifest["members"].get(member.name)
            if expected is None or not member.isfile():
                raise ArchiveError(f"{archive}: unexpected member {member.name!r}")
            if member.name == SEALED_KEYS:
                sealed = _small(tar, member, archive)
                found = hashlib.sha256(sealed).hexdigest()
            else:
                database = workdir / pathlib.PurePosixPath(member.name).name
                found = _extract(tar, member, database, archive)
            if found != expected["sha256"]:
                raise ArchiveError(
                    f"{archive}: {member.name} does not match the manifest's SHA-256"
                    " (the archive is damaged or was altered)"
                )
    if manifest is None:
        raise ArchiveError(f"{archive}: empty archive")
    engine: Engine = manifest["engine"]
    if sealed is None or database is None:
        raise ArchiveError(f"{archive}: the archive is damaged or incomplete (a member is missing)")
    params = manifest["keys"]
    try:
        opened = _box(
            passphrase, b64.decode(params["salt"]), params["opslimit"], params["memlimit"]
        ).decrypt(sealed)
    except nacl.exceptions.CryptoError as exc:
        raise ArchiveError("wrong passphrase (or the archive's sealed keys were altered)") from exc
    payload = json.loads(opened)
    if payload["database_sha256"] != manifest["members"][DATABASE_MEMBER[engine]]["sha256"]:
        raise ArchiveError(f"{archive}: the manifest was altered (database hash differs)")
    keys = {name: b64.decode(value) for name, value in payload["files"].items()}
    return Contents(manifest, engine, database, keys, dict(manifest["tables"]))


def _open(archive: pathlib.Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, mode="r:gz")
    except FileNotFoundError as exc:
        raise ArchiveError(f"{archive}: no such file") from exc
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{archive}: not a readable backup archive ({exc})") from exc


def _next_member(
    tar: tarfile.TarFile, archive: pathlib.Path, allow_end: bool = False
) -> typing.Any:
    try:
        member = tar.next()
    except (tarfile.TarError, OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"{archive}: the archive is damaged ({exc})") from exc
    if member is None and not allow_end:
        raise ArchiveError(f"{archive}: empty archive")
    return member


def _small(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: pathlib.Path) -> bytes:
    if not member.isfile() or member.size > _MAX_SMALL_MEMBER:
        raise ArchiveError(f"{archive}: {member.name} is not a small regular file")
    try:
        return _reader(tar, member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{archive}: the archive is damaged ({exc})") from exc


def _reader(tar: tarfile.TarFile, member: tarfile.TarInfo) -> typing.IO[bytes]:
    handle = tar.extractfile(member)
    if handle is None:  # not a regular file: the callers checked, so a damaged header
        raise tarfile.ReadError(f"{member.name} has no contents")
    return handle


def _extract(
    tar: tarfile.TarFile, member: tarfile.TarInfo, target: pathlib.Path, archive: pathlib.Path
) -> str:
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            handle = _reader(tar, member)
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{archive}: the archive is damaged ({exc})") from exc
    return digest.hexdigest()


def _parse_manifest(data: bytes, archive: pathlib.Path) -> dict[str, typing.Any]:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ArchiveError(f"{archive}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"{archive}: not a roomproof backup")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArchiveError(
            f"{archive}: backup format {manifest.get('format_version')!r};"
            f" this central reads format {FORMAT_VERSION}"
        )
    try:
        engine = manifest["engine"]
        if engine not in DATABASE_MEMBER:
            raise ValueError(f"unknown engine {engine!r}")
        members = manifest["members"]
        for name in (DATABASE_MEMBER[engine], SEALED_KEYS):
            if not isinstance(members[name]["sha256"], str):
                raise ValueError(f"{name}: no sha256")
        params = manifest["keys"]
        if not (
            isinstance(params["opslimit"], int)
            and isinstance(params["memlimit"], int)
            and 0 < params["opslimit"] <= _MAX_OPSLIMIT
            and 0 < params["memlimit"] <= _MAX_MEMLIMIT
            and len(b64.decode(params["salt"])) == nacl.pwhash.argon2id.SALTBYTES
        ):
            raise ValueError("key derivation parameters out of range")
        if not all(
            isinstance(k, str) and isinstance(v, int) for k, v in manifest["tables"].items()
        ):
            raise ValueError("tables: expected names and counts")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ArchiveError(f"{archive}: invalid manifest ({exc})") from exc
    return typing.cast(dict[str, typing.Any], manifest)
