//! The contact state machine: pending → dialing → pending (retry) or final.
//!
//! Each transition is one transaction holding both the contact's new state
//! and its attempt row.

use super::query::require_campaign;
use super::{from_ms, ms, rules_of, AttemptId, ContactId, RunLock, Store, StoreError, StoreErrorKind};
use crate::campaign::attempt::AttemptResult;
use crate::campaign::rules::{decide, Next, Outcome};
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Transaction};

/// What `recover` writes in an interrupted attempt's `detail`.
pub const INTERRUPTED_DETAIL: &str =
    "the appliance stopped while this attempt was in flight (found at restart): whether the callee heard us is unknown";

impl Store {
    /// Mark the contact `dialing` and record the attempt, in one transaction.
    ///
    /// Call it before sending the INVITE, and send it only if this returned
    /// `Ok`: once it has, a crash can no longer lead to this contact being
    /// dialled again without the attempt being counted. Fails with
    /// `NotPending` if the contact is dialing or final.
    pub fn begin_attempt(
        &mut self,
        contact: ContactId,
        now: DateTime<Utc>,
        call_id: &str,
    ) -> Result<AttemptId, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let state: Option<String> =
                tx.query_row("SELECT state FROM contacts WHERE id = ?1", [contact.0], |r| r.get(0)).optional()?;
            match state.as_deref() {
                None => return Err(StoreErrorKind::UnknownContact(contact.0)),
                Some("pending") => {}
                Some(other) => return Err(StoreErrorKind::NotPending { id: contact.0, state: other.to_string() }),
            }
            tx.execute(
                "UPDATE contacts SET state = 'dialing', attempts = attempts + 1, next_attempt_at = NULL WHERE id = ?1",
                [contact.0],
            )?;
            let attempt: i64 =
                tx.query_row("SELECT attempts FROM contacts WHERE id = ?1", [contact.0], |r| r.get(0))?;
            tx.execute(
                "INSERT INTO attempts (contact_id, attempt, started_at, call_id) VALUES (?1, ?2, ?3, ?4)",
                params![contact.0, attempt, ms(now), call_id],
            )?;
            let id = AttemptId(tx.last_insert_rowid());
            tx.commit()?;
            Ok(id)
        })
    }

    /// Record how the attempt ended and decide the contact's fate by the
    /// campaign's retry rules, in one transaction. Returns the decision.
    pub fn finish_attempt(
        &mut self,
        attempt: AttemptId,
        result: &AttemptResult,
        now: DateTime<Utc>,
    ) -> Result<Next, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let row: Option<(i64, Option<String>, String)> = tx
                .query_row(
                    "SELECT a.contact_id, a.outcome, c.campaign FROM attempts a JOIN contacts c ON c.id = a.contact_id WHERE a.id = ?1",
                    [attempt.0],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let (contact, outcome, campaign) = row.ok_or(StoreErrorKind::UnknownAttempt(attempt.0))?;
            if outcome.is_some() {
                return Err(StoreErrorKind::AlreadyFinished(attempt.0));
            }
            let to_json = |v: &serde_json::Value| (!v.is_null()).then(|| v.to_string());
            tx.execute(
                "UPDATE attempts SET ended_at = ?2, outcome = ?3, sip_code = ?4, duration_ms = ?5, transcript_json = ?6, tools_json = ?7, detail = ?8 WHERE id = ?1",
                params![
                    attempt.0,
                    ms(now),
                    result.outcome.as_str(),
                    result.sip_code,
                    i64::try_from(result.duration_ms).unwrap_or(i64::MAX),
                    to_json(&result.transcript),
                    to_json(&result.tools),
                    result.detail
                ],
            )?;
            let next = settle(&tx, &campaign, ContactId(contact), result.outcome, now)?;
            tx.commit()?;
            Ok(next)
        })
    }

    /// After a restart: every attempt of the campaign still without an
    /// outcome (the process died with it in flight) becomes `interrupted`,
    /// and its contact is decided by the `failed` rule — one transaction.
    /// Needs the campaign's run lock, so that no live runner's calls are
    /// taken for dead ones. Returns how many attempts were interrupted.
    pub fn recover(&mut self, lock: &RunLock, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let store = self.path.clone();
        self.with(|conn| {
            let campaign = lock.check(&store)?.to_string();
            require_campaign(conn, &campaign)?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let open: Vec<(i64, i64)> = {
                let mut q = tx.prepare(
                    "SELECT a.id, a.contact_id FROM attempts a JOIN contacts c ON c.id = a.contact_id
                     WHERE c.campaign = ?1 AND a.outcome IS NULL ORDER BY a.id",
                )?;
                let rows = q.query_map([&campaign], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            for &(attempt, contact) in &open {
                tx.execute(
                    "UPDATE attempts SET outcome = 'interrupted', detail = ?2 WHERE id = ?1",
                    params![attempt, INTERRUPTED_DETAIL],
                )?;
                settle(&tx, &campaign, ContactId(contact), Outcome::Interrupted, now)?;
            }
            // The transactions above make this impossible; if the file was edited by hand, say so rather than dial.
            let stray: i64 = tx.query_row(
                "SELECT count(*) FROM contacts c WHERE c.campaign = ?1 AND c.state = 'dialing'
                 AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.contact_id = c.id AND a.outcome IS NULL)",
                [&campaign],
                |r| r.get(0),
            )?;
            if stray > 0 {
                return Err(StoreErrorKind::Corrupt(format!(
                    "{stray} contacts of `{campaign}` are dialing without an open attempt"
                )));
            }
            tx.commit()?;
            Ok(open.len())
        })
    }

    /// Move a pending contact's next attempt to `at` (outside its calling window: when it opens).
    pub fn defer(&mut self, contact: ContactId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.defer_many(&[(contact, at)])
    }

    /// `defer` for many contacts in one transaction (all or none).
    pub fn defer_many(&mut self, items: &[(ContactId, DateTime<Utc>)]) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut update =
                    tx.prepare_cached("UPDATE contacts SET next_attempt_at = ?2 WHERE id = ?1 AND state = 'pending'")?;
                for &(contact, at) in items {
                    if update.execute(params![contact.0, ms(at)])? == 0 {
                        let state: Option<String> = tx
                            .query_row("SELECT state FROM contacts WHERE id = ?1", [contact.0], |r| r.get(0))
                            .optional()?;
                        return Err(match state {
                            None => StoreErrorKind::UnknownContact(contact.0),
                            Some(state) => StoreErrorKind::NotPending { id: contact.0, state },
                        });
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}

/// Apply the rules to a dialing contact whose attempt just ended with `outcome`.
fn settle(
    tx: &Transaction<'_>,
    campaign: &str,
    contact: ContactId,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> Result<Next, StoreErrorKind> {
    let (state, attempts): (String, i64) =
        tx.query_row("SELECT state, attempts FROM contacts WHERE id = ?1", [contact.0], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if state != "dialing" {
        return Err(StoreErrorKind::Corrupt(format!("contact {contact} has an open attempt but is {state}")));
    }
    let rules = rules_of(tx, campaign)?;
    let next = decide(outcome, u32::try_from(attempts).unwrap_or(u32::MAX), &rules, now);
    match next {
        Next::Final(f) => tx.execute(
            "UPDATE contacts SET state = 'final', final_state = ?2, next_attempt_at = NULL, last_outcome = ?3 WHERE id = ?1",
            params![contact.0, f.as_str(), outcome.as_str()],
        )?,
        Next::RetryAt(at) => {
            // Round-trip check: a time the store could not read back must not be written.
            from_ms(ms(at))?;
            tx.execute(
                "UPDATE contacts SET state = 'pending', next_attempt_at = ?2, last_outcome = ?3 WHERE id = ?1",
                params![contact.0, ms(at), outcome.as_str()],
            )?
        }
    };
    Ok(next)
}
