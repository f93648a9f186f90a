//! Who may call, against the real binary: the source-address ACL (403, and the agent is never
//! reached), digest authentication of inbound INVITEs with SIPp's -au/-ap, scanner user agents
//! (no answer, then the source is blocked), per-source rate limits, and the admin token that
//! state-changing HTTP endpoints require. Sources are told apart by loopback address: the ACL
//! allows 127.0.0.1 only, and callers from 127.0.0.2-127.0.0.4 are strangers.

mod common;

use common::appliance::try_http_with;
use common::*;
use std::net::UdpSocket;
use std::time::Duration;

const PASSWORD: &str = "correct horse battery";

fn start() -> Appliance {
    let dir = test_dir("");
    std::fs::write(dir.join("trunk.password"), format!("{PASSWORD}\n")).unwrap();
    let yaml = r#"
sip:
  t1_ms: 100
security:
  allow: [127.0.0.1]
  auth:
    users:
      - username: trunk
        password_file: trunk.password
  rate_limit:
    requests_per_s: 5
    burst: 20
routes:
  - match: "*"
    agent: quiet
agents:
  quiet:
    mode: silent
"#;
    Appliance::start_in(&dir, yaml, &alloc_ports())
}

fn calls_taken(app: &Appliance) -> f64 {
    app.metric_sum("switchboard_calls_total")
}

