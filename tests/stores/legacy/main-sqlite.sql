BEGIN TRANSACTION;
CREATE TABLE admin_tokens (
    hash TEXT PRIMARY KEY, role TEXT NOT NULL, name TEXT NOT NULL, created_at INTEGER NOT NULL, site TEXT);
INSERT INTO "admin_tokens" VALUES('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','operator','ops',9000,NULL);
INSERT INTO "admin_tokens" VALUES('bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb','teacher','Dr T',9100,'campus');
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, device TEXT NOT NULL,
    kind TEXT NOT NULL, reason TEXT NOT NULL, raised_at INTEGER NOT NULL, cleared_at INTEGER);
INSERT INTO "alerts" VALUES(1,'campus','pi-1','offline','silent for 3 slots',6000,NULL);
INSERT INTO "alerts" VALUES(2,'campus','pi-1','clock','skew',6100,6200);
CREATE TABLE attendance_overrides (
    session_id INTEGER NOT NULL REFERENCES sessions(id), session_date TEXT NOT NULL,
    student_id TEXT NOT NULL, status TEXT NOT NULL, note TEXT NOT NULL, set_by TEXT NOT NULL,
    set_at INTEGER NOT NULL, PRIMARY KEY (session_id, session_date, student_id));
INSERT INTO "attendance_overrides" VALUES(1,'2026-09-01','s2','present','checked by hand','token:bbbb',12000);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL, site TEXT);
INSERT INTO "audit_log" VALUES(1,17000,'cli','site.add','campus','created','campus');
INSERT INTO "audit_log" VALUES(2,17100,'token:aaaa','token.add','ops','',NULL);
CREATE TABLE chain_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, device TEXT NOT NULL,
    kind TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL, detail TEXT NOT NULL,
    detected_at INTEGER NOT NULL, resolved_at INTEGER);
INSERT INTO "chain_events" VALUES(1,'campus','pi-1','gap',3,3,'',3000,NULL);
INSERT INTO "chain_events" VALUES(2,'campus','pi-1','fork',2,2,'other-jws',3100,NULL);
CREATE TABLE checkins (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, room TEXT NOT NULL,
    device TEXT NOT NULL, student_id TEXT NOT NULL, slot INTEGER NOT NULL, method TEXT NOT NULL,
    created_at INTEGER NOT NULL, token_age_ms INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'present', flags TEXT NOT NULL DEFAULT '[]', evidence TEXT NOT NULL DEFAULT '{}', session_id INTEGER, session_date TEXT, checked_out_at INTEGER, record_jws TEXT, browser TEXT,
    UNIQUE (site, student_id, device, slot));
INSERT INTO "checkins" VALUES(1,'campus','a-101','pi-1','s1',101,'qr',10000,500,'present','[]','{"proof": {"seq": 1}, "network": {"ip": "10.0.0.7"}, "browser_students": 0}',1,'2026-09-01',11000,'record-jws','browser-1');
INSERT INTO "checkins" VALUES(2,'campus','a-101','pi-1','s2',102,'remembered',10100,900,'flagged','["shared_browser"]','{"browser_students": 1}',1,'2026-09-01',NULL,NULL,'browser-1');
CREATE TABLE courses (
    site TEXT NOT NULL REFERENCES sites(site), course TEXT NOT NULL, name TEXT NOT NULL,
    timezone TEXT NOT NULL, PRIMARY KEY (site, course));
INSERT INTO "courses" VALUES('campus','law','Law','Europe/Berlin');
CREATE TABLE credentials (
    id TEXT PRIMARY KEY, site TEXT NOT NULL, student_id TEXT NOT NULL, created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
INSERT INTO "credentials" VALUES('cred-1','campus','s2',8000,10000000000000,0);
INSERT INTO "credentials" VALUES('cred-old','campus','s1',8000,8500,0);
CREATE TABLE device_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, device TEXT NOT NULL,
    room TEXT NOT NULL, from_seq INTEGER NOT NULL, ed25519 BLOB NOT NULL, x25519 BLOB NOT NULL,
    kind TEXT NOT NULL, added_at INTEGER NOT NULL, evidence TEXT NOT NULL DEFAULT '');
