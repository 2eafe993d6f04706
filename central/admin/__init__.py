"""What the institution does with the records: room profiles, privacy exports and erasure,
retention, attendance exports, status, backups.

May import: central.checkin, central.ingest, central.storage, central.core, central.domain."""