/// A raw SIP client on a chosen loopback address.
fn options(from_ip: &str, sock: &UdpSocket, app: &Appliance, branch: &str, user_agent: &str) -> Option<String> {
    let port = sock.local_addr().unwrap().port();
    let msg = format!(
        "OPTIONS sip:probe@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {from_ip}:{port};branch={branch};rport\r\nFrom: <sip:probe@{from_ip}>;tag=p1\r\nTo: <sip:probe@{sip}>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: {user_agent}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        sip = app.sip_addr()
    );
    sock.send_to(msg.as_bytes(), app.sip_addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 4096];
    sock.recv_from(&mut buf).ok().map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn a_caller_outside_the_acl_with_a_wrong_password_never_reaches_an_agent() {
    require_tools(&["sipp"]);
    let app = start();
    // From 127.0.0.2 (not in the ACL; auth is configured, so a stranger is challenged) with a wrong
    // password: 401, then 401 again, and never a call.
    let wrong = run_sipp(
        app.dir(),
        &scenario("uac_auth.xml"),
        &app.sip_addr(),
        app.ports(),
        &["-i", "127.0.0.2", "-mi", "127.0.0.2", "-s", "1000", "-au", "trunk", "-ap", "guess"],
        Duration::from_secs(20),
    );
    assert_eq!(wrong.failed, 0, "the refusal path of the scenario ran: {}", wrong.report());
    assert_eq!(calls_taken(&app), 0.0, "no call reached an agent");
    assert!(!app.log().contains("incoming call"), "{}", app.log_tail(20));
    assert_eq!(app.metric_value("switchboard_sip_refused_total{reason=\"auth_failed\"}"), Some(1.0));
    assert_eq!(app.metric_value("switchboard_sip_refused_total{reason=\"auth_challenge\"}"), Some(2.0));
    // From the allowed address the same call is answered without credentials.
    let insider = run_sipp(
        app.dir(),
        std::path::Path::new("uac"),
        &app.sip_addr(),
        app.ports(),
        &["-s", "1000", "-d", "500"],
        Duration::from_secs(20),
    );
    assert_eq!((insider.successful, insider.failed), (1, 0), "{}", insider.report());
    assert_eq!(calls_taken(&app), 1.0);
}

#[test]
fn a_call_from_outside_the_acl_gets_403_and_never_reaches_an_agent() {
    require_tools(&["sipp"]);
    let app = Appliance::start("security:\n  allow: [127.0.0.1]\nroutes:\n  - match: \"*\"\n    agent: quiet\nagents:\n  quiet:\n    mode: silent\n", &alloc_ports());
    let cap = Capture::start(app.dir(), &format!("udp and port {}", app.ports().sip));
    let stranger = run_sipp(
        app.dir(),
        std::path::Path::new("uac"),
        &app.sip_addr(),
        app.ports(),
        &["-i", "127.0.0.2", "-mi", "127.0.0.2", "-s", "1000"],
        Duration::from_secs(20),
    );
    let sip = common::capture::sip_messages(&cap.stop());
    assert_eq!(stranger.successful, 0, "{}", stranger.report());
    let answers: Vec<&str> = sip
        .iter()
        .filter(|(_, src, _, _)| src.port() == app.ports().sip)
        .map(|(_, _, _, m)| m.lines().next().unwrap_or(""))
        .collect();
    assert!(
        !answers.is_empty() && answers.iter().all(|l| l.starts_with("SIP/2.0 403")),
        "only 403 answers: {answers:?}"
    );
    assert_eq!(calls_taken(&app), 0.0);
    assert_eq!(app.metric_value("switchboard_sip_refused_total{reason=\"acl\"}"), Some(1.0));
}

#[test]
fn digest_authenticated_inbound_works_with_sipp() {
    require_tools(&["sipp"]);
    let app = start();
    let run = run_sipp(
        app.dir(),
        &scenario("uac_auth.xml"),
        &app.sip_addr(),
        app.ports(),
        &["-i", "127.0.0.2", "-mi", "127.0.0.2", "-s", "1000", "-au", "trunk", "-ap", PASSWORD],
        Duration::from_secs(20),
    );
    assert_eq!((run.successful, run.failed), (1, 0), "{}\n{}", run.report(), app.log_tail(20));
    assert_eq!(calls_taken(&app), 1.0, "the authenticated call reached the agent");
    assert_eq!(app.metric_value("switchboard_sip_refused_total{reason=\"auth_failed\"}"), None);
    assert_eq!(app.metric_value("switchboard_sip_refused_total{reason=\"auth_challenge\"}"), Some(1.0));
}

#[test]
fn scanners_get_no_answer_and_flooding_sources_are_blocked() {
    let app = start();
    // A scanner: nothing comes back, and afterwards nothing from that address is answered.
    let scanner = UdpSocket::bind("127.0.0.3:0").unwrap();
    assert_eq!(options("127.0.0.3", &scanner, &app, "z9hG4bKscan1", "friendly-scanner"), None);
    assert_eq!(options("127.0.0.3", &scanner, &app, "z9hG4bKscan2", "Linphone/5.2"), None);
    assert_eq!(app.metric_value("switchboard_sip_blocks_total{reason=\"scanner\"}"), Some(1.0));
    // A stranger with an ordinary user agent is answered 403 ...
    let flooder = UdpSocket::bind("127.0.0.4:0").unwrap();
    let first = options("127.0.0.4", &flooder, &app, "z9hG4bKf0", "Linphone/5.2").expect("an answer");
    assert!(first.starts_with("SIP/2.0 403"), "{first}");
    // ... until it goes over its rate (burst 20): then it is ignored.
    let port = flooder.local_addr().unwrap().port();
    for i in 1..200 {
        let msg = format!("OPTIONS sip:probe@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.4:{port};branch=z9hG4bKf{i}\r\nFrom: <sip:p@127.0.0.4>;tag=f\r\nTo: <sip:probe@{sip}>\r\nCall-ID: f{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", sip = app.sip_addr());
        flooder.send_to(msg.as_bytes(), app.sip_addr()).unwrap();
    }
    flooder.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut answers = 0;
    let mut buf = [0u8; 4096];
    while flooder.recv_from(&mut buf).is_ok() {
        answers += 1;
    }
    assert!((15..=25).contains(&answers), "about the burst is answered, then nothing: {answers}");
    assert_eq!(options("127.0.0.4", &flooder, &app, "z9hG4bKlater", "Linphone/5.2"), None, "still blocked");
    assert_eq!(app.metric_value("switchboard_sip_blocks_total{reason=\"rate\"}"), Some(1.0));
    assert!(app.log().contains("SIP source over its message rate: blocked"));
    // The trusted address is never limited.
    let insider = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..60 {
        let a = options("127.0.0.1", &insider, &app, &format!("z9hG4bKin{i}"), "Linphone/5.2").expect("answered");
        assert!(a.starts_with("SIP/2.0 200"), "{a}");
    }
}

#[test]
fn state_changing_admin_endpoints_require_the_generated_token() {
    let app = start();
    let token_path = app.dir().join("admin.token");
    assert!(
        wait_until(Duration::from_secs(5), || token_path.exists().then_some(())).is_some(),
        "the token file was generated"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777, 0o600);
    let token = app.admin_token().unwrap();
    assert_eq!(token.len(), 64);
    let body = Some(r#"{"to": "sip:bob@127.0.0.1:9", "agent": "nobody"}"#);
    let t = Duration::from_secs(5);
    let (code, text) = try_http_with(app.ports().http, "POST", "/calls", body, t, None).unwrap();
    assert_eq!(code, 401, "{text}");
    let (code, _) = try_http_with(app.ports().http, "POST", "/calls", body, t, Some("not-the-token-at-all")).unwrap();
    assert_eq!(code, 401);
    // With the token the request is judged on its merits (an unknown agent: 422).
    let (code, text) = try_http_with(app.ports().http, "POST", "/calls", body, t, Some(&token)).unwrap();
    assert_eq!(code, 422, "{text}");
    // Reading stays open on the (loopback) admin port.
    assert_eq!(app.http_get("/healthz").0, 200);
}
