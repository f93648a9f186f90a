//! Bringing a campaign and its contact list into the store, idempotently.
//!
//! A contact is known by its normalised number within its campaign. Running
//! the import again with the same list adds nothing; a list with new rows
//! adds those; a contact already stored is never touched — not its state,
//! attempts or variables — so a re-import can never make anyone callable
//! again. The whole import is one transaction: all of it or none.

use super::{ms, Store, StoreError, StoreErrorKind};
use crate::campaign::contacts::ContactList;
use crate::campaign::spec::CampaignSpec;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportCounts {
    /// The campaign was new to the store.
    pub created: bool,
    /// The campaign file differs from the one stored (the new one now applies: retry rules for the next decisions).
    pub spec_changed: bool,
    /// New contacts, pending from now.
    pub added: u64,
    /// Contacts already in the store, left as they are.
    pub already_present: u64,
    /// Of those, how many have a different zone or variables in the list than in the store (the stored ones are kept).
    pub differing: u64,
}

impl Store {
    /// Store the campaign (or update its spec) and add the contacts it does not have yet.
    pub fn import(
        &mut self,
        spec: &CampaignSpec,
        list: &ContactList,
        now: DateTime<Utc>,
    ) -> Result<ImportCounts, StoreError> {
        self.with(|conn| {
            let spec_json = serde_json::to_string(&spec.source).map_err(|e| StoreErrorKind::Corrupt(format!("campaign spec: {e}")))?;
            let hash = hex(&Sha256::digest(spec_json.as_bytes()));
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut counts = ImportCounts::default();

            let stored: Option<(String, String)> =
                tx.query_row("SELECT spec_sha256, columns_json FROM campaigns WHERE name = ?1", [&spec.name], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
            match stored {
                None => {
                    let columns = serde_json::to_string(&list.columns).map_err(|e| StoreErrorKind::Corrupt(e.to_string()))?;
                    tx.execute(
                        "INSERT INTO campaigns (name, spec_json, spec_sha256, columns_json, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        params![spec.name, spec_json, hash, columns, ms(now)],
                    )?;
                    counts.created = true;
                }
                Some((old_hash, old_columns)) => {
                    // New variable columns are appended to the export's, in the list's order.
                    let mut columns: Vec<String> =
                        serde_json::from_str(&old_columns).map_err(|e| StoreErrorKind::Corrupt(format!("campaign `{}` columns: {e}", spec.name)))?;
                    let before = columns.len();
                    for c in &list.columns {
                        if !columns.contains(c) {
                            columns.push(c.clone());
                        }
                    }
                    counts.spec_changed = old_hash != hash;
                    if counts.spec_changed || columns.len() != before {
                        let columns = serde_json::to_string(&columns).map_err(|e| StoreErrorKind::Corrupt(e.to_string()))?;
                        tx.execute(
                            "UPDATE campaigns SET spec_json = ?2, spec_sha256 = ?3, columns_json = ?4, updated_at = ?5 WHERE name = ?1",
                            params![spec.name, spec_json, hash, columns, ms(now)],
                        )?;
                    }
                }
            }

            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO contacts (campaign, line, number, timezone, variables_json, state, attempts, next_attempt_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6)
                     ON CONFLICT (campaign, number) DO NOTHING",
                )?;
                let mut existing = tx.prepare_cached("SELECT timezone, variables_json FROM contacts WHERE campaign = ?1 AND number = ?2")?;
                for c in &list.contacts {
                    let tz = c.timezone.map(|t| t.name());
                    let vars = serde_json::to_string(&c.variables).map_err(|e| StoreErrorKind::Corrupt(e.to_string()))?;
                    let line = i64::try_from(c.line).unwrap_or(i64::MAX);
                    if insert.execute(params![spec.name, line, c.number, tz, vars, ms(now)])? == 1 {
                        counts.added += 1;
                        continue;
                    }
                    counts.already_present += 1;
                    let (old_tz, old_vars): (Option<String>, String) = existing.query_row(params![spec.name, c.number], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    if old_tz.as_deref() != tz || old_vars != vars {
                        counts.differing += 1;
                    }
                }
            }
            tx.commit()?;
            Ok(counts)
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
