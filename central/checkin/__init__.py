"""What comes from the students: the check-in service (no HTTP in it), PIN checks, students,
attendance per occurrence, records, evidence bundles and the device key chains they carry.

May import: central.storage, central.core, central.domain (not central.ingest)."""
