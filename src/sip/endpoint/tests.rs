//! The endpoint in virtual time: every test feeds SIP text and reads what it
//! would send, with `now` advanced by hand.

use super::*;
use crate::sip::message::SipMessage;
use std::net::SocketAddr;

const PEER: &str = "10.0.0.5:5062";
const LOCAL: &str = "10.0.0.1:5060";

pub(super) fn cfg() -> EndpointConfig {
    EndpointConfig {
        t1: Duration::from_millis(500),
        t2: Duration::from_secs(4),
        t4: Duration::from_secs(5),
        user_agent: "switchboard-test".into(),
        advertised: None,
        media_advertised: Some("192.0.2.1".parse().unwrap()),
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        ptime_ms: 20,
        routes: vec![("1000".into(), "sales".into()), ("2*".into(), "support".into())],
        guard: crate::sip::guard::GuardConfig::open(),
        max_calls: 0,
        agent_max_calls: Default::default(),
        retry_after_s: 10,
        max_transactions: crate::sip::endpoint::MAX_TRANSACTIONS,
    }
}

fn src(transport: Transport) -> Source {
    Source {
        transport,
        addr: PEER.parse().unwrap(),
        conn: (transport == Transport::Tcp).then_some(ConnId(7)),
        local: LOCAL.parse().unwrap(),
    }
}

pub(super) const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

pub(super) fn invite(user: &str, branch: &str, extra: &str, body: &str) -> String {
    format!(
        "INVITE sip:{user}@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch={branch};rport\r\nMax-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@10.0.0.5>;tag=a1\r\nTo: <sip:{user}@10.0.0.1>\r\nCall-ID: call-{branch}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:alice@10.0.0.5:5062>\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

struct T {
    ep: Endpoint,
    now: Instant,
}

impl T {
    fn new() -> T {
        let now = Instant::now();
        T { ep: Endpoint::new(cfg(), 1, now), now }
    }
    fn feed(&mut self, text: &str, transport: Transport) {
        self.ep.handle_message(text.as_bytes(), src(transport), self.now);
    }
    fn sent(&mut self) -> Vec<(Transmit, SipMessage)> {
        std::iter::from_fn(|| self.ep.poll_transmit())
            .map(|t| {
                let m = SipMessage::parse(&t.data).expect("we send parseable SIP");
                (t, m)
            })
            .collect()
    }
    fn codes(&mut self) -> Vec<u16> {
        self.sent()
            .into_iter()
            .filter_map(|(_, m)| match m.start {
                StartLine::Response { code, .. } => Some(code),
                _ => None,
            })
            .collect()
    }
    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ep.poll_event()).collect()
    }
    fn advance(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        // Step through every timer in between, like the driver would.
        while let Some(t) = self.ep.poll_timeout().filter(|&t| t <= end) {
            self.now = t.max(self.now);
            self.ep.handle_timeout(self.now);
        }
        self.now = end;
    }
    /// INVITE to 1000, answered; returns the call key and the 200 OK.
    fn answered_call(&mut self, transport: Transport) -> (CallKey, SipMessage) {
        self.feed(&invite("1000", "z9hG4bKinv1", "Record-Route: <sip:proxy.example;lr>\r\n", SDP), transport);
        let key = match self.events().pop() {
            Some(Event::Incoming(ic)) => ic.key,
            e => panic!("{e:?}"),
        };
        self.sent();
        self.ep.answer(key, 30000, self.now);
        let ok = self.sent().pop().unwrap().1;
        (key, ok)
    }
}

fn ack_for(ok: &SipMessage) -> String {
    format!(
        "ACK sip:switchboard@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKack1\r\nFrom: \"Alice\" <sip:alice@10.0.0.5>;tag=a1\r\n\
To: {}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        ok.headers.get("To").unwrap(),
        ok.call_id().unwrap()
    )
}

