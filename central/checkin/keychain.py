"""A device's key chain in an evidence bundle: how the key that signed a proof descends from
the key the device enrolled, checked offline with nothing but the messages themselves.

Entry 0 is the enrollment (the request the device signed with its new key; for devices that
enrolled before that, the best evidence central had, with a note why); each later entry is a
key change signed by the previous key (`rotate`) or a re-enrollment request signed by the new
key (`re_enroll`, authorised by a one-time code that only central can check). The last entry's
key is the one that signed the bundle's proof; its key id is the RFC 7638 JWK thumbprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing

from central.storage import store
from edge_agent.protocol import b64
from edge_agent.protocol import enroll
from edge_agent.protocol import jws
from edge_agent.protocol import keychange
from edge_agent.protocol import keys
from edge_agent.protocol import proof

KINDS = ("enroll", "rotate", "re_enroll")
MAX_ENTRIES = 256
_KEY_MEMBERS = frozenset({"kid", "chain"})
_ENTRY_MEMBERS = frozenset({"kind", "from_seq", "ed25519", "evidence", "note"})


class ChainError(ValueError):
    """A key chain that does not hold; the message names the entry and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Entry:
    kind: str
    from_seq: int
    ed25519: bytes
    evidence: str
    note: str


@dataclasses.dataclass(frozen=True)
class Checked:
    """The key that signed the proof (the chain's last), its key id, and what was shown."""

    key: bytes
    kid: str
    keys: frozenset[bytes]
    checks: list[str]


def thumbprint(public: bytes) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an Ed25519 public key (RFC 8037 OKP):
    what `jwcrypto`'s `JWK.thumbprint()` and `joserfc`'s `thumbprint()` give for it."""
    jwk = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64.encode(public)}, separators=(",", ":")
    )
    return b64.encode(hashlib.sha256(jwk.encode("ascii")).digest())


def member(history: list[store.DeviceKey], signing: store.DeviceKey) -> dict[str, typing.Any]:
    """The bundle's `key` member: the key history up to and including the epoch `signing`."""
    entries: list[dict[str, typing.Any]] = []
    for key in history:
        entries.append(
            {
                "kind": key.kind,
                "from_seq": key.from_seq,
                "ed25519": b64.encode(key.ed25519),
                "evidence": key.evidence,
                "note": key.note,
            }
        )
        if key.id == signing.id:
            return {"kid": thumbprint(signing.ed25519), "chain": entries}
    raise ValueError(f"key epoch {signing.id} is not in the device's key history")


def _entries(value: object) -> tuple[str, list[Entry]]:
    if not isinstance(value, dict) or set(value) != _KEY_MEMBERS:
        raise ChainError(f"key must be an object of {sorted(_KEY_MEMBERS)}")
    kid, chain = value["kid"], value["chain"]
    if not isinstance(kid, str) or not isinstance(chain, list):
        raise ChainError("key kid must be a string and chain a list")
    if not 1 <= len(chain) <= MAX_ENTRIES:
        raise ChainError(f"key chain must have 1..{MAX_ENTRIES} entries")
    entries = []
    for index, item in enumerate(chain, 1):
        if not isinstance(item, dict) or set(item) != _ENTRY_MEMBERS:
            raise ChainError(f"chain entry {index} must be an object of {sorted(_ENTRY_MEMBERS)}")
        seq, public = item["from_seq"], item["ed25519"]
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**53:
            raise ChainError(f"chain entry {index}: from_seq must be a positive integer")
        if item["kind"] not in KINDS or not all(
            isinstance(item[k], str) for k in ("ed25519", "evidence", "note")
        ):
            raise ChainError(f"chain entry {index}: kind must be one of {KINDS}, texts strings")
        try:
            raw = b64.decode(public)
        except ValueError as exc:
            raise ChainError(f"chain entry {index}: ed25519 is not base64url: {exc}") from exc
        if len(raw) != keys.PUBLIC_BYTES:
            raise ChainError(f"chain entry {index}: ed25519 must be {keys.PUBLIC_BYTES} bytes")
        entries.append(Entry(item["kind"], seq, raw, item["evidence"], item["note"]))
    return kid, entries


