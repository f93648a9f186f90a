//! Who may call and how much, at the endpoint (virtual time): ACLs per route, scanners,
//! inbound digest authentication, rate-limit blocks, call limits and the transaction cap.

use super::tests::{cfg, invite, SDP};
use super::*;
use crate::sip::digest::{authorize, Challenge, Credentials};
use crate::sip::guard::{GuardConfig, InboundAuth, LimitConfig};
use crate::sip::message::SipMessage;

fn from(ip: &str) -> Source {
    Source {
        transport: Transport::Udp,
        addr: format!("{ip}:5062").parse().unwrap(),
        conn: None,
        local: "10.0.0.1:5060".parse().unwrap(),
    }
}

struct T {
    ep: Endpoint,
    now: Instant,
}

impl T {
    fn with(edit: impl FnOnce(&mut EndpointConfig)) -> T {
        let mut c = cfg();
        c.guard = GuardConfig { allow: vec!["10.0.0.0/24".parse().unwrap()], ..GuardConfig::open() };
        edit(&mut c);
        let now = Instant::now();
        T { ep: Endpoint::new(c, 1, now), now }
    }
    fn feed_from(&mut self, ip: &str, text: &str) -> Vec<SipMessage> {
        self.ep.handle_message(text.as_bytes(), from(ip), self.now);
        std::iter::from_fn(|| self.ep.poll_transmit()).map(|t| SipMessage::parse(&t.data).unwrap()).collect()
    }
    fn incoming(&mut self) -> usize {
        std::iter::from_fn(|| self.ep.poll_event()).filter(|e| matches!(e, Event::Incoming(_))).count()
    }
}

fn code(m: &SipMessage) -> u16 {
    match m.start {
        StartLine::Response { code, .. } => code,
        _ => 0,
    }
}

fn options(branch: &str, extra: &str) -> String {
    format!("OPTIONS sip:1000@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5062;branch={branch}\r\nFrom: <sip:x@198.51.100.7>;tag=o1\r\nTo: <sip:1000@10.0.0.1>\r\nCall-ID: o-{branch}\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n")
}

#[test]
fn a_call_from_outside_the_acl_gets_403_and_never_reaches_an_agent() {
    let mut t = T::with(|_| {});
    let r = t.feed_from("198.51.100.7", &invite("1000", "z9hG4bKx1", "", SDP));
    assert_eq!(r.iter().map(code).collect::<Vec<_>>(), vec![403]);
    assert_eq!(t.incoming(), 0);
    // OPTIONS too: a stranger learns nothing.
    assert_eq!(t.feed_from("198.51.100.7", &options("z9hG4bKo1", "")).iter().map(code).collect::<Vec<_>>(), vec![403]);
    assert_eq!(t.ep.stats().guard.acl_rejected, 2);
    // From inside: answered.
    let r = t.feed_from("10.0.0.5", &invite("1000", "z9hG4bKx2", "", SDP));
    assert_eq!(r.iter().map(code).collect::<Vec<_>>(), vec![100]);
    assert_eq!(t.incoming(), 1);
}

#[test]
fn a_routes_own_list_replaces_the_global_one() {
    let mut t = T::with(|c| c.guard.route_allow = vec![Some(vec!["203.0.113.5".parse().unwrap()]), None]);
    // Route 0 ("1000") takes only 203.0.113.5, even from the globally allowed 10.0.0.5.
    assert_eq!(code(&t.feed_from("10.0.0.5", &invite("1000", "z9hG4bKr1", "", SDP))[0]), 403);
    assert_eq!(code(&t.feed_from("203.0.113.5", &invite("1000", "z9hG4bKr2", "", SDP))[0]), 100);
    // Route 1 ("2*") follows the global list.
    assert_eq!(code(&t.feed_from("10.0.0.5", &invite("2001", "z9hG4bKr3", "", SDP))[0]), 100);
    assert_eq!(code(&t.feed_from("203.0.113.5", &invite("2001", "z9hG4bKr4", "", SDP))[0]), 403);
    assert_eq!(t.incoming(), 2);
}

#[test]
fn scanners_get_no_answer_and_their_source_is_ignored_afterwards() {
    let mut t = T::with(|_| {});
    assert!(t.feed_from("198.51.100.7", &options("z9hG4bKs1", "User-Agent: friendly-scanner\r\n")).is_empty());
    // Blocked: even a plain OPTIONS gets nothing now (not even the 403).
    assert!(t.feed_from("198.51.100.7", &options("z9hG4bKs2", "")).is_empty());
    let s = t.ep.stats().guard;
    assert_eq!((s.scanners, s.scanner_blocks, s.blocked_dropped), (1, 1, 1));
}

