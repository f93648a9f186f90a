//! Store errors: always the store's path, then what went wrong.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub struct StoreError {
    /// The database file.
    pub path: PathBuf,
    pub kind: StoreErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreErrorKind {
    #[error("cannot create folder {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "schema version {found} is newer than this switchboard understands ({supported}): run a newer switchboard"
    )]
    NewerSchema { found: i64, supported: i64 },
    #[error("unknown campaign `{0}` (run it once to import its contacts)")]
    UnknownCampaign(String),
    #[error("no contact {0}")]
    UnknownContact(i64),
    #[error("contact {id} is {state}, not pending: it cannot be dialled now")]
    NotPending { id: i64, state: String },
    #[error("no attempt {0}")]
    UnknownAttempt(i64),
    #[error("attempt {0} already has its outcome")]
    AlreadyFinished(i64),
    #[error("campaign `{campaign}` is being run by another process (it holds {})", lock.display())]
    Locked { campaign: String, lock: PathBuf },
    #[error("the run lock is for another store or campaign ({0})")]
    WrongLock(String),
    #[error("damaged data: {0}")]
    Corrupt(String),
    #[error("cannot write the export: {0}")]
    Export(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}
