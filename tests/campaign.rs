//! A campaign of 30 contacts against SIPp callees that answer, are busy or never answer: the
//! limits hold (seen from the SIPp side, on the wire), the retry rules are followed, every contact
//! ends in exactly one final state, and a SIGKILL of the appliance mid-campaign followed by a
//! restart loses no stored result and calls no completed contact again.

mod common;

use common::capture::sip_messages;
use common::*;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const MAX_CONCURRENT: usize = 3;
const CPS: f64 = 2.0;

/// One call as a SIPp callee saw it: when its first INVITE arrived and when it ended
/// (the BYE of an answered call, the ACK of a 486 or 487).
#[derive(Debug, Clone)]
struct Seen {
    user: String,
    start: f64,
    end: Option<f64>,
}

fn calls_seen(pkts: &[UdpPacket], uas_ports: &[u16]) -> Vec<Seen> {
    let mut calls: HashMap<String, Seen> = HashMap::new();
    for (t, _src, dst, text) in sip_messages(pkts) {
        if !uas_ports.contains(&dst.port()) {
            continue;
        }
        let first = text.lines().next().unwrap_or("");
        let call_id = text.lines().find_map(|l| l.strip_prefix("Call-ID: ")).unwrap_or("").trim().to_string();
        if first.starts_with("INVITE ") {
            let user = first
                .split_whitespace()
                .nth(1)
                .and_then(|u| u.strip_prefix("sip:"))
                .and_then(|u| u.split('@').next())
                .unwrap_or("")
                .to_string();
            calls.entry(call_id).or_insert(Seen { user, start: t, end: None });
        } else if first.starts_with("BYE ") || first.starts_with("ACK ") {
            if let Some(c) = calls.get_mut(&call_id) {
                c.end.get_or_insert(t);
            }
        }
    }
    let mut v: Vec<Seen> = calls.into_values().collect();
    v.sort_by(|a, b| a.start.total_cmp(&b.start));
    v
}

/// The most calls open at once, calls cut at `cut` (the appliance's death) ending there.
fn max_open(calls: &[&Seen], cut: f64) -> usize {
    let mut edges: Vec<(f64, i32)> = Vec::new();
    for c in calls {
        edges.push((c.start, 1));
        edges.push((c.end.unwrap_or(cut).min(cut), -1));
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut open, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        max = max.max(open);
    }
    max as usize
}

fn export(app: &Appliance, attempts: bool) -> Vec<BTreeMap<String, String>> {
    let mut cmd = std::process::Command::new(common::appliance::switchboard_bin());
    cmd.args(["campaign", "export", "reminders", "--config"]).arg(app.config_path());
    if attempts {
        cmd.arg("--attempts");
    }
    let out = run_checked(&mut cmd);
    let mut rd = csv::Reader::from_reader(&out.stdout[..]);
    let headers = rd.headers().unwrap().clone();
    rd.records()
        .map(|r| headers.iter().zip(r.unwrap().iter()).map(|(h, v)| (h.to_string(), v.to_string())).collect())
        .collect()
}

