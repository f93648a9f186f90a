//! The store's tables, versioned with `PRAGMA user_version`.
//!
//! Times are UTC milliseconds since the epoch (INTEGER). The CHECKs make the
//! contact state machine's invariants the database's: a final contact has a
//! final state, a pending one a next attempt time, a dialing one neither.

use rusqlite::Connection;

/// The version this code writes; an older file is migrated, a newer one refused.
pub const VERSION: i64 = 1;

const V1: &str = "
CREATE TABLE campaigns (
    name TEXT PRIMARY KEY,
    -- the campaign section as written, as JSON: a restart applies the rules the attempts were made under
    spec_json TEXT NOT NULL,
    spec_sha256 TEXT NOT NULL,
    -- the contact list's variable columns, in file order (for the export)
    columns_json TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    campaign TEXT NOT NULL REFERENCES campaigns(name),
    line INTEGER NOT NULL,
    number TEXT NOT NULL,
    timezone TEXT,
    variables_json TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'dialing', 'final')),
    final_state TEXT CHECK (final_state IN ('completed', 'voicemail', 'exhausted')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_outcome TEXT,
    CHECK ((state = 'final') = (final_state IS NOT NULL)),
    CHECK ((state = 'pending') = (next_attempt_at IS NOT NULL)),
    UNIQUE (campaign, number)
) STRICT;

CREATE INDEX contacts_due ON contacts (campaign, state, next_attempt_at, line);

CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    contact_id INTEGER NOT NULL REFERENCES contacts(id),
    attempt INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    -- NULL while in flight; `interrupted` when found so at restart
    outcome TEXT CHECK (outcome IN ('answered', 'machine', 'busy', 'no_answer', 'failed', 'interrupted')),
    sip_code INTEGER,
    call_id TEXT NOT NULL,
    duration_ms INTEGER,
    transcript_json TEXT,
    tools_json TEXT,
    detail TEXT,
    UNIQUE (contact_id, attempt)
) STRICT;

CREATE INDEX attempts_open ON attempts (contact_id) WHERE outcome IS NULL;
";

/// Bring the file to `VERSION` (in one transaction). `Err(Some(v))`: the file is from a newer switchboard.
pub fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > VERSION {
        return Err(MigrateError::Newer(found));
    }
    if found < 1 {
        tx.execute_batch(V1)?;
    }
    // Later versions: `if found < 2 { … }`, each step keeping the data.
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

#[derive(Debug)]
pub enum MigrateError {
    Newer(i64),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sqlite(e)
    }
}
