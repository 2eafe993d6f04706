"""The store, written once for SQLite (the embedded default) and PostgreSQL (scale-out).

Owns: the schema (schema.py), every query (queries.py), the mapping of rows to the records
of `central.storage.store` by column name (rows.py), the migrations (migrations/, Alembic, one
history for both engines, run at every open), the frozen schema history from before Alembic
(legacy.py), and the little that differs between the engines (engines.py: connections,
transactions, SQLite's group commit, PostgreSQL's advisory locks and durability check;
dialects.py: the few SQL spellings they do not share). database.py puts them together as
`central.storage.database.Database`; stores.py picks the engine a configuration names.
May import: central.core, central.domain, edge_agent.keystore (the layers below it).

How to add a query: write a function `def name(conn: sqlalchemy.Connection, ...) -> T` in
queries.py with SQLAlchemy Core against schema.py's tables (select a record's columns with
`rows.select(Record, table)` and map rows with rows.py), and a one-line method to
database.Database that runs it with
`self.engine.read(...)` (reads), `.write(...)` (one transaction; a constraint's refusal
becomes `store.Conflict`) or `.batched(...)` (a hot write that may share a group commit).
Add a contract test in tests/stores/test_contract.py: it runs on both engines.

How to add a migration: add a revision in migrations/versions/ (copy the newest one; set
`revision` and `down_revision` to chain it) whose `upgrade()` uses Alembic's operations
(`op.add_column`, `op.create_table`, `op.execute(...)` for data), which work on both
engines (on SQLite, `with op.batch_alter_table(...)` for what its ALTER TABLE cannot do);
then change schema.py to match. tests/stores/test_upgrade.py checks that schema.py and a
migrated database agree and that an old database still upgrades with its data intact.
Never edit legacy.py or the baseline revision: existing databases were made by them.
"""
