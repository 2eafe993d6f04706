"""Device TOTP digests and key-history notes; first keys get the best evidence left.

`devices.otp_digest` holds the digest a device's last proof declared (NULL: SHA-1, RFC 6238).
`device_keys.note` says why an entry's evidence is weaker than a message signed by its key.
A device enrolled before central kept enrollment requests had `evidence = ''` for its first
key: it gets the earliest stored proof its key signed (seq from its from_seq to the next key's)
whose JWS retention has not purged, or stays empty; the note says which."""

from __future__ import annotations

import alembic.util
import sqlalchemy as sa
from alembic import op

from central.storage import store

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PROOF = store.NOTE_BACKFILL_PROOF.replace("'", "''")
NONE = store.NOTE_BACKFILL_NONE.replace("'", "''")
BACKFILL = (
    f"UPDATE device_keys SET note = '{PROOF}' WHERE kind = 'enroll' AND evidence = ''",
    f"""UPDATE device_keys SET evidence = COALESCE((SELECT p.jws FROM proofs p
    WHERE p.site = device_keys.site AND p.device = device_keys.device
    AND p.jws <> '' AND p.seq >= device_keys.from_seq AND p.seq < COALESCE((SELECT MIN(n.from_seq)
    FROM device_keys n WHERE n.site = device_keys.site AND n.device = device_keys.device
    AND n.from_seq > device_keys.from_seq), 9007199254740992)
    ORDER BY p.seq LIMIT 1), '')
    WHERE note = '{PROOF}'""",
    f"UPDATE device_keys SET note = '{NONE}' WHERE note = '{PROOF}' AND evidence = ''",
)


def upgrade() -> None:
    op.add_column("devices", sa.Column("otp_digest", sa.Text))
    op.add_column("device_keys", sa.Column("note", sa.Text, nullable=False, server_default=""))
    for statement in BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    raise alembic.util.CommandError("roomproof upgrades only; restore a backup to go back")