INSERT INTO "device_keys" VALUES(1,'campus','pi-1','a-101',1,X'0101010101010101010101010101010101010101010101010101010101010101',X'0202020202020202020202020202020202020202020202020202020202020202','enroll',1000,'');
INSERT INTO "device_keys" VALUES(2,'campus','pi-1','a-101',6,X'0303030303030303030303030303030303030303030303030303030303030303',X'0404040404040404040404040404040404040404040404040404040404040404','rotate',4000,'kc');
CREATE TABLE devices (
    site TEXT NOT NULL, device TEXT NOT NULL, room TEXT NOT NULL,
    ed25519 BLOB, x25519 BLOB, enroll_code TEXT, enroll_expires_ms INTEGER, enrolled_at INTEGER,
    last_seq INTEGER NOT NULL DEFAULT 0, last_hash TEXT, last_proof_at INTEGER, last_iat INTEGER,
    last_slot INTEGER, slot_s INTEGER, otp_step_s INTEGER, clock_offset_ms INTEGER,
    online INTEGER NOT NULL DEFAULT 0, status_at INTEGER, last_verdict TEXT, enroll_room TEXT,
    PRIMARY KEY (site, device), FOREIGN KEY (site, room) REFERENCES rooms(site, room));
INSERT INTO "devices" VALUES('campus','pi-1','a-101',X'0303030303030303030303030303030303030303030303030303030303030303',X'0404040404040404040404040404040404040404040404040404040404040404','re-code',10000000000000,1000,5,'hash-5',1000105,1000005,105,30,30,-7,1,2000,'suspect','b-202');
INSERT INTO "devices" VALUES('campus','pi-2','b-202',NULL,NULL,'code-2',10000000000000,NULL,0,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,NULL,NULL,NULL);
CREATE TABLE enrolments (
    site TEXT NOT NULL, course TEXT NOT NULL, student_id TEXT NOT NULL,
    PRIMARY KEY (site, course, student_id), FOREIGN KEY (site, course) REFERENCES courses);
INSERT INTO "enrolments" VALUES('campus','law','s1');
INSERT INTO "enrolments" VALUES('campus','law','s2');
CREATE TABLE proofs (
    site TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL, slot INTEGER NOT NULL,
    iat INTEGER NOT NULL, received_at INTEGER NOT NULL, jws TEXT NOT NULL, hash TEXT NOT NULL,
    gap_before INTEGER NOT NULL DEFAULT 0, verdict TEXT, reasons TEXT, PRIMARY KEY (site, device, seq));
INSERT INTO "proofs" VALUES('campus','pi-1',1,101,1000001,1000101,'jws-1','hash-1',0,'ok','[]');
INSERT INTO "proofs" VALUES('campus','pi-1',2,102,1000002,1000102,'jws-2','hash-2',0,'ok','[]');
INSERT INTO "proofs" VALUES('campus','pi-1',4,104,1000004,1000104,'jws-4','hash-4',1,'ok','[]');
INSERT INTO "proofs" VALUES('campus','pi-1',5,105,1000005,1000105,'jws-5','hash-5',0,'suspect','["wifi_mismatch", "ble_missing"]');
CREATE TABLE rejection_counts (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
INSERT INTO "rejection_counts" VALUES('bad_signature',2);
INSERT INTO "rejection_counts" VALUES('unknown_device',1);
CREATE TABLE rejection_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, topic TEXT NOT NULL,
    reason TEXT NOT NULL, size INTEGER NOT NULL);
INSERT INTO "rejection_log" VALUES(1,7000,'roomproof/campus/x/proof','bad_signature',120);
INSERT INTO "rejection_log" VALUES(2,7000,'roomproof/campus/x/proof','bad_signature',120);
INSERT INTO "rejection_log" VALUES(3,7000,'roomproof/campus/x/proof','unknown_device',120);
CREATE TABLE room_profiles (
    site TEXT NOT NULL, room TEXT NOT NULL, state TEXT NOT NULL, wifi TEXT NOT NULL,
    ble TEXT NOT NULL, learn_target INTEGER NOT NULL, learned INTEGER NOT NULL,
    counts TEXT NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (site, room));
INSERT INTO "room_profiles" VALUES('campus','a-101','learning','["aa:bb"]','["ble-1"]',10,3,'{"wifi:aa:bb": 3}',5000);
CREATE TABLE rooms (
    site TEXT NOT NULL REFERENCES sites(site), room TEXT NOT NULL, name TEXT NOT NULL,
    lat REAL, lon REAL, radius_m REAL NOT NULL DEFAULT 50, PRIMARY KEY (site, room));
