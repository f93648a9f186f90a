//! CSV exports: one row per contact (its last attempt), or one per attempt.
//!
//! Contact export columns: `number, timezone`, the list's variables, then
//! `state` (pending, dialing, completed, voicemail, exhausted), `attempts`,
//! `last_outcome`, `last_sip_code`, `last_call_id`, `last_attempt_at`,
//! `last_duration_ms`, `transcript` (the last attempt's, as `caller: …` /
//! `agent: …` lines). A variable named like one of those columns is
//! written as `var_<name>`, so no header appears twice.

use super::query::{attempt_record, raw_attempt, require_campaign, ATTEMPT_COLUMNS};
use super::{from_ms, Store, StoreError, StoreErrorKind};
use crate::campaign::attempt::transcript_text;
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::BTreeMap;
use std::io::Write;

const FIXED: [&str; 10] = [
    "number",
    "timezone",
    "state",
    "attempts",
    "last_outcome",
    "last_sip_code",
    "last_call_id",
    "last_attempt_at",
    "last_duration_ms",
    "transcript",
];

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn export_err(e: csv::Error) -> StoreErrorKind {
    StoreErrorKind::Export(e.to_string())
}

impl Store {
    /// Write one row per contact, in list order. Returns the number of rows.
    pub fn export_csv(&self, campaign: &str, out: impl Write) -> Result<u64, StoreError> {
        self.with_ref(|conn| {
            require_campaign(conn, campaign)?;
            let columns_json: String =
                conn.query_row("SELECT columns_json FROM campaigns WHERE name = ?1", [campaign], |r| r.get(0))?;
            let columns: Vec<String> =
                serde_json::from_str(&columns_json).map_err(|e| StoreErrorKind::Corrupt(format!("columns: {e}")))?;
            let mut w = csv::Writer::from_writer(out);
            let header = FIXED[..2]
                .iter()
                .map(|s| s.to_string())
                .chain(columns.iter().map(|c| if FIXED.contains(&c.as_str()) { format!("var_{c}") } else { c.clone() }))
                .chain(FIXED[2..].iter().map(|s| s.to_string()));
            w.write_record(header).map_err(export_err)?;
            // The last attempt is the one numbered like the contact's attempt count.
            let mut q = conn.prepare(
                "SELECT c.number, c.timezone, c.variables_json, c.state, c.final_state, c.attempts, c.last_outcome,
                        a.sip_code, a.call_id, a.started_at, a.duration_ms, a.transcript_json
                 FROM contacts c LEFT JOIN attempts a ON a.contact_id = c.id AND a.attempt = c.attempts
                 WHERE c.campaign = ?1 ORDER BY c.line, c.id",
            )?;
            let mut rows = q.query([campaign])?;
            let mut n = 0u64;
            while let Some(r) = rows.next()? {
                let vars: String = r.get(2)?;
                let vars: BTreeMap<String, String> =
                    serde_json::from_str(&vars).map_err(|e| StoreErrorKind::Corrupt(format!("variables: {e}")))?;
                let state: String = r.get(3)?;
                let final_state: Option<String> = r.get(4)?;
                let started: Option<i64> = r.get(9)?;
                let transcript: Option<String> = r.get(11)?;
                let transcript = transcript
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .map(|t| transcript_text(&t))
                    .unwrap_or_default();
                let mut rec: Vec<String> = vec![r.get(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default()];
                rec.extend(columns.iter().map(|c| vars.get(c).cloned().unwrap_or_default()));
                rec.extend([
                    final_state.unwrap_or(state),
                    r.get::<_, i64>(5)?.to_string(),
                    r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                    r.get::<_, Option<i64>>(7)?.map(|c| c.to_string()).unwrap_or_default(),
                    r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                    started.map(from_ms).transpose()?.map(rfc3339).unwrap_or_default(),
                    r.get::<_, Option<i64>>(10)?.map(|d| d.to_string()).unwrap_or_default(),
                    transcript,
                ]);
                w.write_record(&rec).map_err(export_err)?;
                n += 1;
            }
            w.flush().map_err(|e| StoreErrorKind::Export(e.to_string()))?;
            Ok(n)
        })
    }

    /// Write one row per attempt: `number, attempt, started_at, ended_at,
    /// outcome, sip_code, call_id, duration_ms, detail, transcript, tools`
    /// (tools as JSON). In flight attempts have an empty outcome.
    pub fn export_attempts_csv(&self, campaign: &str, out: impl Write) -> Result<u64, StoreError> {
        self.with_ref(|conn| {
            require_campaign(conn, campaign)?;
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "number",
                "attempt",
                "started_at",
                "ended_at",
                "outcome",
                "sip_code",
                "call_id",
                "duration_ms",
                "detail",
                "transcript",
                "tools",
            ])
            .map_err(export_err)?;
            let mut q = conn.prepare(&format!(
                "SELECT c.number, {ATTEMPT_COLUMNS} FROM attempts a JOIN contacts c ON c.id = a.contact_id
                 WHERE c.campaign = ?1 ORDER BY a.started_at, a.id"
            ))?;
            let mut rows = q.query([campaign])?;
            let mut n = 0u64;
            while let Some(r) = rows.next()? {
                let number: String = r.get(0)?;
                let a = attempt_record(raw_attempt(r, 1)?)?;
                w.write_record([
                    number,
                    a.attempt.to_string(),
                    rfc3339(a.started_at),
                    a.ended_at.map(rfc3339).unwrap_or_default(),
                    a.outcome.map(|o| o.as_str().to_string()).unwrap_or_default(),
                    a.sip_code.map(|c| c.to_string()).unwrap_or_default(),
                    a.call_id,
                    a.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
                    a.detail.unwrap_or_default(),
                    transcript_text(&a.transcript),
                    if a.tools.is_null() { String::new() } else { a.tools.to_string() },
                ])
                .map_err(export_err)?;
                n += 1;
            }
            w.flush().map_err(|e| StoreErrorKind::Export(e.to_string()))?;
            Ok(n)
        })
    }
}
