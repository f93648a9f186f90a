//! Reading the store: what is due, where a campaign stands, one contact's history.

use super::{
    from_ms, ms, AttemptId, AttemptRecord, ContactId, ContactRecord, ContactState, Store, StoreError, StoreErrorKind,
};
use crate::campaign::rules::{FinalState, Outcome};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::BTreeMap;

/// Counts for `switchboard campaign status`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CampaignStatus {
    pub contacts: u64,
    pub pending: u64,
    /// Pending and due at the `now` given.
    pub due_now: u64,
    pub dialing: u64,
    /// Final contacts by final state (every state present, maybe 0).
    pub finals: BTreeMap<FinalState, u64>,
    /// Attempts begun, in all.
    pub attempts: u64,
    /// Attempts by outcome (every outcome present, maybe 0); in-flight ones are in `dialing`.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// The earliest next attempt of a pending contact.
    pub next_due_at: Option<DateTime<Utc>>,
}

impl CampaignStatus {
    /// Every contact is final.
    pub fn is_done(&self) -> bool {
        self.pending == 0 && self.dialing == 0
    }
}

pub(super) const CONTACT_COLUMNS: &str =
    "id, campaign, line, number, timezone, variables_json, state, final_state, attempts, next_attempt_at, last_outcome";

type RawContact =
    (i64, String, i64, String, Option<String>, String, String, Option<String>, i64, Option<i64>, Option<String>);

fn raw_contact(r: &Row<'_>) -> rusqlite::Result<RawContact> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn contact_record(raw: RawContact) -> Result<ContactRecord, StoreErrorKind> {
    let (id, campaign, line, number, tz, vars, state, final_state, attempts, next, last) = raw;
    let bad = |what: String| StoreErrorKind::Corrupt(format!("contact {id}: {what}"));
    let timezone = match tz {
        None => None,
        Some(z) => Some(z.parse::<Tz>().map_err(|_| bad(format!("unknown time zone {z:?}")))?),
    };
    let variables = serde_json::from_str(&vars).map_err(|e| bad(format!("variables: {e}")))?;
    let state = match (state.as_str(), final_state, next) {
        ("pending", _, Some(t)) => ContactState::Pending { next_attempt_at: from_ms(t)? },
        ("dialing", _, _) => ContactState::Dialing,
        ("final", Some(f), _) => {
            ContactState::Final(FinalState::parse(&f).ok_or_else(|| bad(format!("final state {f:?}")))?)
        }
        (s, _, _) => return Err(bad(format!("state {s:?}"))),
    };
    let last_outcome = match last {
        None => None,
        Some(o) => Some(Outcome::parse(&o).ok_or_else(|| bad(format!("outcome {o:?}")))?),
    };
    Ok(ContactRecord {
        id: ContactId(id),
        campaign,
        line: u64::try_from(line).unwrap_or(0),
        number,
        timezone,
        variables,
        state,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        last_outcome,
    })
}

pub(super) const ATTEMPT_COLUMNS: &str =
    "a.id, a.contact_id, a.attempt, a.started_at, a.ended_at, a.outcome, a.sip_code, a.call_id, a.duration_ms, a.transcript_json, a.tools_json, a.detail";