fn status(app: &Appliance) -> serde_json::Value {
    let (code, text) = app.http_get("/campaigns/reminders");
    assert_eq!(code, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn thirty_contacts_paced_retried_and_resumed_after_sigkill() {
    require_tools(&["sipp", "tcpdump"]);
    let ports = alloc_ports();
    let dir = test_dir("campaign");
    // Three callees: one answers (the agent hangs up after 2 s), one is busy, one rings forever.
    let answer_port = ports.peer_sip;
    let busy_port = ports.peer_rtp_high - 2;
    let ring_port = ports.peer_rtp_high - 4;
    let with_sip = |p: u16, rtp: u16| Ports { peer_sip: p, peer_rtp: rtp, ..ports.clone() };
    let uas_answer = spawn_sipp(&dir, &scenario("uas_echo.xml"), None, &ports, &["-m", "1000"]);
    let uas_busy =
        spawn_sipp(&dir, &scenario("uas_busy.xml"), None, &with_sip(busy_port, ports.peer_rtp + 20), &["-m", "1000"]);
    let uas_ring = spawn_sipp(
        &dir,
        &scenario("uas_ring_no_answer.xml"),
        None,
        &with_sip(ring_port, ports.peer_rtp + 40),
        &["-m", "1000"],
    );
    for p in [answer_port, busy_port, ring_port] {
        assert!(wait_udp_bound(p, Duration::from_secs(5)), "SIPp on {p}");
    }
    let cap = Capture::start(&dir, &format!("udp and (port {answer_port} or port {busy_port} or port {ring_port})"));

    // 12 answer, 9 busy, 9 never answer; each row carries a variable for the agent.
    let mut csv = String::from("number,first_name\n");
    let mut kind_of = HashMap::new();
    for i in 0..30 {
        let (kind, port) = match i % 10 {
            0..=3 => ("answer", answer_port),
            4..=6 => ("busy", busy_port),
            _ => ("ring", ring_port),
        };
        let user = format!("c{i:02}");
        kind_of.insert(user.clone(), kind);
        csv.push_str(&format!("sip:{user}@127.0.0.1:{port},Name{i}\n"));
    }
    std::fs::write(dir.join("contacts.csv"), csv).unwrap();
    let campaign = format!(
        "campaign:\n  name: reminders\n  agent: caller\n  contacts: contacts.csv\n  max_concurrent: {MAX_CONCURRENT}\n  calls_per_second: {CPS}\n  ring_timeout_s: 2\n  retry:\n    busy: {{ max_attempts: 2, delay_s: 2 }}\n    no_answer: {{ max_attempts: 2, delay_s: 2 }}\n    failed: {{ max_attempts: 1 }}\n"
    );
    std::fs::write(dir.join("campaign.yaml"), campaign).unwrap();
    let config = "calls:\n  record_dir: records\nroutes:\n  - match: \"*\"\n    agent: caller\nagents:\n  caller:\n    mode: silent\n    max_duration_s: 2\n    variables:\n      first_name: there\n";

    let app = Appliance::start_in(&dir, config, &ports);
    let out = run_checked(
        std::process::Command::new(common::appliance::switchboard_bin())
            .args(["campaign", "run"])
            .arg(dir.join("campaign.yaml"))
            .args(["--no-wait", "--http", &ports.http_addr(), "--config"])
            .arg(app.config_path()),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("campaign reminders running"));

    // Let it run until a dozen attempts have ended, then kill it mid-campaign.
    let before = wait_until(Duration::from_secs(60), || {
        let s = status(&app);
        (s["attempts"].as_u64().unwrap() - s["dialing"].as_u64().unwrap() >= 12 && s["dialing"].as_u64().unwrap() > 0)
            .then_some(s)
    })
    .unwrap_or_else(|| panic!("campaign progress: {}\n{}", status(&app), app.log_tail(30)));
    let stored_before: Vec<_> = export(&app, true).into_iter().filter(|a| !a["outcome"].is_empty()).collect();
    app.signal("KILL");
    assert!(app.wait_exit(Duration::from_secs(5)).is_some());
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    eprintln!("killed with {} attempts stored: {before}", stored_before.len());

    // Restart: the campaign resumes by itself and runs to the end.
    let app = Appliance::start_in(&dir, config, &ports);
    let done = wait_until(Duration::from_secs(120), || {
        let s = status(&app);
        (s["done"] == true).then_some(s)
    })
    .unwrap_or_else(|| panic!("campaign did not finish: {}\n{}", status(&app), app.log_tail(40)));
    assert!(app.log().contains("campaign resumed"), "{}", app.log_tail(30));
    std::thread::sleep(Duration::from_millis(500));
    let pkts = cap.stop();
    for u in [uas_answer, uas_busy, uas_ring] {
        u.stop();
    }

    // Every contact in exactly one final state.
    let contacts = export(&app, false);
    assert_eq!(contacts.len(), 30, "{done}");
    let finals: u64 = done["final"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!((finals, done["pending"].as_u64(), done["dialing"].as_u64()), (30, Some(0), Some(0)), "{done}");
    for c in &contacts {
        assert!(c["first_name"].starts_with("Name"), "variables are kept: {c:?}");
        assert!(matches!(c["state"].as_str(), "completed" | "exhausted"), "{c:?}");
    }

    // No stored result was lost or changed by the crash.
    let after = export(&app, true);
    for a in &stored_before {
        let same = after.iter().find(|b| b["call_id"] == a["call_id"]).unwrap_or_else(|| panic!("lost attempt {a:?}"));
        assert_eq!(same, a, "a stored attempt changed after the restart");
    }

    // The retry rules, per contact: answered once (or cut by the kill); busy and unanswered twice.
    let seen = calls_seen(&pkts, &[answer_port, busy_port, ring_port]);
    let mut per_user: HashMap<&str, usize> = HashMap::new();
    for s in &seen {
        *per_user.entry(s.user.as_str()).or_default() += 1;
    }
    for c in &contacts {
        let user = c["number"].trim_start_matches("sip:").split('@').next().unwrap().to_string();
        let calls = per_user.get(user.as_str()).copied().unwrap_or(0);
        let attempts: usize = c["attempts"].parse().unwrap();
        let interrupted = after.iter().any(|a| a["number"] == c["number"] && a["outcome"] == "interrupted");
        match kind_of[&user] {
            "answer" if !interrupted => {
                assert_eq!(
                    (calls, attempts, c["state"].as_str(), c["last_outcome"].as_str()),
                    (1, 1, "completed", "answered"),
                    "{c:?}"
                );
            }
            "answer" => assert!(
                calls <= 1 && c["state"] == "exhausted",
                "an interrupted call is never redialled (failed: 1 attempt): {c:?}"
            ),
            kind if !interrupted => {
                let outcome = if kind == "busy" { "busy" } else { "no_answer" };
                assert_eq!(
                    (calls, attempts, c["state"].as_str(), c["last_outcome"].as_str()),
                    (2, 2, "exhausted", outcome),
                    "{c:?}"
                );
            }
            _ => assert!(attempts <= 2 && calls <= 2, "{c:?}"),
        }
        assert!(calls <= attempts, "no call without an attempt stored first: {c:?}");
    }

    // Limits, from the callees' side: never more than 3 calls at once, never faster than 2 per s.
    let (pre, post): (Vec<&Seen>, Vec<&Seen>) = seen.iter().partition(|s| s.start < killed_at);
    assert!(max_open(&pre, killed_at) <= MAX_CONCURRENT, "before the kill: {}", max_open(&pre, killed_at));
    assert!(max_open(&post, f64::MAX) <= MAX_CONCURRENT, "after the restart: {}", max_open(&post, f64::MAX));
    assert!(
        max_open(&post, f64::MAX) == MAX_CONCURRENT || max_open(&pre, killed_at) == MAX_CONCURRENT,
        "the limit is reached at some point"
    );
    // The pacer spaces starts 0.5 s apart; on the wire a loaded machine may delay one INVITE more
    // than the next, so single gaps get a margin, and no window holds more than the rate allows.
    let gaps: Vec<(f64, f64)> = seen.windows(2).map(|w| (w[1].start - w[0].start, w[1].start - killed_at)).collect();
    let min_gap = gaps.iter().map(|g| g.0).fold(f64::MAX, f64::min);
    assert!(
        min_gap >= 0.3,
        "calls start at most {CPS} per second: smallest gap {min_gap:.3} s; (gap, start after the kill): {gaps:.3?}"
    );
    for (i, a) in seen.iter().enumerate() {
        for w in [1.0, 3.0, 10.0] {
            let n = seen[i..].iter().take_while(|b| b.start - a.start < w).count();
            assert!(
                n as f64 <= CPS * w + 1.0,
                "{n} calls started within {w} s of {:.3}: {gaps:.3?}",
                a.start - killed_at
            );
        }
    }
    eprintln!(
        "{} calls seen; max open {}/{}; smallest gap {min_gap:.3} s",
        seen.len(),
        max_open(&pre, killed_at),
        max_open(&post, f64::MAX)
    );
}
