use super::*;
use crate::campaign::attempt::AttemptResult;
use crate::campaign::contacts::{self, ContactList};
use crate::campaign::rules::Next;
use crate::campaign::spec::{self, CampaignSpec};
use crate::campaign::test_util::TempDir;
use serde_json::json;

const SPEC: &str = "campaign:
  name: test
  agent: a
  contacts: c.csv
  max_concurrent: 2
  retry:
    busy: { max_attempts: 3, delay_s: 300 }
    no_answer: { max_attempts: 2, delay_s: 3600 }
    failed: { max_attempts: 2, delay_s: 600 }
";

fn spec_from(text: &str) -> CampaignSpec {
    spec::parse(Path::new("/x/c.yaml"), text).unwrap()
}

fn list(csv: &str) -> ContactList {
    contacts::parse(Path::new("c.csv"), csv.as_bytes(), contacts::MAX_ROWS).unwrap()
}

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000 + s, 0).unwrap()
}

fn result(outcome: Outcome, sip: u16) -> AttemptResult {
    AttemptResult::without_call(outcome, Some(sip), None)
}

#[test]
fn open_creates_the_folder_and_schema_and_reopens() {
    let d = TempDir::new("open");
    let s = Store::open(&d.db()).unwrap();
    let mode: String = s.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    let sync: i64 = s.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    assert_eq!((mode.as_str(), sync), ("wal", 2));
    drop(s);
    let s = Store::open(&d.db()).unwrap();
    assert!(s.campaigns().unwrap().is_empty());
    // A file from a newer switchboard is refused, naming it.
    s.conn.pragma_update(None, "user_version", 99).unwrap();
    drop(s);
    let e = Store::open(&d.db()).unwrap_err();
    assert!(e.to_string().contains("campaigns.db: schema version 99 is newer"), "{e}");
}

#[test]
fn open_errors_name_the_path() {
    let d = TempDir::new("openerr");
    std::fs::create_dir_all(&d.0).unwrap();
    std::fs::write(d.0.join("file"), "x").unwrap();
    let e = Store::open(&d.0.join("file/sub/c.db")).unwrap_err();
    assert!(e.to_string().contains("cannot create folder") && e.to_string().contains("file/sub"), "{e}");
}

#[test]
fn import_is_idempotent_and_never_resets() {
    let d = TempDir::new("import");
    let mut s = Store::open(&d.db()).unwrap();
    let spec = spec_from(SPEC);
    let l1 = list("number,name\n+4411,Ann\n+4412,Bob\n");
    let c = s.import(&spec, &l1, t(0)).unwrap();
    assert_eq!((c.created, c.added, c.already_present), (true, 2, 0));
    assert_eq!(s.import(&spec, &l1, t(1)).unwrap(), ImportCounts { already_present: 2, ..Default::default() });

    // Ann is called and completed; then the list changes: Ann renamed, a new contact.
    let ann = s.due("test", t(2), 1).unwrap().remove(0);
    assert_eq!(ann.number, "+4411");
    let a = s.begin_attempt(ann.id, t(2), "call-1").unwrap();
    s.finish_attempt(a, &result(Outcome::Answered, 200), t(3)).unwrap();
    let l2 = list("number,name,extra\n+4411,Annie,x\n+4412,Bob,\n+4413,Cy,z\n");
    let c = s.import(&spec, &l2, t(4)).unwrap();
    assert_eq!((c.created, c.spec_changed, c.added, c.already_present, c.differing), (false, false, 1, 2, 2));
    let ann = s.contact(ann.id).unwrap();
    assert_eq!(ann.state, ContactState::Final(FinalState::Completed));
    assert_eq!(ann.variables["name"], "Ann");
    // The new column joins the export's.
    let mut out = Vec::new();
    s.export_csv("test", &mut out).unwrap();
    assert!(String::from_utf8(out).unwrap().starts_with("number,timezone,name,extra,state,"));
}

#[test]
fn a_changed_spec_brings_its_rules() {
    let d = TempDir::new("respec");
    let mut s = Store::open(&d.db()).unwrap();
    s.import(&spec_from(SPEC), &list("number\n+4411\n"), t(0)).unwrap();
    let stricter = SPEC.replace("busy: { max_attempts: 3", "busy: { max_attempts: 1");
    let c = s.import(&spec_from(&stricter), &list("number\n+4411\n"), t(1)).unwrap();
    assert!(c.spec_changed);
    let id = s.due("test", t(1), 1).unwrap()[0].id;
    let a = s.begin_attempt(id, t(1), "c").unwrap();
    assert_eq!(s.finish_attempt(a, &result(Outcome::Busy, 486), t(2)).unwrap(), Next::Final(FinalState::Exhausted));
}