#[test]
fn invite_trying_ringing_ok_ack() {
    let mut t = T::new();
    t.feed(&invite("1000", "z9hG4bKinv1", "", SDP), Transport::Udp);
    let sent = t.sent();
    assert_eq!(sent.len(), 1);
    let (tx, trying) = &sent[0];
    assert!(matches!(trying.start, StartLine::Response { code: 100, .. }));
    // rport is filled and responses go back to the source port.
    let via = trying.top_via().unwrap();
    assert_eq!(via.param("rport"), Some(Some("5062")));
    assert_eq!(tx.target, Target::Addr(PEER.parse().unwrap()));
    let ic = match t.events().as_slice() {
        [Event::Incoming(ic)] => ic.clone(),
        e => panic!("{e:?}"),
    };
    assert_eq!((ic.called.as_str(), ic.agent.as_str()), ("1000", "sales"));
    assert_eq!(ic.negotiated.remote_rtp, Some("10.0.0.5:4000".parse().unwrap()));

    t.ep.ring(ic.key, t.now);
    let ringing = t.sent().pop().unwrap().1;
    let tag = ringing.to().unwrap().tag().unwrap().to_string();
    assert!(ringing.contact().is_some());
    t.ep.answer(ic.key, 30000, t.now);
    let ok = t.sent().pop().unwrap().1;
    assert!(matches!(ok.start, StartLine::Response { code: 200, .. }));
    assert_eq!(ok.to().unwrap().tag(), Some(tag.as_str()), "one To tag for the whole dialog");
    let body = String::from_utf8(ok.body.clone()).unwrap();
    assert!(body.contains("c=IN IP4 192.0.2.1\r\n"), "advertised media address: {body}");
    assert!(body.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{body}");
    assert_eq!(ok.contact().unwrap().uri.host, "10.0.0.1");

    // 200 retransmitted at T1, 2T1, 4T1 until the ACK.
    t.advance(500);
    assert_eq!(t.codes(), vec![200]);
    t.advance(1000);
    assert_eq!(t.codes(), vec![200]);
    t.feed(&ack_for(&ok), Transport::Udp);
    assert_eq!(t.events(), vec![Event::Confirmed { key: ic.key }]);
    t.advance(10_000);
    assert!(t.codes().is_empty(), "no retransmission after ACK");
}

#[test]
fn ok_retransmits_double_up_to_t2_then_bye_after_64_t1() {
    let mut t = T::new();
    let (key, _ok) = t.answered_call(Transport::Udp);
    let mut times = Vec::new();
    let mut bye_times = Vec::new();
    let start = t.now;
    for _ in 0..40_000 / 50 {
        t.advance(50);
        for (_, m) in t.sent() {
            match m.start {
                StartLine::Response { code: 200, .. } => times.push((t.now - start).as_millis()),
                StartLine::Request { method: Method::Bye, .. } => {
                    bye_times.push((t.now - start).as_millis());
                    // The route set from Record-Route is used.
                    assert_eq!(m.headers.get("Route"), Some("<sip:proxy.example;lr>"));
                    assert!(m.headers.get("Reason").unwrap().contains("no ACK"));
                }
                _ => {}
            }
        }
    }
    assert_eq!(&times[..6], &[500, 1500, 3500, 7500, 11500, 15500], "T1, 2T1, 4T1, then every T2");
    assert_eq!(*times.last().unwrap(), 31_500, "no 200 after giving up");
    assert_eq!(&bye_times[..3], &[32_000, 32_500, 33_500], "BYE at 64*T1, then retransmitted (Timer E)");
    assert!(t.events().contains(&Event::Ended {
        key,
        call_id: "call-z9hG4bKinv1".into(),
        reason: EndReason::AckTimeout
    }));
}

#[test]
fn tcp_does_not_retransmit_but_still_gives_up() {
    let mut t = T::new();
    let (key, _) = t.answered_call(Transport::Tcp);
    t.advance(31_000);
    assert!(t.codes().is_empty());
    t.advance(1_100);
    let sent = t.sent();
    assert!(sent.iter().any(|(tx, m)| m.method() == Some(&Method::Bye) && tx.transport == Transport::Tcp));
    assert!(matches!(t.events().last(), Some(Event::Ended { key: k, reason: EndReason::AckTimeout, .. }) if *k == key));
}

#[test]
fn cancel_before_answer_gives_487() {
    let mut t = T::new();
    t.feed(&invite("1000", "z9hG4bKc1", "", SDP), Transport::Udp);
    let key = match t.events().pop() {
        Some(Event::Incoming(ic)) => ic.key,
        e => panic!("{e:?}"),
    };
    t.ep.ring(key, t.now);
    t.sent();
    let cancel = "CANCEL sip:1000@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKc1;rport\r\nFrom: \"Alice\" <sip:alice@10.0.0.5>;tag=a1\r\nTo: <sip:1000@10.0.0.1>\r\nCall-ID: call-z9hG4bKc1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    t.feed(cancel, Transport::Udp);
    let sent = t.sent();
    let codes: Vec<(u16, String)> = sent
        .iter()
        .map(|(_, m)| match &m.start {
            StartLine::Response { code, .. } => (*code, m.cseq().unwrap().method.as_str().to_string()),
            _ => panic!(),
        })
        .collect();
    assert_eq!(codes, vec![(200, "CANCEL".into()), (487, "INVITE".into())]);
    assert!(matches!(t.events().as_slice(), [Event::Ended { reason: EndReason::Cancelled, .. }]));
    // The 487 is retransmitted until its ACK (same branch as the INVITE).
    t.advance(500);
    assert_eq!(t.codes(), vec![487]);
    let ack = "ACK sip:1000@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKc1;rport\r\nFrom: <sip:alice@10.0.0.5>;tag=a1\r\nTo: <sip:1000@10.0.0.1>;tag=x\r\nCall-ID: call-z9hG4bKc1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
    t.feed(ack, Transport::Udp);
    t.advance(5000);
    assert!(t.codes().is_empty());
    // A CANCEL for an unknown transaction.
    t.feed(&cancel.replace("z9hG4bKc1", "z9hG4bKzz"), Transport::Udp);
    assert_eq!(t.codes(), vec![481]);
}

#[test]
fn options_404_405_488_400() {
    let mut t = T::new();
    let opt = "OPTIONS sip:1000@10.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKo1\r\nf: <sip:mon@10.0.0.5>;tag=m\r\nt: <sip:1000@10.0.0.1>\r\ni: opt1\r\nCSeq: 5 OPTIONS\r\nl: 0\r\n\r\n";
    t.feed(opt, Transport::Udp);
    let (tx, m) = t.sent().pop().unwrap();
    assert!(matches!(m.start, StartLine::Response { code: 200, .. }));
    assert_eq!(m.headers.get_all("Allow").collect::<Vec<_>>().join(", "), ALLOW);
    assert_eq!(m.headers.get("Accept"), Some("application/sdp"));
    assert!(m.headers.get("Supported").is_some());
    // No rport: reply to the Via port at the source IP, and add received only if the host differs.
    assert_eq!(tx.target, Target::Addr("10.0.0.5:5062".parse().unwrap()));
    assert_eq!(m.top_via().unwrap().param("received"), None);

    t.feed(&invite("9999", "z9hG4bKn1", "", SDP), Transport::Udp);
    assert_eq!(t.codes(), vec![404]);
    assert!(t.events().is_empty());

    let sub = opt
        .replace("OPTIONS sip", "SUBSCRIBE sip")
        .replace("5 OPTIONS", "5 SUBSCRIBE")
        .replace("z9hG4bKo1", "z9hG4bKs1");
    t.feed(&sub, Transport::Udp);
    let m = t.sent().pop().unwrap().1;
    assert!(matches!(m.start, StartLine::Response { code: 405, .. }));
    assert!(m.headers.get("Allow").is_some());

    let g729 = SDP
        .replace("RTP/AVP 0 101", "RTP/AVP 18")
        .replace("a=rtpmap:101 telephone-event/8000\r\n", "a=rtpmap:18 G729/8000\r\n");
    t.feed(&invite("1000", "z9hG4bKg1", "", &g729), Transport::Udp);
    let m = t.sent().pop().unwrap().1;
    assert!(matches!(&m.start, StartLine::Response { code: 488, reason } if reason.contains("G729")), "{:?}", m.start);

    let no_cseq = opt.replace("CSeq: 5 OPTIONS\r\n", "").replace("z9hG4bKo1", "z9hG4bKb1");
    t.feed(&no_cseq, Transport::Udp);
    let m = t.sent().pop().unwrap().1;
    assert!(matches!(&m.start, StartLine::Response { code: 400, reason } if reason.contains("CSeq")), "{:?}", m.start);

    // Unreadable garbage is dropped without a reply; the endpoint keeps working.
    t.feed("\u{1}\u{2}garbage", Transport::Udp);
    assert!(t.sent().is_empty());
    assert_eq!(t.ep.stats().malformed, 2);
}

#[test]
fn retransmitted_invite_is_absorbed() {
    let mut t = T::new();
    let inv = invite("1000", "z9hG4bKr1", "", SDP);
    t.feed(&inv, Transport::Udp);
    assert_eq!(t.events().len(), 1);
    assert_eq!(t.codes(), vec![100]);
    t.feed(&inv, Transport::Udp);
    assert_eq!(t.codes(), vec![100], "last provisional re-sent");
    assert!(t.events().is_empty(), "no second call");
}

#[test]
fn bye_from_peer_and_from_us() {
    let mut t = T::new();
    let (key, ok) = t.answered_call(Transport::Udp);
    t.feed(&ack_for(&ok), Transport::Udp);
    t.events();
    let bye =
        ack_for(&ok).replace("ACK sip", "BYE sip").replace("1 ACK", "2 BYE").replace("z9hG4bKack1", "z9hG4bKbye1");
    t.feed(&bye, Transport::Udp);
    assert_eq!(t.codes(), vec![200]);
    assert!(matches!(t.events().as_slice(), [Event::Ended { key: k, reason: EndReason::RemoteBye, .. }] if *k == key));
    // Retransmitted BYE: the same 200 again, no second end.
    t.feed(&bye, Transport::Udp);
    assert_eq!(t.codes(), vec![200]);
    assert!(t.events().is_empty());
    // BYE for a dialog we do not know.
    t.feed(&bye.replace("z9hG4bKbye1", "z9hG4bKbye2").replace("call-z9hG4bKinv1", "nope"), Transport::Udp);
    assert_eq!(t.codes(), vec![481]);

    let mut t = T::new();
    let (key, ok) = t.answered_call(Transport::Udp);
    t.feed(&ack_for(&ok), Transport::Udp);
    t.events();
    t.ep.hangup(key, "maximum call duration reached", t.now);
    let (tx, bye) = t.sent().pop().unwrap();
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(bye.request_uri().unwrap().to_string(), "sip:alice@10.0.0.5:5062", "to the remote target");
    assert_eq!(bye.headers.get("Route"), Some("<sip:proxy.example;lr>"));
    assert_eq!(tx.target, Target::Host("proxy.example".into(), 5060), "next hop is the loose route");
    assert_eq!(bye.from().unwrap().tag(), ok.to().unwrap().tag(), "From carries our tag");
    assert_eq!(bye.to().unwrap().tag(), Some("a1"));
    assert!(matches!(t.events().as_slice(), [Event::Ended { reason: EndReason::LocalHangup(_), .. }]));
    // Retransmitted until answered.
    t.advance(500);
    assert_eq!(t.sent().len(), 1);
    let branch = bye.top_via().unwrap().branch().unwrap().to_string();
    let resp = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        bye.headers.get("From").unwrap(), bye.headers.get("To").unwrap(), bye.call_id().unwrap()
    );
    t.feed(&resp, Transport::Udp);
    t.advance(10_000);
    assert!(t.sent().is_empty());
    assert!(t.ep.is_idle());
}