#[test]
fn a_flooding_untrusted_source_is_blocked_and_a_trusted_one_is_not() {
    let mut t =
        T::with(|c| c.guard.limits = LimitConfig { requests_per_s: 10.0, burst: 20.0, ..LimitConfig::default() });
    let mut answered = 0;
    for i in 0..100 {
        answered += t.feed_from("198.51.100.7", &options(&format!("z9hG4bKf{i}"), "")).len();
    }
    assert_eq!(answered, 20, "the burst is answered (403), then nothing");
    assert_eq!(t.ep.stats().guard.rate_blocks, 1);
    assert_eq!(t.ep.blocked_sources(t.now), 1);
    for i in 0..100 {
        let text = options(&format!("z9hG4bKt{i}"), "").replace("198.51.100.7", "10.0.0.5");
        assert_eq!(t.feed_from("10.0.0.5", &text).len(), 1);
    }
    assert_eq!(t.ep.blocked_sources(t.now), 1);
}

fn auth_cfg(c: &mut EndpointConfig) {
    c.guard.auth = Some(InboundAuth {
        realm: "switchboard".into(),
        users: [("trunk".to_string(), "pa55word".to_string())].into(),
        for_trusted: false,
    });
}

#[test]
fn an_outside_caller_may_call_after_digest_authentication() {
    let mut t = T::with(auth_cfg);
    let r = t.feed_from("198.51.100.7", &invite("1000", "z9hG4bKa1", "", SDP));
    assert_eq!(code(&r[0]), 401);
    let challenge = r[0].headers.get("WWW-Authenticate").expect("a challenge").to_string();
    assert_eq!(t.incoming(), 0);
    let c = Challenge::parse(&challenge).unwrap();
    // A wrong password: challenged again, no call.
    let bad =
        authorize(&c, &Credentials { username: "trunk", password: "nope" }, "INVITE", "sip:1000@10.0.0.1", 1, "c1");
    let r = t.feed_from("198.51.100.7", &invite("1000", "z9hG4bKa2", &format!("Authorization: {bad}\r\n"), SDP));
    assert_eq!(code(&r[0]), 401);
    assert_eq!(t.incoming(), 0);
    // The right one: the call goes through.
    let good =
        authorize(&c, &Credentials { username: "trunk", password: "pa55word" }, "INVITE", "sip:1000@10.0.0.1", 1, "c2");
    let r = t.feed_from("198.51.100.7", &invite("1000", "z9hG4bKa3", &format!("Authorization: {good}\r\n"), SDP));
    assert_eq!(code(&r[0]), 100);
    assert_eq!(t.incoming(), 1);
    // An allowed source needs no credentials (for_trusted is off).
    assert_eq!(code(&t.feed_from("10.0.0.5", &invite("1000", "z9hG4bKa4", "", SDP))[0]), 100);
    let s = t.ep.stats().guard;
    assert_eq!((s.auth_ok, s.auth_failures), (1, 1));
}

/// An outbound call for agent `support`, straight to 10.0.0.9.
fn dial_bob() -> DialSpec {
    DialSpec {
        target: "sip:bob@10.0.0.9".into(),
        account: None,
        next_hop: Some("10.0.0.9:5060".parse().unwrap()),
        local: Some("10.0.0.1:5060".parse().unwrap()),
        transport: Transport::Udp,
        rtp_port: 30000,
        ring_timeout: Duration::from_secs(30),
        agent: "support".into(),
        call_id: None,
    }
}

#[test]
fn calls_beyond_the_limits_get_503_with_retry_after() {
    let mut t = T::with(|c| {
        c.max_calls = 3;
        c.agent_max_calls = [("sales".to_string(), 2)].into();
        c.retry_after_s = 7;
    });
    assert_eq!(code(&t.feed_from("10.0.0.5", &invite("1000", "z9hG4bKl1", "", SDP))[0]), 100);
    assert_eq!(code(&t.feed_from("10.0.0.5", &invite("1000", "z9hG4bKl2", "", SDP))[0]), 100);
    // The third call for `sales` is over its agent's limit.
    let r = t.feed_from("10.0.0.5", &invite("1000", "z9hG4bKl3", "", SDP));
    assert_eq!(code(&r[0]), 503);
    assert_eq!(r[0].headers.get("Retry-After"), Some("7"));
    // Another agent still has room, up to the appliance's limit of 3.
    assert_eq!(code(&t.feed_from("10.0.0.5", &invite("2001", "z9hG4bKl4", "", SDP))[0]), 100);
    assert_eq!(code(&t.feed_from("10.0.0.5", &invite("2002", "z9hG4bKl5", "", SDP))[0]), 503);
    assert_eq!(t.incoming(), 3);
    assert_eq!(t.ep.stats().call_limit, 2);
    // An outbound call is refused too, with the reason.
    let err = t.ep.dial(dial_bob(), t.now).expect_err("refused");
    assert!(err.contains("limit of 3 calls"), "{err}");
}