#[test]
fn attempts_move_contacts_through_their_states() {
    let d = TempDir::new("states");
    let mut s = Store::open(&d.db()).unwrap();
    s.import(&spec_from(SPEC), &list("number\n+4411\n+4412\n"), t(0)).unwrap();
    let due = s.due("test", t(0), 10).unwrap();
    assert_eq!(due.iter().map(|c| c.line).collect::<Vec<_>>(), [2, 3]);
    let id = due[0].id;

    let a1 = s.begin_attempt(id, t(10), "c1").unwrap();
    assert_eq!(s.contact(id).unwrap().state, ContactState::Dialing);
    // Dialing contacts are not due and cannot be begun again.
    assert_eq!(s.due("test", t(10), 10).unwrap().len(), 1);
    let e = s.begin_attempt(id, t(10), "c1b").unwrap_err();
    assert!(matches!(e.kind, StoreErrorKind::NotPending { .. }), "{e}");
    assert!(e.to_string().contains("is dialing, not pending"), "{e}");

    let busy = AttemptResult { detail: Some("486 Busy Here".into()), ..result(Outcome::Busy, 486) };
    assert_eq!(s.finish_attempt(a1, &busy, t(20)).unwrap(), Next::RetryAt(t(320)));
    assert!(matches!(s.finish_attempt(a1, &busy, t(21)).unwrap_err().kind, StoreErrorKind::AlreadyFinished(_)));
    assert!(matches!(
        s.finish_attempt(AttemptId(999), &busy, t(21)).unwrap_err().kind,
        StoreErrorKind::UnknownAttempt(999)
    ));
    let c = s.contact(id).unwrap();
    assert_eq!(
        (c.state, c.attempts, c.last_outcome),
        (ContactState::Pending { next_attempt_at: t(320) }, 1, Some(Outcome::Busy))
    );
    // Not due before its retry time; the other contact comes first.
    assert_eq!(s.due("test", t(319), 10).unwrap().len(), 1);
    assert_eq!(s.next_due_at("test").unwrap(), Some(t(0)));

    let a2 = s.begin_attempt(id, t(320), "c2").unwrap();
    let answered = AttemptResult {
        outcome: Outcome::Answered,
        sip_code: Some(200),
        duration_ms: 42_000,
        transcript: json!([{ "role": "agent", "text": "Hello" }, { "role": "caller", "text": "Hi, yes" }]),
        tools: json!([{ "name": "book", "outcome": "ok" }]),
        detail: None,
    };
    assert_eq!(s.finish_attempt(a2, &answered, t(380)).unwrap(), Next::Final(FinalState::Completed));
    let history = s.attempts_of(id).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!((history[0].attempt, history[0].outcome, history[0].sip_code), (1, Some(Outcome::Busy), Some(486)));
    assert_eq!(history[1].transcript, answered.transcript);
    assert_eq!(history[1].tools, answered.tools);
    assert_eq!((history[1].duration_ms, history[1].ended_at), (Some(42_000), Some(t(380))));
    assert!(matches!(s.begin_attempt(id, t(400), "c3").unwrap_err().kind, StoreErrorKind::NotPending { .. }));
    assert!(matches!(
        s.begin_attempt(ContactId(12345), t(400), "c3").unwrap_err().kind,
        StoreErrorKind::UnknownContact(12345)
    ));

    let st = s.status("test", t(400)).unwrap();
    assert_eq!((st.contacts, st.pending, st.due_now, st.dialing, st.attempts), (2, 1, 1, 0, 2));
    assert_eq!(
        (st.finals[&FinalState::Completed], st.outcomes[&Outcome::Busy], st.outcomes[&Outcome::Answered]),
        (1, 1, 1)
    );
    assert!(!st.is_done());
    assert!(matches!(s.status("nope", t(0)).unwrap_err().kind, StoreErrorKind::UnknownCampaign(_)));
}

#[test]
fn defer_moves_only_pending_contacts() {
    let d = TempDir::new("defer");
    let mut s = Store::open(&d.db()).unwrap();
    s.import(&spec_from(SPEC), &list("number\n+4411\n+4412\n"), t(0)).unwrap();
    let due = s.due("test", t(0), 10).unwrap();
    s.defer(due[0].id, t(500)).unwrap();
    assert_eq!(s.due("test", t(0), 10).unwrap()[0].id, due[1].id);
    assert_eq!(s.due("test", t(500), 10).unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), [due[1].id, due[0].id]);
    s.begin_attempt(due[1].id, t(1), "c").unwrap();
    assert!(matches!(s.defer(due[1].id, t(600)).unwrap_err().kind, StoreErrorKind::NotPending { .. }));
    // A failed batch changes nothing.
    assert!(s.defer_many(&[(due[0].id, t(900)), (due[1].id, t(900))]).is_err());
    assert_eq!(s.contact(due[0].id).unwrap().state, ContactState::Pending { next_attempt_at: t(500) });
}