def _utf8(where: str, text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ChainError(f"{where}: evidence is not UTF-8 text") from exc


def _request(where: str, entry: Entry, site: str, device: str) -> enroll.Request:
    """An enrollment request naming this entry's key, device and first seq."""
    try:
        request = enroll.parse_request(_utf8(where, entry.evidence))
    except enroll.BadSignature as exc:
        raise ChainError(f"{where}: the request is not signed by the key it enrolls") from exc
    except enroll.EnrollError as exc:
        raise ChainError(f"{where}: evidence is not an enrollment request: {exc}") from exc
    if (request.site, request.device) != (site, device):
        raise ChainError(f"{where}: the request is for {request.site}/{request.device}")
    if request.ed25519 != entry.ed25519:
        raise ChainError(f"{where}: the request enrolls another key")
    expected = None if entry.kind == "enroll" else entry.from_seq
    if request.from_seq != expected:
        raise ChainError(f"{where}: the request's from_seq is not the entry's")
    return request


def _anchor(where: str, entry: Entry, site: str, device: str, until: int | None) -> str:
    """What the first entry shows about the enrolled key."""
    header: object = None
    if entry.evidence.startswith("eyJ"):
        try:
            header = jws.parse(entry.evidence, proof.MAX_BYTES).header.get("typ")
        except jws.JWSError as exc:
            raise ChainError(f"{where}: evidence is not a JWS: {exc}") from exc
    if header == proof.TYP:  # backfilled: a proof this key signed
        try:
            parsed, claims = proof.decode(entry.evidence)
        except proof.ProofError as exc:
            raise ChainError(f"{where}: evidence proof: {exc}") from exc
        if (claims.site, claims.device) != (site, device) or not jws.verify(parsed, entry.ed25519):
            raise ChainError(f"{where}: the evidence proof is not this device's, by this key")
        if claims.seq < entry.from_seq or (until is not None and claims.seq >= until):
            raise ChainError(f"{where}: the evidence proof's seq is outside this key's range")
        return f"{where}: key proven by its proof seq {claims.seq} ({entry.note})"
    if entry.evidence == "":
        if not entry.note:
            raise ChainError(f"{where}: no evidence and no note why")
        return f"{where}: no evidence ({entry.note})"
    request = _request(where, entry, site, device)
    if request.signed:
        return f"{where}: enrollment request signed by the enrolled key"
    return f"{where}: enrollment request not signed by the key ({entry.note})"


def verify(value: object, site: str, device: str, proof_seq: int) -> Checked:
    """Check every entry of a bundle's `key` member for `site`/`device`; the last entry's key
    must cover `proof_seq`. Raises ChainError."""
    kid, entries = _entries(value)
    checks: list[str] = []
    previous: Entry | None = None
    for index, entry in enumerate(entries, 1):
        where = f"chain entry {index} ({entry.kind} from seq {entry.from_seq})"
        until = entries[index].from_seq if index < len(entries) else None
        if previous is None:
            if entry.kind != "enroll" or entry.from_seq != 1:
                raise ChainError(f"{where}: the chain must start with the enrollment at seq 1")
            checks.append(_anchor(where, entry, site, device, until))
        elif entry.kind == "enroll" or entry.from_seq <= previous.from_seq:
            raise ChainError(f"{where}: must be a key change after seq {previous.from_seq}")
        elif entry.kind == "rotate":
            try:
                parsed, change = keychange.decode(_utf8(where, entry.evidence))
            except keychange.KeyChangeError as exc:
                raise ChainError(f"{where}: evidence is not a key change: {exc}") from exc
            if not keychange.verify(parsed, change, previous.ed25519):
                raise ChainError(f"{where}: the key change is not signed by the previous key")
            if (change.site, change.device, change.ed25519, change.from_seq) != (
                site,
                device,
                entry.ed25519,
                entry.from_seq,
            ):
                raise ChainError(f"{where}: the key change names another device, key or seq")
            checks.append(f"{where}: key change signed by the previous key")
        else:
            request = _request(where, entry, site, device)
            signed = "signed by the new key" if request.signed else f"unsigned ({entry.note})"
            checks.append(
                f"{where}: re-enrollment request {signed}, authorised by a one-time code"
                " central sealed to the previous key"
            )
        previous = entry
    last = entries[-1]
    if last.from_seq > proof_seq:
        raise ChainError(f"the chain's last key starts at seq {last.from_seq}, after the proof")
    if kid != thumbprint(last.ed25519):
        raise ChainError("key kid is not the thumbprint of the chain's last key")
    return Checked(last.ed25519, kid, frozenset(e.ed25519 for e in entries), checks)
