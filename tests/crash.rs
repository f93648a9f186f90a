//! SIGKILL of the appliance with 20 calls in progress: every call that had ended keeps its
//! record, every call cut by the kill gets one at the next start (from its write-ahead journal,
//! ending `interrupted`), nothing is doubled or half-written, and the appliance starts and
//! takes calls again.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const CONFIG: &str = r#"
sip:
  t1_ms: 100
calls:
  record_dir: records
  max_concurrent: 40
routes:
  - match: "*"
    agent: quiet
agents:
  quiet:
    mode: silent
"#;

fn records(dir: &Path) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: not whole JSON: {e}", p.display()));
            let id = v["call_id"].as_str().unwrap().to_string();
            assert!(out.insert(id.clone(), v).is_none(), "two records for {id}");
        }
    }
    out
}

fn sipp_call_ids(run_dir: &Path, pattern: &str) -> Vec<String> {
    // SIPp's Call-IDs are `<n>-<pid>@127.0.0.1`; read them from its message trace.
    let mut ids = Vec::new();
    for e in std::fs::read_dir(run_dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().contains(pattern) && p.extension().is_some_and(|x| x == "log") {
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                if let Some(id) = line.trim().strip_prefix("Call-ID: ") {
                    if !ids.contains(&id.to_string()) {
                        ids.push(id.to_string());
                    }
                }
            }
        }
    }
    ids
}

#[test]
fn sigkill_during_20_active_calls_loses_no_record_and_restarts_clean() {
    require_tools(&["sipp"]);
    let dir = test_dir("");
    let ports = alloc_ports();
    let (ports_long, ports_short) = (alloc_ports(), alloc_ports());
    let app = Appliance::start_in(&dir, CONFIG, &ports);
    let rec_dir = dir.join("records");

    // 20 long calls, all up within a second or two.
    let long_dir = dir.join("long");
    std::fs::create_dir_all(&long_dir).unwrap();
    let long = spawn_sipp(
        &long_dir,
        Path::new("uac"),
        Some(&ports.sip_addr()),
        &ports_long,
        &["-s", "1000", "-d", "120000", "-r", "20", "-m", "20", "-l", "20", "-trace_msg"],
    );
    assert!(
        wait_until(Duration::from_secs(20), || (app.metric_value("switchboard_active_calls") == Some(20.0))
            .then_some(()))
        .is_some(),
        "20 calls up\n{}",
        app.log_tail(20)
    );
    // 10 short calls that end while the 20 go on.
    let short_dir = dir.join("short");
    std::fs::create_dir_all(&short_dir).unwrap();
    let short = run_sipp(
        &short_dir,
        Path::new("uac"),
        &ports.sip_addr(),
        &ports_short,
        &["-s", "1000", "-d", "300", "-r", "10", "-m", "10", "-l", "10", "-trace_msg"],
        Duration::from_secs(30),
    );
    assert_eq!((short.successful, short.failed), (10, 0), "{}", short.report());
    assert!(
        wait_until(Duration::from_secs(10), || (records(&rec_dir).len() == 10).then_some(())).is_some(),
        "the 10 short calls' records are written"
    );
    assert_eq!(app.metric_value("switchboard_active_calls"), Some(20.0));
    let journals = std::fs::read_dir(rec_dir.join("active")).unwrap().count();
    assert_eq!(journals, 20, "one journal per call in progress");

    // SIGKILL: no chance to write anything.
    app.signal("KILL");
    assert!(app.wait_exit(Duration::from_secs(10)).is_some(), "the appliance died");
    drop(long.stop());
    let short_ids = sipp_call_ids(&short_dir, "uac");
    let long_ids = sipp_call_ids(&long_dir, "uac");
    assert_eq!((short_ids.len(), long_ids.len()), (10, 20), "Call-IDs from SIPp's traces");
    let before = records(&rec_dir);
    assert_eq!(before.len(), 10);
    for id in &short_ids {
        let r = before.get(id).unwrap_or_else(|| panic!("finished call {id} has its record"));
        assert_ne!(r["end_reason"], switchboard::call::record_recover::INTERRUPTED);
    }

    // Restart on the same directory: start-up recovers the 20, and the appliance takes calls.
    drop(app);
    let app = Appliance::start_in(&dir, CONFIG, &ports);
    assert!(app.log().contains("recovered the records of calls cut by the last stop"), "{}", app.log_tail(20));
    let after = records(&rec_dir);
    assert_eq!(after.len(), 30, "every call has exactly one record");
    for id in &short_ids {
        assert_eq!(after[id], before[id], "a finished call's record is untouched");
    }
    for id in &long_ids {
        let r = after.get(id).unwrap_or_else(|| panic!("cut call {id} has a record"));
        assert_eq!(r["end_reason"], switchboard::call::record_recover::INTERRUPTED);
        assert_eq!(r["agent"], "quiet");
        assert!(r["started_at"].as_str().is_some_and(|s| s.ends_with('Z')));
    }
    assert_eq!(std::fs::read_dir(rec_dir.join("active")).unwrap().count(), 0, "no journal left");
    let leftovers: Vec<_> = std::fs::read_dir(&rec_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let again = run_sipp(
        app.dir(),
        Path::new("uac"),
        &ports.sip_addr(),
        &ports_short,
        &["-s", "1000", "-d", "200"],
        Duration::from_secs(20),
    );
    assert_eq!((again.successful, again.failed), (1, 0), "a call after the restart\n{}", again.report());
}