#[test]
fn one_runner_per_campaign_and_recovery_needs_its_lock() {
    let d = TempDir::new("lock");
    let mut s = Store::open(&d.db()).unwrap();
    let lock = s.lock_campaign("test").unwrap();
    let e = s.lock_campaign("test").unwrap_err();
    assert!(matches!(e.kind, StoreErrorKind::Locked { .. }), "{e}");
    assert!(e.to_string().contains("being run by another process"), "{e}");
    // Another campaign is independent; dropping the lock frees it.
    let other = s.lock_campaign("other").unwrap();
    drop(lock);
    let lock = s.lock_campaign("test").unwrap();
    assert_eq!(lock.campaign(), "test");
    // A lock of another store does not recover this one.
    let d2 = TempDir::new("lock2");
    let s2 = Store::open(&d2.db()).unwrap();
    let foreign = s2.lock_campaign("test").unwrap();
    s.import(&spec_from(SPEC), &list("number\n+4411\n"), t(0)).unwrap();
    assert!(matches!(s.recover(&foreign, t(0)).unwrap_err().kind, StoreErrorKind::WrongLock(_)));
    assert!(matches!(s.recover(&other, t(0)).unwrap_err().kind, StoreErrorKind::UnknownCampaign(_)));
    assert_eq!(s.recover(&lock, t(0)).unwrap(), 0);
}

#[test]
fn recover_interrupts_open_attempts_by_the_failed_rule() {
    let d = TempDir::new("recover");
    let mut s = Store::open(&d.db()).unwrap();
    s.import(&spec_from(SPEC), &list("number\n+4411\n+4412\n"), t(0)).unwrap();
    let due = s.due("test", t(0), 10).unwrap();
    let a = s.begin_attempt(due[0].id, t(1), "c1").unwrap();
    let lock = s.lock_campaign("test").unwrap();
    assert_eq!(s.recover(&lock, t(100)).unwrap(), 1);
    let c = s.contact(due[0].id).unwrap();
    assert_eq!(
        (c.state, c.last_outcome),
        (ContactState::Pending { next_attempt_at: t(700) }, Some(Outcome::Interrupted))
    );
    let h = s.attempts_of(due[0].id).unwrap();
    assert_eq!((h[0].id, h[0].outcome, h[0].ended_at), (a, Some(Outcome::Interrupted), None));
    // The second interruption exhausts the failed rule (2 attempts).
    s.begin_attempt(due[0].id, t(700), "c2").unwrap();
    assert_eq!(s.recover(&lock, t(800)).unwrap(), 1);
    assert_eq!(s.contact(due[0].id).unwrap().state, ContactState::Final(FinalState::Exhausted));
    assert_eq!(s.recover(&lock, t(900)).unwrap(), 0);
}

#[test]
fn export_one_row_per_contact_and_per_attempt() {
    let d = TempDir::new("export");
    let mut s = Store::open(&d.db()).unwrap();
    s.import(
        &spec_from(SPEC),
        &list("number,name,state,timezone\n+4411,\"Ann, Jr\",NY,America/New_York\n+4412,Bob,CA,\n"),
        t(0),
    )
    .unwrap();
    let due = s.due("test", t(0), 10).unwrap();
    let a = s.begin_attempt(due[0].id, t(0), "call-a").unwrap();
    s.finish_attempt(a, &result(Outcome::NoAnswer, 487), t(30)).unwrap();
    let a = s.begin_attempt(due[0].id, t(4000), "call-b").unwrap();
    let done = AttemptResult {
        outcome: Outcome::Answered,
        sip_code: Some(200),
        duration_ms: 1500,
        transcript: json!([{ "role": "agent", "text": "Hello Ann" }, { "role": "caller", "text": "bye" }]),
        tools: json!([{ "name": "x" }]),
        detail: None,
    };
    s.finish_attempt(a, &done, t(4002)).unwrap();
    let mut out = Vec::new();
    assert_eq!(s.export_csv("test", &mut out).unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let h: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        h,
        [
            "number",
            "timezone",
            "name",
            "var_state",
            "state",
            "attempts",
            "last_outcome",
            "last_sip_code",
            "last_call_id",
            "last_attempt_at",
            "last_duration_ms",
            "transcript"
        ]
    );
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let row0: Vec<&str> = rows[0].iter().collect();
    assert_eq!(
        row0,
        [
            "+4411",
            "America/New_York",
            "Ann, Jr",
            "NY",
            "completed",
            "2",
            "answered",
            "200",
            "call-b",
            "2025-06-15T16:13:20.000Z",
            "1500",
            "agent: Hello Ann\ncaller: bye"
        ]
    );
    let row1: Vec<&str> = rows[1].iter().collect();
    assert_eq!(row1, ["+4412", "", "Bob", "CA", "pending", "0", "", "", "", "", "", ""]);

    let mut out = Vec::new();
    assert_eq!(s.export_attempts_csv("test", &mut out).unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "number,attempt,started_at,ended_at,outcome,sip_code,call_id,duration_ms,detail,transcript,tools"
    );
    assert!(
        lines[1].starts_with("+4411,1,2025-06-15T15:06:40.000Z,2025-06-15T15:07:10.000Z,no_answer,487,call-a,0,,,"),
        "{}",
        lines[1]
    );
    assert!(text.contains("\"[{\"\"name\"\":\"\"x\"\"}]\""), "{text}");
    assert!(matches!(s.export_csv("nope", Vec::new()).unwrap_err().kind, StoreErrorKind::UnknownCampaign(_)));
}
