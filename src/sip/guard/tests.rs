use super::*;
use crate::sip::digest::{authorize, Challenge, Credentials};

const SECRET: [u8; 32] = [7; 32];

fn invite(extra: &str) -> SipMessage {
    let text = format!(
        "INVITE sip:1000@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1\r\nFrom: <sip:a@198.51.100.7>;tag=1\r\nTo: <sip:1000@192.0.2.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    SipMessage::parse(text.as_bytes()).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn with_auth() -> GuardConfig {
    GuardConfig {
        allow: vec!["10.0.0.0/8".parse().unwrap()],
        auth: Some(InboundAuth {
            realm: "switchboard".into(),
            users: [("pbx".to_string(), "s3cret".to_string())].into(),
            for_trusted: false,
        }),
        limits: LimitConfig { max_failed_auth: 3, ..LimitConfig::default() },
        ..GuardConfig::open()
    }
}

fn answer(challenge: &str, user: &str, password: &str) -> String {
    let c = Challenge::parse(challenge).unwrap();
    let a = authorize(&c, &Credentials { username: user, password }, "INVITE", "sip:1000@192.0.2.1", 1, "abcdef");
    // authorize gives the header value.
    a
}

#[test]
fn scanners_are_dropped_and_blocked_but_ordinary_agents_pass() {
    let now = Instant::now();
    let mut g = Guard::new(with_auth(), SECRET, now);
    let scanner = ip("198.51.100.7");
    assert!(!g.screen_scanner(&invite("User-Agent: Linphone/5.2\r\n"), scanner, now));
    assert!(!g.screen_scanner(&invite(""), scanner, now));
    assert!(g.admit_datagram(scanner, now));
    assert!(g.screen_scanner(&invite("User-Agent: friendly-scanner\r\n"), scanner, now));
    assert!(g.screen_scanner(&invite("User-Agent: SIPCLI/v1.8\r\n"), ip("198.51.100.8"), now));
    // Blocked from now: even an innocent-looking datagram is dropped.
    assert!(!g.admit_datagram(scanner, now + Duration::from_secs(1)));
    let s = g.stats();
    assert_eq!((s.scanners, s.scanner_blocks, s.blocked_dropped), (2, 2, 1));
    // A trusted source is never blocked, even with a scanner's name.
    assert!(g.screen_scanner(&invite("User-Agent: friendly-scanner\r\n"), ip("10.1.1.1"), now));
    assert!(g.admit_datagram(ip("10.1.1.1"), now));
}

#[test]
fn digest_authentication_accepts_the_right_password_on_our_nonce_only() {
    let now = Instant::now();
    let mut g = Guard::new(with_auth(), SECRET, now);
    let caller = ip("198.51.100.7");
    assert!(g.needs_auth(false) && !g.needs_auth(true));
    let AuthVerdict::Challenge(ch) = g.authenticate(&invite(""), caller, now) else { panic!("no challenge") };
    assert!(ch.contains("realm=\"switchboard\"") && ch.contains("qop=\"auth\"") && !ch.contains("stale"), "{ch}");

    let good = answer(&ch, "pbx", "s3cret");
    assert_eq!(
        g.authenticate(&invite(&format!("Authorization: {good}\r\n")), caller, now),
        AuthVerdict::User("pbx".into())
    );
    // The same answer from another address: the nonce was bound to the first one.
    assert!(matches!(
        g.authenticate(&invite(&format!("Authorization: {good}\r\n")), ip("198.51.100.9"), now),
        AuthVerdict::Challenge(_)
    ));
    // A wrong password, an unknown user, a nonce we never issued.
    let bad = answer(&ch, "pbx", "guess");
    assert!(matches!(
        g.authenticate(&invite(&format!("Authorization: {bad}\r\n")), caller, now),
        AuthVerdict::Challenge(_)
    ));
    let stranger = answer(&ch, "root", "s3cret");
    assert!(matches!(
        g.authenticate(&invite(&format!("Authorization: {stranger}\r\n")), caller, now),
        AuthVerdict::Challenge(_)
    ));
    let forged =
        answer(&ch.replace(ch.split('"').nth(3).unwrap(), "0.00112233445566778899aabbccddeeff"), "pbx", "s3cret");
    assert!(matches!(
        g.authenticate(&invite(&format!("Authorization: {forged}\r\n")), caller, now),
        AuthVerdict::Challenge(_)
    ));
    assert_eq!(g.stats().auth_ok, 1);
    assert_eq!(g.stats().auth_failures, 4);
}

#[test]
fn an_expired_nonce_with_the_right_password_is_challenged_as_stale() {
    let now = Instant::now();
    let mut g = Guard::new(with_auth(), SECRET, now);
    let caller = ip("198.51.100.7");
    let AuthVerdict::Challenge(ch) = g.authenticate(&invite(""), caller, now) else { panic!() };
    let good = answer(&ch, "pbx", "s3cret");
    let later = now + Duration::from_secs(301);
    let AuthVerdict::Challenge(again) = g.authenticate(&invite(&format!("Authorization: {good}\r\n")), caller, later)
    else {
        panic!("stale nonce accepted")
    };
    assert!(again.contains("stale=true"), "{again}");
    assert_eq!(g.stats().auth_failures, 0, "a stale nonce is not a failure");
}

#[test]
fn repeated_failures_block_an_untrusted_source() {
    let now = Instant::now();
    let mut g = Guard::new(with_auth(), SECRET, now);
    let caller = ip("198.51.100.7");
    let AuthVerdict::Challenge(ch) = g.authenticate(&invite(""), caller, now) else { panic!() };
    let bad = answer(&ch, "pbx", "guess");
    for _ in 0..3 {
        assert!(g.admit_datagram(caller, now));
        g.authenticate(&invite(&format!("Authorization: {bad}\r\n")), caller, now);
    }
    assert_eq!(g.stats().auth_blocks, 1);
    assert!(!g.admit_datagram(caller, now + Duration::from_secs(599)));
    assert!(g.admit_datagram(caller, now + Duration::from_secs(601)));
}

#[test]
fn route_lists_replace_the_global_list_and_an_accounts_registrar_is_trusted_for_its_calls() {
    let cfg = GuardConfig {
        allow: vec!["10.0.0.0/8".parse().unwrap()],
        route_allow: vec![None, Some(vec!["203.0.113.5".parse().unwrap()])],
        ..GuardConfig::open()
    };
    let g = Guard::new(cfg, SECRET, Instant::now());
    assert!(g.call_allowed(ip("10.2.3.4"), Some(0), None));
    assert!(!g.call_allowed(ip("198.51.100.7"), Some(0), None));
    assert!(g.call_allowed(ip("203.0.113.5"), Some(1), None));
    assert!(!g.call_allowed(ip("10.2.3.4"), Some(1), None), "the route's own list replaces the global one");
    assert!(g.call_allowed(ip("198.51.100.7"), None, Some(ip("198.51.100.7"))));
    assert!(!g.call_allowed(ip("198.51.100.8"), None, Some(ip("198.51.100.7"))));
}
