//! Registration on a PBX: Kamailio is the registrar (digest auth) and the proxy. The appliance
//! registers (401 then 200), refreshes before the binding expires, reports a wrong password
//! cleanly, answers a call to its address of record routed by Kamailio with the account's agent,
//! and removes its binding when it shuts down.

mod common;

use common::*;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn config(kamailio_port: u16) -> String {
    format!(
        r#"calls:
  shutdown_grace_s: 1
routes:
  - match: "*"
    agent: other
agents:
  other:
    mode: silent
  line:
    mode: echo
accounts:
  pbx:
    domain: 127.0.0.1:{kamailio_port}
    username: agent
    password_env: SB_TEST_PBX_PASSWORD
    expires_s: 10
    agent: line
  wrong:
    domain: 127.0.0.1:{kamailio_port}
    username: alice
    password: not-alices-password
"#
    )
}

#[test]
fn registers_refreshes_answers_through_the_registrar_and_unregisters() {
    require_tools(&["kamailio", "sipp"]);
    let ports = alloc_ports();
    let dir = test_dir("registration");
    // The ctrl port (baresip's) is free in this test: Kamailio listens there.
    let kam = Kamailio::start(&dir, ports.ctrl, &[("agent", "agentpass"), ("alice", "alicepass")], 5, 3600);
    std::env::set_var("SB_TEST_PBX_PASSWORD", "agentpass");
    let app = Appliance::start_in(&dir, &config(kam.port), &ports);

    // 401 then 200: the first binding.
    let registered = |k: &Kamailio| k.lines("REGISTERED sip:agent@").len();
    let t0 = wait_until(Duration::from_secs(10), || (registered(&kam) >= 1).then(Instant::now));
    assert!(t0.is_some(), "no registration:\n{}\n{}", kam.log_text(), app.log_tail(30));
    assert!(!kam.lines("CHALLENGE sip:agent@").is_empty(), "the first REGISTER is challenged");
    let first = &kam.lines("REGISTERED sip:agent@")[0];
    assert!(
        first.contains("expires=10") && first.contains(&format!("contact=<sip:agent@127.0.0.1:{}>", ports.sip)),
        "{first}"
    );

    // The wrong password fails, once, and is reported; the good account is registered.
    let health = wait_until(Duration::from_secs(10), || {
        let (code, body) = app.http_get("/healthz");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["accounts"]["pbx"]["state"] == "registered" && v["accounts"]["wrong"]["state"] == "failed")
            .then_some(v)
    })
    .unwrap_or_else(|| panic!("health: {:?}\n{}", app.http_get("/healthz"), app.log_tail(30)));
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["accounts"]["wrong"]["code"], 401, "{health}");
    assert!(health["accounts"]["wrong"]["reason"].as_str().unwrap().contains("credentials rejected"), "{health}");
    assert!(health["accounts"]["wrong"]["retry_in_s"].as_u64().unwrap() >= 60, "a wrong password backs off: {health}");
    assert_eq!(kam.lines("REGISTERED sip:alice@").len(), 0);
    assert_eq!(kam.lines("CHALLENGE sip:alice@").len(), 2, "challenged, answered once, rejected: no loop");
    assert_eq!(app.metric_value(r#"switchboard_registration_state{account="pbx",state="registered"}"#), Some(1.0));
    assert_eq!(app.metric_value(r#"switchboard_registration_state{account="wrong",state="failed"}"#), Some(1.0));
    assert_eq!(app.metric_value(r#"switchboard_registrations_total{account="wrong",result="failed"}"#), Some(1.0));

    // The refresh comes before the 10 s binding lapses.
    let t1 = wait_until(Duration::from_secs(15), || (registered(&kam) >= 2).then(Instant::now)).expect("a refresh");
    let gap = t1 - t0.unwrap();
    // refresh_in(10) = 5 s: 20 % early, but at least 5 s for retransmissions, at most half.
    assert!(
        gap > Duration::from_secs(4) && gap < Duration::from_millis(9500),
        "refresh after {gap:?} of a 10 s binding"
    );

    // A caller dials the address of record at the PBX; Kamailio routes it to our Contact.
    let run =
        run_sipp(&dir, &scenario("uac_via_proxy.xml"), &kam.addr(), &ports, &["-s", "agent"], Duration::from_secs(30));
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}\n{}", run.report(), app.log_tail(30), kam.log_text());
    assert!(
        !kam.lines(&format!("ROUTE INVITE sip:agent@127.0.0.1 -> sip:agent@127.0.0.1:{}", ports.sip)).is_empty(),
        "{}",
        kam.log_text()
    );
    let log = app.log();
    let incoming = log.lines().find(|l| l.contains("incoming call")).expect("the call reached the appliance");
    assert!(
        incoming.contains("agent=line") || incoming.contains("\"agent\":\"line\""),
        "the account's agent answers: {incoming}"
    );

    // Shutdown removes the binding: Expires 0, then the PBX no longer finds us.
    app.sigterm();
    app.wait_exit(Duration::from_secs(15)).expect("the appliance exits");
    let unbound = kam.lines("REGISTERED sip:agent@").iter().any(|l| l.contains("expires=0"));
    assert!(unbound, "no de-registration:\n{}", kam.log_text());
    assert!(app.log().contains("unregistered"), "{}", app.log_tail(20));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let inv = format!(
        "INVITE sip:agent@127.0.0.1:{k} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKafter;rport\r\nMax-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:agent@127.0.0.1>\r\nCall-ID: after-unregister@t\r\nCSeq: 1 INVITE\r\nContact: <sip:t@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n",
        k = kam.port
    );
    sock.send_to(inv.as_bytes(), kam.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("Kamailio answers");
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("SIP/2.0 404"), "after de-registration: {resp}");
}
