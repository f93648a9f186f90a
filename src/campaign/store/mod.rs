//! The campaign store: SQLite, one file, every attempt and outcome.
//!
//! Durability: WAL with `synchronous=FULL`, so a transaction that returned
//! is on disk and survives SIGKILL or power loss. Every state change of a
//! contact is one transaction together with its attempt row, so the file
//! never holds a contact `dialing` without its open attempt or an attempt's
//! outcome without the contact's decision. See the module note of
//! `campaign` for how this gives "nobody is dialled twice".

mod attempts;
mod error;
mod export;
mod import;
mod lock;
mod query;
mod schema;
#[cfg(test)]
mod tests;

pub use error::{StoreError, StoreErrorKind};
pub use import::ImportCounts;
pub use lock::RunLock;
pub use query::CampaignStatus;

use super::rules::{FinalState, Outcome, RetryRules};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A contact's row id in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContactId(pub i64);

/// An attempt's row id in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptId(pub i64);

impl std::fmt::Display for ContactId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a contact stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactState {
    /// Waiting for its next attempt, due at this instant.
    Pending {
        next_attempt_at: DateTime<Utc>,
    },
    /// An attempt is in flight (or was, when the process died: `recover` settles it).
    Dialing,
    Final(FinalState),
}

/// A contact as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactRecord {
    pub id: ContactId,
    pub campaign: String,
    /// Its line in the contact list it was imported from.
    pub line: u64,
    pub number: String,
    /// `None`: the campaign's zone (`CampaignSpec::zone_of`).
    pub timezone: Option<Tz>,
    /// For the agent's `{name}` placeholders.
    pub variables: BTreeMap<String, String>,
    pub state: ContactState,
    /// Attempts begun so far (an interrupted one counts).
    pub attempts: u32,
    pub last_outcome: Option<Outcome>,
}

/// An attempt as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub id: AttemptId,
    pub contact: ContactId,
    /// 1 for the contact's first attempt.
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// `None` while in flight.
    pub outcome: Option<Outcome>,
    pub sip_code: Option<u16>,
    pub call_id: String,
    pub duration_ms: Option<u64>,
    pub transcript: serde_json::Value,
    pub tools: serde_json::Value,
    pub detail: Option<String>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Open (or create) the store at `path`, creating its folder and schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let fail = |kind: StoreErrorKind| StoreError { path: path.to_path_buf(), kind };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| fail(StoreErrorKind::CreateDir { dir: dir.to_path_buf(), source }))?;
        }
        let mut conn = Connection::open(path).map_err(|e| fail(e.into()))?;
        configure(&conn).map_err(|e| fail(e.into()))?;
        schema::migrate(&mut conn).map_err(|e| {
            fail(match e {
                schema::MigrateError::Newer(found) => StoreErrorKind::NewerSchema { found, supported: schema::VERSION },
                schema::MigrateError::Sqlite(e) => e.into(),
            })
        })?;
        Ok(Store { conn, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the connection, naming the store's file in any error.
    fn with<T>(&mut self, f: impl FnOnce(&mut Connection) -> Result<T, StoreErrorKind>) -> Result<T, StoreError> {
        f(&mut self.conn).map_err(|kind| StoreError { path: self.path.clone(), kind })
    }

    fn with_ref<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreErrorKind>) -> Result<T, StoreError> {
        f(&self.conn).map_err(|kind| StoreError { path: self.path.clone(), kind })
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some file systems (network mounts) cannot share WAL memory; the
        // rollback journal with synchronous=FULL is just as durable, only slower.
        tracing::warn!(journal_mode = %mode, "campaign store: WAL unavailable, using the rollback journal");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> Result<DateTime<Utc>, StoreErrorKind> {
    DateTime::from_timestamp_millis(v).ok_or_else(|| StoreErrorKind::Corrupt(format!("time {v} ms is out of range")))
}

/// The retry rules the campaign was last imported with.
fn rules_of(conn: &Connection, campaign: &str) -> Result<RetryRules, StoreErrorKind> {
    use rusqlite::OptionalExtension;
    let json: Option<String> =
        conn.query_row("SELECT spec_json FROM campaigns WHERE name = ?1", [campaign], |r| r.get(0)).optional()?;
    let json = json.ok_or_else(|| StoreErrorKind::UnknownCampaign(campaign.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| StoreErrorKind::Corrupt(format!("campaign `{campaign}` spec: {e}")))?;
    match v.get("retry") {
        None => Ok(RetryRules::default()),
        Some(r) => serde_json::from_value(r.clone())
            .map_err(|e| StoreErrorKind::Corrupt(format!("campaign `{campaign}` retry rules: {e}"))),
    }
}
