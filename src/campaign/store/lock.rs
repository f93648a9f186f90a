//! One runner per campaign.
//!
//! `recover` marks every open attempt as interrupted; run while another
//! process still has calls in flight, it would make those contacts
//! callable again — a second call. So a runner holds a lock, and `recover`
//! demands it. The lock is an exclusive transaction on a small SQLite file
//! beside the store: the operating system drops it when the process dies,
//! however it dies, so a crash never leaves a stale lock behind.

use super::{Store, StoreError, StoreErrorKind};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Held while a process runs a campaign; dropping it releases the campaign.
pub struct RunLock {
    store: PathBuf,
    campaign: String,
    path: PathBuf,
    // Holds the exclusive transaction (rolled back, and the lock released, on drop).
    _conn: Connection,
}

impl std::fmt::Debug for RunLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLock").field("campaign", &self.campaign).field("path", &self.path).finish()
    }
}

impl RunLock {
    pub fn campaign(&self) -> &str {
        &self.campaign
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn check(&self, store: &Path) -> Result<&str, StoreErrorKind> {
        if self.store != store {
            return Err(StoreErrorKind::WrongLock(format!("it locks {}", self.store.display())));
        }
        Ok(&self.campaign)
    }
}

impl Store {
    /// Take the campaign's run lock, or fail at once with `Locked` if another process has it.
    pub fn lock_campaign(&self, campaign: &str) -> Result<RunLock, StoreError> {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{campaign}.lock"));
        let path = self.path.with_file_name(name);
        let locked = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreErrorKind::Locked { campaign: campaign.to_string(), lock: path.clone() }
            }
            _ => StoreErrorKind::Sqlite(e),
        };
        self.with_ref(|_| {
            let conn = Connection::open(&path).map_err(locked)?;
            conn.busy_timeout(Duration::ZERO).map_err(locked)?;
            conn.execute_batch("BEGIN EXCLUSIVE").map_err(locked)?;
            Ok(RunLock { store: self.path.clone(), campaign: campaign.to_string(), path: path.clone(), _conn: conn })
        })
    }
}