pub(super) type RawAttempt = (
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub(super) fn raw_attempt(r: &Row<'_>, at: usize) -> rusqlite::Result<RawAttempt> {
    Ok((
        r.get(at)?,
        r.get(at + 1)?,
        r.get(at + 2)?,
        r.get(at + 3)?,
        r.get(at + 4)?,
        r.get(at + 5)?,
        r.get(at + 6)?,
        r.get(at + 7)?,
        r.get(at + 8)?,
        r.get(at + 9)?,
        r.get(at + 10)?,
        r.get(at + 11)?,
    ))
}

pub(super) fn attempt_record(raw: RawAttempt) -> Result<AttemptRecord, StoreErrorKind> {
    let (id, contact, attempt, started, ended, outcome, sip, call_id, duration, transcript, tools, detail) = raw;
    let bad = |what: String| StoreErrorKind::Corrupt(format!("attempt {id}: {what}"));
    let json = |s: Option<String>| match s {
        None => Ok(serde_json::Value::Null),
        Some(s) => serde_json::from_str(&s).map_err(|e| bad(format!("JSON: {e}"))),
    };
    Ok(AttemptRecord {
        id: AttemptId(id),
        contact: ContactId(contact),
        attempt: u32::try_from(attempt).unwrap_or(0),
        started_at: from_ms(started)?,
        ended_at: ended.map(from_ms).transpose()?,
        outcome: match outcome {
            None => None,
            Some(o) => Some(Outcome::parse(&o).ok_or_else(|| bad(format!("outcome {o:?}")))?),
        },
        sip_code: sip.and_then(|c| u16::try_from(c).ok()),
        call_id,
        duration_ms: duration.and_then(|d| u64::try_from(d).ok()),
        transcript: json(transcript)?,
        tools: json(tools)?,
        detail,
    })
}

pub(super) fn require_campaign(conn: &Connection, campaign: &str) -> Result<(), StoreErrorKind> {
    let known: Option<i64> =
        conn.query_row("SELECT 1 FROM campaigns WHERE name = ?1", [campaign], |r| r.get(0)).optional()?;
    known.map(|_| ()).ok_or_else(|| StoreErrorKind::UnknownCampaign(campaign.to_string()))
}

impl Store {
    /// Pending contacts due at `now`, the longest-waiting first (then by line), at most `limit`.
    pub fn due(&self, campaign: &str, now: DateTime<Utc>, limit: usize) -> Result<Vec<ContactRecord>, StoreError> {
        self.with_ref(|conn| {
            let mut q = conn.prepare_cached(&format!(
                "SELECT {CONTACT_COLUMNS} FROM contacts WHERE campaign = ?1 AND state = 'pending' AND next_attempt_at <= ?2
                 ORDER BY next_attempt_at, line, id LIMIT ?3"
            ))?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = q.query_map(params![campaign, ms(now), limit], raw_contact)?;
            rows.map(|r| contact_record(r?)).collect()
        })
    }

    /// When the next pending contact is due (`None`: none is pending).
    pub fn next_due_at(&self, campaign: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with_ref(|conn| {
            let t: Option<i64> = conn.query_row(
                "SELECT min(next_attempt_at) FROM contacts WHERE campaign = ?1 AND state = 'pending'",
                [campaign],
                |r| r.get(0),
            )?;
            t.map(from_ms).transpose()
        })
    }

    /// When the campaign's latest attempt began (`None`: no attempt yet). A restarted runner
    /// paces its first call from it, so a quick restart cannot exceed the call rate.
    pub fn last_attempt_started(&self, campaign: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with_ref(|conn| {
            let t: Option<i64> = conn.query_row(
                "SELECT max(a.started_at) FROM attempts a JOIN contacts c ON c.id = a.contact_id WHERE c.campaign = ?1",
                [campaign],
                |r| r.get(0),
            )?;
            t.map(from_ms).transpose()
        })
    }

    pub fn contact(&self, id: ContactId) -> Result<ContactRecord, StoreError> {
        self.with_ref(|conn| {
            let raw = conn
                .query_row(&format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE id = ?1"), [id.0], raw_contact)
                .optional()?;
            contact_record(raw.ok_or(StoreErrorKind::UnknownContact(id.0))?)
        })
    }

    /// Every contact of the campaign, in list order.
    pub fn contacts(&self, campaign: &str) -> Result<Vec<ContactRecord>, StoreError> {
        self.with_ref(|conn| {
            require_campaign(conn, campaign)?;
            let mut q =
                conn.prepare(&format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE campaign = ?1 ORDER BY line, id"))?;
            let rows = q.query_map([campaign], raw_contact)?;
            rows.map(|r| contact_record(r?)).collect()
        })
    }

    /// A contact's attempts, first first.
    pub fn attempts_of(&self, contact: ContactId) -> Result<Vec<AttemptRecord>, StoreError> {
        self.with_ref(|conn| {
            let mut q = conn.prepare(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE a.contact_id = ?1 ORDER BY a.attempt"
            ))?;
            let rows = q.query_map([contact.0], |r| raw_attempt(r, 0))?;
            rows.map(|r| attempt_record(r?)).collect()
        })
    }

    /// The campaigns in the store, by name.
    pub fn campaigns(&self) -> Result<Vec<String>, StoreError> {
        self.with_ref(|conn| {
            let mut q = conn.prepare("SELECT name FROM campaigns ORDER BY name")?;
            let rows = q.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Where the campaign stands at `now`.
    pub fn status(&self, campaign: &str, now: DateTime<Utc>) -> Result<CampaignStatus, StoreError> {
        self.with_ref(|conn| {
            require_campaign(conn, campaign)?;
            let mut s = CampaignStatus {
                finals: FinalState::ALL.into_iter().map(|f| (f, 0)).collect(),
                outcomes: Outcome::ALL.into_iter().map(|o| (o, 0)).collect(),
                ..CampaignStatus::default()
            };
            let mut q = conn.prepare(
                "SELECT state, final_state, count(*), sum(attempts), sum(next_attempt_at <= ?2), min(next_attempt_at)
                 FROM contacts WHERE campaign = ?1 GROUP BY state, final_state",
            )?;
            let rows = q.query_map(params![campaign, ms(now)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            })?;
            for row in rows {
                let (state, final_state, n, attempts, due, next) = row?;
                let n = u64::try_from(n).unwrap_or(0);
                s.contacts += n;
                s.attempts += u64::try_from(attempts).unwrap_or(0);
                match (state.as_str(), final_state.as_deref().and_then(FinalState::parse)) {
                    ("pending", _) => {
                        s.pending += n;
                        s.due_now += due.and_then(|d| u64::try_from(d).ok()).unwrap_or(0);
                        s.next_due_at = next.map(from_ms).transpose()?;
                    }
                    ("dialing", _) => s.dialing += n,
                    ("final", Some(f)) => *s.finals.entry(f).or_default() += n,
                    (other, f) => return Err(StoreErrorKind::Corrupt(format!("contacts in state {other:?} / {f:?}"))),
                }
            }
            let mut q = conn.prepare(
                "SELECT a.outcome, count(*) FROM attempts a JOIN contacts c ON c.id = a.contact_id
                 WHERE c.campaign = ?1 AND a.outcome IS NOT NULL GROUP BY a.outcome",
            )?;
            let rows = q.query_map([campaign], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (o, n) = row?;
                let o = Outcome::parse(&o).ok_or_else(|| StoreErrorKind::Corrupt(format!("outcome {o:?}")))?;
                *s.outcomes.entry(o).or_default() += u64::try_from(n).unwrap_or(0);
            }
            Ok(s)
        })
    }
}