#[test]
fn saturated_models_refuse_new_calls_with_503_until_they_keep_up() {
    let mut t = T::with(|c| c.retry_after_s = 4);
    let why = "the models are saturated: a job has waited 2400 ms for llm.qwen (calls.max_queue_wait_ms: 2000)";
    t.ep.set_overloaded(Some(why.into()));
    let r = t.feed_from("10.0.0.5", &invite("1000", "z9hG4bKs1", "", SDP));
    assert_eq!(code(&r[0]), 503);
    assert_eq!(r[0].headers.get("Retry-After"), Some("4"));
    assert!(
        matches!(&r[0].start, StartLine::Response { reason, .. } if reason == "Service Unavailable (models saturated)"),
        "{:?}",
        r[0].start
    );
    assert_eq!((t.incoming(), t.ep.stats().models_busy, t.ep.stats().call_limit), (0, 1, 0));
    assert_eq!(t.ep.dial(dial_bob(), t.now).err().as_deref(), Some(why), "a campaign's dial waits too");
    t.ep.set_overloaded(None);
    assert_eq!(code(&t.feed_from("10.0.0.5", &invite("1000", "z9hG4bKs2", "", SDP))[0]), 100);
    assert_eq!(t.incoming(), 1);
}

#[test]
fn a_full_transaction_table_answers_statelessly_and_stays_bounded() {
    let mut t = T::with(|c| {
        c.max_transactions = 50;
        c.max_calls = 1;
    });
    let mut codes = std::collections::BTreeMap::new();
    for i in 0..500 {
        for m in t.feed_from("10.0.0.5", &invite("1000", &format!("z9hG4bKo{i}"), "", SDP)) {
            *codes.entry(code(&m)).or_insert(0) += 1;
        }
        assert!(t.ep.server_txs.len() <= 50);
    }
    // One call, 49 transactions refused by the call limit, the rest stateless.
    assert_eq!(codes.get(&100), Some(&1));
    assert_eq!(codes.get(&503), Some(&499), "{codes:?}");
    assert_eq!(t.ep.stats().overload, 450);
    // Once the transactions expire (T4 after their ACK, or 64*T1), new calls are served again.
    t.now += Duration::from_secs(40);
    t.ep.handle_timeout(t.now);
    assert!(t.ep.server_txs.len() < 5, "{}", t.ep.server_txs.len());
}

#[test]
fn an_accounts_registrar_may_send_keepalives_and_the_accounts_calls() {
    let mut t = T::with(|_| {});
    let spec = AccountSpec {
        name: "pbx".into(),
        domain: "pbx.example".into(),
        username: "agent7".into(),
        auth_username: "agent7".into(),
        password: "x".into(),
        next_hop: "203.0.113.9:5060".parse().unwrap(),
        local: "10.0.0.1:5060".parse().unwrap(),
        transport: Transport::Udp,
        register: false,
        expires_s: 300,
        agent: Some("support".into()),
        caller_id: "agent7".into(),
    };
    t.ep.add_account(spec, t.now);
    // The registrar's OPTIONS (Asterisk's qualify) is answered, not refused.
    let r = t.feed_from("203.0.113.9", &options("z9hG4bKq1", "").replace("198.51.100.7", "203.0.113.9"));
    assert_eq!(r.iter().map(code).collect::<Vec<_>>(), vec![200]);
    // A call to the account's Contact from the registrar reaches the account's agent.
    let r = t.feed_from("203.0.113.9", &invite("agent7", "z9hG4bKacc1", "", SDP));
    assert_eq!(code(&r[0]), 100);
    assert_eq!(t.incoming(), 1);
    // The same call from anywhere else is a stranger's.
    assert_eq!(code(&t.feed_from("198.51.100.7", &invite("agent7", "z9hG4bKacc2", "", SDP))[0]), 403);
}