#[test]
fn reinvite_renegotiates_with_same_port() {
    let mut t = T::new();
    let (key, ok) = t.answered_call(Transport::Udp);
    t.feed(&ack_for(&ok), Transport::Udp);
    t.events();
    let hold = SDP.replace("c=IN IP4 10.0.0.5", "c=IN IP4 10.0.0.9").replace("m=audio 4000", "m=audio 4100")
        + "a=sendonly\r\n";
    let reinv = invite("1000", "z9hG4bKre1", "", &hold)
        .replace("To: <sip:1000@10.0.0.1>", &format!("To: {}", ok.headers.get("To").unwrap()))
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace("Call-ID: call-z9hG4bKre1", "Call-ID: call-z9hG4bKinv1");
    t.feed(&reinv, Transport::Udp);
    let m = t.sent().pop().unwrap().1;
    assert!(matches!(m.start, StartLine::Response { code: 200, .. }), "{:?}", m.start);
    let body = String::from_utf8(m.body).unwrap();
    assert!(body.contains("m=audio 30000 "), "same local port: {body}");
    assert!(body.contains("a=recvonly"), "{body}");
    assert!(body.contains("o=switchboard ") && body.contains(" 2 IN IP4"), "version bumped: {body}");
    match t.events().as_slice() {
        [Event::MediaChanged { key: k, negotiated }] => {
            assert_eq!(*k, key);
            assert_eq!(negotiated.remote_rtp, Some("10.0.0.9:4100".parse().unwrap()));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn draining_refuses_new_calls_with_retry_after() {
    let mut t = T::new();
    t.ep.set_draining(true);
    t.feed(&invite("1000", "z9hG4bKd1", "", SDP), Transport::Udp);
    let m = t.sent().pop().unwrap().1;
    assert!(matches!(m.start, StartLine::Response { code: 503, .. }));
    assert!(m.headers.get("Retry-After").is_some());
}

#[test]
fn received_is_added_when_sent_by_differs() {
    let mut t = T::new();
    let opt = "OPTIONS sip:1000@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKnat;rport\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: n1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    t.feed(opt, Transport::Udp);
    let (tx, m) = t.sent().pop().unwrap();
    let via = m.top_via().unwrap();
    assert_eq!(via.param("received"), Some(Some("10.0.0.5")));
    assert_eq!(via.param("rport"), Some(Some("5062")));
    assert_eq!(tx.target, Target::Addr(PEER.parse::<SocketAddr>().unwrap()));
}

#[test]
fn hangup_before_ack_waits_for_it_to_send_bye() {
    let mut t = T::new();
    let (key, ok) = t.answered_call(Transport::Udp);
    t.ep.hangup(key, "shutdown", t.now);
    // Media stops at once (Ended), but RFC 3261 §15 forbids the BYE before the ACK.
    assert!(matches!(t.events().as_slice(), [Event::Ended { reason: EndReason::LocalHangup(_), .. }]));
    assert!(t.sent().iter().all(|(_, m)| m.method() != Some(&Method::Bye)));
    t.feed(&ack_for(&ok), Transport::Udp);
    let sent = t.sent();
    let bye = sent.iter().find(|(_, m)| m.method() == Some(&Method::Bye)).expect("BYE once the ACK arrived");
    assert!(bye.1.headers.get("Reason").unwrap().contains("shutdown"));
    assert!(t.events().is_empty(), "no second Ended");
    // Without an ACK the BYE goes at the 64*T1 give-up instead, still with one Ended.
    let mut t = T::new();
    let (key, _) = t.answered_call(Transport::Udp);
    t.ep.hangup(key, "shutdown", t.now);
    assert_eq!(t.events().len(), 1);
    t.advance(31_000);
    assert!(t.sent().iter().all(|(_, m)| m.method() != Some(&Method::Bye)));
    t.advance(1_100);
    assert!(t.sent().iter().any(|(_, m)| m.method() == Some(&Method::Bye)));
    assert!(t.events().is_empty());
}

#[test]
fn info_in_dialog_is_answered_and_passed_on() {
    let mut t = T::new();
    let (key, ok) = t.answered_call(Transport::Udp);
    t.feed(&ack_for(&ok), Transport::Udp);
    t.events();
    let info = ack_for(&ok)
        .replace("ACK sip", "INFO sip")
        .replace("1 ACK", "2 INFO")
        .replace("z9hG4bKack1", "z9hG4bKinfo1")
        .replace(
            "Content-Length: 0\r\n\r\n",
            "Content-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\nSignal=5\r\nDuration=160\r\n",
        );
    t.feed(&info, Transport::Udp);
    assert_eq!(t.codes(), vec![200]);
    match t.events().as_slice() {
        [Event::Info { key: k, content_type, body }] => {
            assert_eq!(*k, key);
            assert_eq!(content_type, "application/dtmf-relay");
            assert_eq!(body, b"Signal=5\r\nDuration=160\r\n");
        }
        e => panic!("{e:?}"),
    }
}

/// A confirmed call and the REFER it sent to `target`.
fn referred_call(t: &mut T, target: &str) -> (CallKey, SipMessage, SipMessage) {
    let (key, ok) = t.answered_call(Transport::Udp);
    t.feed(&ack_for(&ok), Transport::Udp);
    t.events();
    t.ep.transfer(key, target, t.now);
    let mut sent = t.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let refer = sent.pop().unwrap().1;
    (key, ok, refer)
}

/// Our response to the peer's request `m` (a REFER or BYE we sent), in the peer's words.
fn answer_to(m: &SipMessage, code: u16, reason: &str) -> String {
    let h = |n: &str| m.headers.get(n).unwrap().to_string();
    format!(
        "SIP/2.0 {code} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        h("Via"),
        h("From"),
        h("To"),
        h("Call-ID"),
        h("CSeq")
    )
}

/// The peer's NOTIFY for the refer subscription, carrying `frag` as message/sipfrag.
fn notify(ok: &SipMessage, cseq: u32, state: &str, frag: &str) -> String {
    ack_for(ok)
        .replace("ACK sip", "NOTIFY sip")
        .replace("1 ACK", &format!("{cseq} NOTIFY"))
        .replace("z9hG4bKack1", &format!("z9hG4bKntf{cseq}"))
        .replace(
            "Content-Length: 0\r\n\r\n",
            &format!("Event: refer\r\nSubscription-State: {state}\r\nContent-Type: message/sipfrag;version=2.0\r\nContent-Length: {}\r\n\r\n{frag}", frag.len()),
        )
}

#[test]
fn transfer_sends_refer_then_bye_once_the_target_answers() {
    let mut t = T::new();
    let (key, ok, refer) = referred_call(&mut t, "sip:agent@10.0.0.9:5070");
    assert_eq!(refer.method(), Some(&Method::Refer));
    assert_eq!(refer.headers.get("Refer-To"), Some("<sip:agent@10.0.0.9:5070>"));
    assert!(refer.headers.get("Referred-By").is_some() && refer.headers.get("Contact").is_some(), "{refer:?}");
    // In the dialog: our tag in From, the caller's in To, our CSeq, routed by the Record-Route.
    assert_eq!(refer.call_id(), ok.call_id());
    assert!(refer.headers.get("To").unwrap().contains("tag=a1"));
    assert_eq!(refer.headers.get("Route"), Some("<sip:proxy.example;lr>"));
    t.feed(&answer_to(&refer, 202, "Accepted"), Transport::Udp);
    assert_eq!(t.events(), vec![Event::Transfer { key, progress: TransferProgress::Accepted }]);
    t.feed(&notify(&ok, 2, "active;expires=60", "SIP/2.0 100 Trying\r\n"), Transport::Udp);
    assert_eq!(t.codes(), vec![200]);
    assert_eq!(t.events(), vec![Event::Transfer { key, progress: TransferProgress::Trying(100) }]);
    t.feed(&notify(&ok, 3, "terminated;reason=noresource", "SIP/2.0 200 OK\r\n"), Transport::Udp);
    let sent = t.sent();
    let methods: Vec<String> = sent
        .iter()
        .map(|(_, m)| m.method().map(|m| m.as_str().to_string()).unwrap_or_else(|| "response".into()))
        .collect();
    assert_eq!(methods, ["response", "BYE"], "200 for the NOTIFY, then our BYE");
    assert_eq!(
        t.events(),
        vec![
            Event::Transfer { key, progress: TransferProgress::Succeeded },
            Event::Ended { key, call_id: ok.call_id().unwrap().to_string(), reason: EndReason::Transferred }
        ]
    );
    assert_eq!(EndReason::Transferred.status_label(), "transferred");
}

#[test]
fn a_refused_refer_or_a_failed_target_leaves_the_call_up() {
    // The peer does not do REFER (405): the call goes on.
    let mut t = T::new();
    let (key, ok, refer) = referred_call(&mut t, "sip:agent@10.0.0.9");
    t.feed(&answer_to(&refer, 405, "Method Not Allowed"), Transport::Udp);
    assert_eq!(
        t.events(),
        vec![Event::Transfer {
            key,
            progress: TransferProgress::Failed { code: 405, reason: "Method Not Allowed".into() }
        }]
    );
    assert_eq!(t.ep.active_calls(), 1);
    // A NOTIFY for a subscription that no longer exists.
    t.feed(&notify(&ok, 2, "terminated", "SIP/2.0 200 OK\r\n"), Transport::Udp);
    assert_eq!(t.codes(), vec![481]);
    assert!(t.events().is_empty());
    // A second try: accepted, but the target is busy.
    t.ep.transfer(key, "sip:agent@10.0.0.9", t.now);
    let refer = t.sent().pop().unwrap().1;
    t.feed(&answer_to(&refer, 202, "Accepted"), Transport::Udp);
    t.events();
    t.feed(&notify(&ok, 3, "terminated;reason=noresource", "SIP/2.0 486 Busy Here\r\n"), Transport::Udp);
    assert_eq!(t.codes(), vec![200]);
    assert_eq!(
        t.events(),
        vec![Event::Transfer { key, progress: TransferProgress::Failed { code: 486, reason: "Busy Here".into() } }]
    );
    assert_eq!(t.ep.active_calls(), 1, "the caller is still with us");
    // While a transfer runs, a second one is refused at once.
    t.ep.transfer(key, "sip:agent@10.0.0.9", t.now);
    t.sent();
    t.ep.transfer(key, "sip:other@10.0.0.9", t.now);
    assert!(t.sent().is_empty());
    assert!(matches!(
        t.events().as_slice(),
        [Event::Transfer { progress: TransferProgress::Failed { code: 491, .. }, .. }]
    ));
}

#[test]
fn an_unanswered_refer_fails_after_timer_f() {
    let mut t = T::new();
    let (key, _ok, _refer) = referred_call(&mut t, "sip:agent@10.0.0.9");
    t.advance(500);
    assert_eq!(t.sent().len(), 1, "retransmitted after T1");
    t.advance(32_000);
    assert_eq!(
        t.events(),
        vec![Event::Transfer {
            key,
            progress: TransferProgress::Failed { code: 408, reason: "no answer to REFER".into() }
        }]
    );
    assert_eq!(t.ep.active_calls(), 1);
}