INSERT INTO "rooms" VALUES('campus','a-101','Hall A-101',48.15,11.57,50.0);
INSERT INTO "rooms" VALUES('campus','b-202','Room B-202',NULL,NULL,30.0);
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO "schema_version" VALUES(9);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, course TEXT NOT NULL,
    room TEXT NOT NULL, timezone TEXT NOT NULL, first_date TEXT NOT NULL, starts TEXT NOT NULL,
    ends TEXT NOT NULL, weekly INTEGER NOT NULL, until TEXT, grace_min INTEGER NOT NULL,
    checkout INTEGER NOT NULL, FOREIGN KEY (site, course) REFERENCES courses,
    FOREIGN KEY (site, room) REFERENCES rooms);
INSERT INTO "sessions" VALUES(1,'campus','law','a-101','Europe/Berlin','2026-09-01','09:00','10:30',1,'2026-12-20',10,0);
CREATE TABLE sites (site TEXT PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO "sites" VALUES('campus','Main campus');
INSERT INTO "sites" VALUES('north','North campus');
CREATE TABLE students (
    site TEXT NOT NULL REFERENCES sites(site), student_id TEXT NOT NULL, pin_hash TEXT NOT NULL,
    PRIMARY KEY (site, student_id));
INSERT INTO "students" VALUES('campus','s1','pin-hash-1');
INSERT INTO "students" VALUES('campus','s2','pin-hash-2');
CREATE TABLE token_courses (
    hash TEXT NOT NULL REFERENCES admin_tokens(hash) ON DELETE CASCADE, site TEXT NOT NULL,
    course TEXT NOT NULL, PRIMARY KEY (hash, site, course));
INSERT INTO "token_courses" VALUES('bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb','campus','law');
CREATE TABLE verify_links (
    id INTEGER PRIMARY KEY AUTOINCREMENT, token_hash TEXT NOT NULL UNIQUE,
    checkin_id INTEGER NOT NULL REFERENCES checkins(id), created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, revoked_at INTEGER);
INSERT INTO "verify_links" VALUES(1,'llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll',1,13000,10000000000000,NULL);
CREATE TABLE webhook_cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO "webhook_cursors" VALUES('checkins',1);
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id TEXT NOT NULL, event_type TEXT NOT NULL, body TEXT NOT NULL,
    created_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_status INTEGER,
    last_error TEXT, next_attempt_at INTEGER, delivered_at INTEGER,
    UNIQUE (webhook_id, event_id));
INSERT INTO "webhook_deliveries" VALUES(1,1,'evt-1','checkin','{"id": 1}',15000,1,500,'server error',16000,NULL);
CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, url TEXT NOT NULL, events TEXT NOT NULL,
    description TEXT NOT NULL, secret TEXT NOT NULL, created_at INTEGER NOT NULL, site TEXT);
INSERT INTO "webhooks" VALUES(1,'https://hooks.example/a','["checkin"]','LMS','secret',14000,'campus');
INSERT INTO "webhooks" VALUES(2,'https://hooks.example/b','["session_closed"]','','s2',14100,NULL);
CREATE INDEX proofs_slot ON proofs (site, device, slot);
CREATE INDEX checkins_room ON checkins (site, room, created_at);
CREATE UNIQUE INDEX alerts_open ON alerts (site, device, kind) WHERE cleared_at IS NULL;
CREATE INDEX chain_events_device ON chain_events (site, device, kind, resolved_at);
CREATE INDEX checkins_browser ON checkins (browser, created_at);
CREATE INDEX checkins_student ON checkins (site, student_id, id);
CREATE UNIQUE INDEX checkins_once_per_session ON checkins (session_id, session_date, student_id)
    WHERE session_id IS NOT NULL;
CREATE INDEX enrolments_student ON enrolments (site, student_id);
CREATE INDEX sessions_room ON sessions (site, room);
CREATE INDEX device_keys_device ON device_keys (site, device, from_seq);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX audit_log_site ON audit_log (site, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('device_keys',2);
INSERT INTO "sqlite_sequence" VALUES('chain_events',2);
INSERT INTO "sqlite_sequence" VALUES('alerts',2);
INSERT INTO "sqlite_sequence" VALUES('rejection_log',3);
INSERT INTO "sqlite_sequence" VALUES('sessions',1);
INSERT INTO "sqlite_sequence" VALUES('checkins',2);
INSERT INTO "sqlite_sequence" VALUES('verify_links',1);
INSERT INTO "sqlite_sequence" VALUES('webhooks',2);
INSERT INTO "sqlite_sequence" VALUES('webhook_deliveries',1);
INSERT INTO "sqlite_sequence" VALUES('audit_log',2);
COMMIT;
