//! Bodies of the cargo-fuzz targets in `fuzz/fuzz_targets/`, one function per
//! target, so that the fuzzer and `tests/fuzz_corpus.rs` (which replays the
//! corpus kept in the repository on every `cargo test`) run the same code.
//!
//! Each function takes arbitrary bytes, feeds them to the parsers that read
//! untrusted input, and panics only when one of them breaks a promise: a
//! panic inside a parser, or one of the invariants the property tests in
//! `tests/proptest_*.rs` also state (what `parse` accepts re-parses after
//! `to_bytes`, a payload slice lies inside its datagram, what the endpoint
//! sends parses, ...). Not used by the appliance itself.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::media::dtmf::{self, EventPayload, Rfc4733Receiver};
use crate::media::{rtcp, rtp};
use crate::sip::endpoint::{AccountSpec, DialSpec, Endpoint, EndpointConfig, Event, Source, Transport};
use crate::sip::message::{
    compact_to_long, frame_stream, CSeq, Frame, Method, NameAddr, SipMessage, SipUri, StartLine, Via,
};
use crate::sip::sdp::{self, Codec};

/// The codecs and packet time of the embedded default configuration (`media.codecs`, `media.ptime_ms`).
fn default_codecs() -> (Vec<Codec>, u32) {
    let m = crate::config::MediaConfig::default();
    (m.codecs.iter().map(|&c| c.into()).collect(), m.ptime_ms.get() as u32)
}

// ---------------------------------------------------------------------------
// sip_message
// ---------------------------------------------------------------------------

/// Separates the datagrams of one `sip_message` input: the endpoint receives
/// each part in turn (so that an INVITE, its ACK and a BYE can meet in one
/// input). NUL is not valid in a SIP header section, so a real message
/// rarely contains it; an input without it is one datagram.
pub const DATAGRAM_SEPARATOR: &[u8] = b"\0\0\0\0";
/// Datagrams per input beyond this are ignored.
const MAX_DATAGRAMS: usize = 8;

// On loopback: inside the default `security.allow` of the appliance, so calls get past the guard.
const PEER: &str = "127.0.0.5:5062";
const LOCAL: &str = "10.0.0.1:5060";

/// `sip_message`: each datagram through `SipMessage::parse` (plus the
/// accessors every request goes through, the typed header parsers on the raw
/// text and on every header value, and TCP framing), then all of them, in
/// order, through a sans-IO [`Endpoint`] that has already registered an
/// account and dialled a call, driven through its timers to the end.
///
/// So that responses can reach the endpoint's own transactions, `$NAME`
/// placeholders in a datagram are replaced by what the endpoint last sent:
/// `$INV_BRANCH`, `$INV_CALLID`, `$INV_FROMTAG`, `$INV_CSEQ` (its INVITE),
/// `$REG_*` (its REGISTER), `$BRANCH`, `$CALLID`, `$FROMTAG`, `$CSEQ` (any
/// request) and `$TOTAG` (the To tag of its last response).
pub fn sip_message(data: &[u8]) {
    let datagrams: Vec<&[u8]> = split(data, DATAGRAM_SEPARATOR).take(MAX_DATAGRAMS).collect();
    for d in &datagrams {
        sip_datagram(d);
    }
    drive_endpoint(&datagrams);
}

fn split<'a>(data: &'a [u8], sep: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(sep.len()).position(|w| w == sep) {
            Some(i) => {
                rest = Some(&r[i + sep.len()..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// One datagram through the message parser and the typed header parsers.
fn sip_datagram(data: &[u8]) {
    match frame_stream(data) {
        Frame::Complete(n) | Frame::KeepAlive(n) => {
            assert!(n > 0 && n <= data.len(), "frame of {n} bytes in {}", data.len())
        }
        Frame::Incomplete | Frame::Invalid(_) => {}
    }
    // The header parsers on the raw text, as a header value could be.
    let text = String::from_utf8_lossy(data);
    typed_values(&text);
    for line in text.split("\r\n").take(64) {
        let value = line.split_once(':').map_or(line, |(_, v)| v);
        typed_values(value.trim());
    }

    let Ok(m) = SipMessage::parse(data) else { return };
    // The accessors used on every request.
    let _ = (
        m.method(),
        m.is_request(),
        m.call_id(),
        m.cseq(),
        m.top_via(),
        m.from(),
        m.to(),
        m.contact(),
        m.record_routes(),
        m.request_uri(),
    );
    if let Some(v) = m.top_via() {
        let _ = (v.branch(), v.param("rport"), v.param("received"));
    }
    for na in [m.from(), m.to(), m.contact()].into_iter().flatten() {
        let _ = (na.tag(), na.param("expires"), na.uri.param("transport"));
    }
    for h in m.headers.iter().take(64) {
        typed_values(&h.value);
        let _ = compact_to_long(&h.name);
    }
    // Whatever parse accepted survives a write/read cycle (tests/proptest_sip.rs).
    let bytes = m.to_bytes();
    let m2 = SipMessage::parse(&bytes)
        .unwrap_or_else(|e| panic!("re-parse failed: {e:?}\n{}", String::from_utf8_lossy(&bytes)));
    assert_eq!(m2.to_bytes(), bytes, "to_bytes is not a fixed point");
    assert_eq!(frame_stream(&bytes), Frame::Complete(bytes.len()), "our own bytes do not frame");
}

/// Via, SipUri, NameAddr and CSeq on `s`; what they accept re-reads its own Display.
fn typed_values(s: &str) {
    if let Some(v) = Via::parse(s) {
        assert_eq!(Via::parse(&v.to_string()), Some(v), "Via round trip of {s:?}");
    }
    if let Some(u) = SipUri::parse(s) {
        assert_eq!(SipUri::parse(&u.to_string()), Some(u), "SipUri round trip of {s:?}");
    }
    if let Some(n) = NameAddr::parse(s) {
        assert_eq!(NameAddr::parse(&n.to_string()), Some(n), "NameAddr round trip of {s:?}");
    }
    if let Some(c) = CSeq::parse(s) {
        assert_eq!(CSeq::parse(&c.to_string()), Some(c), "CSeq round trip of {s:?}");
    }
    let _ = Method::parse(s);
}

/// The endpoint as the appliance configures it from a minimal switchboard.yaml (built through
/// `EndpointConfig::from_config`, so that new settings get their shipped defaults), with test
/// timers and routes. Parsed once per process.
fn endpoint_config() -> EndpointConfig {
    static CFG: std::sync::OnceLock<EndpointConfig> = std::sync::OnceLock::new();
    CFG.get_or_init(|| {
        let yaml = "routes:\n  - match: \"*\"\n    agent: any\nagents:\n  sales: {}\n  support: {}\n  any: {}\n";
        let c =
            crate::config::parse(Path::new("/fuzz/switchboard.yaml"), yaml).expect("the fuzz endpoint's config parses");
        let mut cfg = EndpointConfig::from_config(&c);
        let (codecs, ptime_ms) = default_codecs();
        cfg.t1 = Duration::from_millis(500);
        cfg.t2 = Duration::from_secs(4);
        cfg.t4 = Duration::from_secs(5);
        cfg.user_agent = "switchboard-fuzz".into();
        cfg.advertised = None;
        cfg.media_advertised = None;
        cfg.codecs = codecs;
        cfg.ptime_ms = ptime_ms;
        cfg.routes = vec![("1000".into(), "sales".into()), ("2*".into(), "support".into()), ("*".into(), "any".into())];
        cfg
    })
    .clone()
}

/// What the endpoint last sent, for the `$NAME` placeholders.
#[derive(Default)]
struct Sent {
    vars: Vec<(&'static str, String)>,
    /// Hashes of the messages already checked: retransmissions are not parsed again.
    seen: std::collections::HashSet<u64>,
}

impl Sent {
    fn set(&mut self, name: &'static str, value: String) {
        match self.vars.iter_mut().find(|(n, _)| *n == name) {
            Some(v) => v.1 = value,
            None => self.vars.push((name, value)),
        }
    }

    fn record(&mut self, m: &SipMessage) {
        match &m.start {
            StartLine::Request { method, .. } => {
                let names: &[[&'static str; 4]] = match method {
                    Method::Invite => &[
                        ["$INV_BRANCH", "$INV_CALLID", "$INV_FROMTAG", "$INV_CSEQ"],
                        ["$BRANCH", "$CALLID", "$FROMTAG", "$CSEQ"],
                    ],
                    Method::Register => &[
                        ["$REG_BRANCH", "$REG_CALLID", "$REG_FROMTAG", "$REG_CSEQ"],
                        ["$BRANCH", "$CALLID", "$FROMTAG", "$CSEQ"],
                    ],
                    _ => &[["$BRANCH", "$CALLID", "$FROMTAG", "$CSEQ"]],
                };
                for [branch, call_id, from_tag, cseq] in names {
                    self.set(branch, m.top_via().and_then(|v| v.branch().map(str::to_string)).unwrap_or_default());
                    self.set(call_id, m.call_id().unwrap_or_default().to_string());
                    self.set(from_tag, m.from().and_then(|f| f.tag().map(str::to_string)).unwrap_or_default());
                    self.set(cseq, m.cseq().map(|c| c.seq.to_string()).unwrap_or_default());
                }
            }
            StartLine::Response { .. } => {
                if let Some(tag) = m.to().and_then(|t| t.tag().map(str::to_string)) {
                    self.set("$TOTAG", tag);
                }
            }
        }
    }

    fn substitute(&self, data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        if !out.contains(&b'$') {
            return out;
        }
        for (name, value) in &self.vars {
            out = replace_all(&out, name.as_bytes(), value.as_bytes());
        }
        out
    }
}

fn replace_all(data: &[u8], pat: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some(i) = rest.windows(pat.len()).position(|w| w == pat) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(with);
        rest = &rest[i + pat.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// The real path of a datagram: `handle_message`, then the driver's side
/// (answer incoming calls, transfer confirmed ones, read INFO digits), timers,
/// and finally hang up whatever is left and run the timers out.
fn drive_endpoint(datagrams: &[&[u8]]) {
    let peer: SocketAddr = PEER.parse().unwrap();
    let local: SocketAddr = LOCAL.parse().unwrap();
    let src = Source { transport: Transport::Udp, addr: peer, conn: None, local };
    let mut now = Instant::now();
    let mut ep = Endpoint::new(endpoint_config(), 1, now);
    let mut sent = Sent::default();
    ep.add_account(
        AccountSpec {
            name: "trunk".into(),
            domain: "pbx.example.com".into(),
            username: "1000".into(),
            auth_username: "1000".into(),
            password: "secret".into(),
            transport: Transport::Udp,
            next_hop: peer,
            local,
            expires_s: 300,
            register: true,
            agent: Some("sales".into()),
            caller_id: "1000".into(),
        },
        now,
    );
    drain(&mut ep, &mut sent, now);
    let dial = DialSpec {
        target: "sip:bob@10.0.0.5:5062".into(),
        account: None,
        next_hop: Some(peer),
        local: Some(local),
        transport: Transport::Udp,
        rtp_port: 30000,
        ring_timeout: Duration::from_secs(30),
        agent: "sales".into(),
        call_id: None,
    };
    ep.dial(dial, now).expect("a direct call to an address dials");
    drain(&mut ep, &mut sent, now);

    for d in datagrams {
        let d = sent.substitute(d);
        ep.handle_message(&d, src, now);
        drain(&mut ep, &mut sent, now);
        now += Duration::from_millis(10);
        run_timers(&mut ep, &mut sent, now);
    }
    for key in ep.call_keys() {
        ep.hangup(key, "fuzz", now);
    }
    drain(&mut ep, &mut sent, now);
    // Every timer that is left (retransmissions, Timer B/F/H, registration refresh) fires in
    // order; bounded because a registration refreshes for ever.
    for _ in 0..64 {
        let Some(t) = ep.poll_timeout() else { break };
        now = now.max(t);
        ep.handle_timeout(now);
        drain(&mut ep, &mut sent, now);
    }
}

fn run_timers(ep: &mut Endpoint, sent: &mut Sent, now: Instant) {
    for _ in 0..16 {
        if ep.poll_timeout().is_none_or(|t| t > now) {
            break;
        }
        ep.handle_timeout(now);
        drain(ep, sent, now);
    }
}

/// Take everything the endpoint wants sent (it must all parse) and act on its events.
fn drain(ep: &mut Endpoint, sent: &mut Sent, now: Instant) {
    loop {
        while let Some(t) = ep.poll_transmit() {
            let hash = {
                use std::hash::{BuildHasher, BuildHasherDefault};
                BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(&t.data)
            };
            if !sent.seen.insert(hash) {
                continue;
            }
            let m = SipMessage::parse(&t.data).unwrap_or_else(|e| {
                panic!("the endpoint sent unparseable SIP ({e}):\n{}", String::from_utf8_lossy(&t.data))
            });
            sent.record(&m);
        }
        let Some(ev) = ep.poll_event() else { break };
        match ev {
            Event::Incoming(ic) => {
                ep.ring(ic.key, now);
                ep.answer(ic.key, 30002, now);
            }
            Event::Confirmed { key } => ep.transfer(key, "sip:carol@10.0.0.9", now),
            Event::Info { content_type, body, .. } => {
                if let Some((d, _)) = dtmf::parse_sip_info(&content_type, &body) {
                    assert!(dtmf::digit_to_event(d).is_some(), "INFO gave a non-digit {d:?}");
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// sdp
// ---------------------------------------------------------------------------

/// `sdp`: `sdp::parse`, and on success `sdp::negotiate` with the default
/// codec list; an agreed offer gets an answer that must parse back with one
/// m-line per offered one.
pub fn sdp(data: &[u8]) {
    let Ok(sd) = sdp::parse(data) else { return };
    for m in &sd.media {
        let _ = m.direction();
        for f in m.formats.iter().take(32) {
            let _ = (m.rtpmap(f), m.fmtp(f));
        }
    }
    let (codecs, ptime_ms) = default_codecs();
    let Ok(n) = sdp::negotiate(&sd, &codecs, ptime_ms) else { return };
    assert!((10..=60).contains(&n.ptime_ms), "ptime {}", n.ptime_ms);
    assert!(n.media_index < sd.media.len());
    let answer =
        sdp::build_answer(&sd, &n, "192.0.2.1:30000".parse().unwrap(), sdp::Origin { session_id: 1, version: 1 });
    let back = sdp::parse(answer.as_bytes()).unwrap_or_else(|e| panic!("our answer does not parse ({e}):\n{answer}"));
    assert_eq!(back.media.len(), sd.media.len(), "one answer m-line per offer m-line:\n{answer}");
}

// ---------------------------------------------------------------------------
// rtp_rtcp
// ---------------------------------------------------------------------------

/// `rtp_rtcp`: the datagram as RTP (`rtp::parse`) and as compound RTCP
/// (`rtcp::parse_compound`, and an `RtcpSession` receiving it).
pub fn rtp_rtcp(data: &[u8]) {
    let _ = rtp::looks_like_rtcp(data);
    let t0 = Instant::now();
    let mut session = rtcp::RtcpSession::with_seed(
        rtcp::RtcpConfig {
            ssrc: 0x1234_5678,
            cname: "fuzz@switchboard".into(),
            clock_rate: 8000,
            interval: Duration::from_secs(5),
        },
        t0,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        1,
    );
    if let Ok((h, payload)) = rtp::parse(data) {
        let start = payload.as_ptr() as usize - data.as_ptr() as usize;
        assert!(start >= rtp::HEADER_LEN && start + payload.len() <= data.len(), "payload outside the datagram");
        assert!(h.payload_type < 128);
        let mut out = Vec::new();
        rtp::write(&h, payload, &mut out);
        assert_eq!(rtp::parse(&out), Ok((h.clone(), payload)), "RTP write/parse round trip");
        session.on_rtp_received(h.ssrc, h.sequence, h.timestamp, t0);
    }
    if let Ok(packets) = rtcp::parse_compound(data) {
        assert!(!packets.is_empty() && packets.len() <= rtcp::MAX_PACKETS);
        // What we read, we can write; the rewrite reads back as the same packets by type.
        let mut out = Vec::new();
        packets.iter().for_each(|p| rtcp::write(p, &mut out));
        assert_eq!(out.len() % 4, 0);
        let again = rtcp::parse_compound(&out).unwrap_or_else(|e| panic!("rewritten compound does not parse: {e}"));
        let types = |ps: &[rtcp::RtcpPacket]| ps.iter().map(rtcp::RtcpPacket::packet_type).collect::<Vec<_>>();
        assert_eq!(types(&again), types(&packets));
    }
    let now = t0 + Duration::from_millis(20);
    let direct = rtcp::parse_compound(data);
    assert_eq!(session.handle_rtcp(data, now), direct, "the session reads as parse_compound does");
    let st = session.stats();
    assert!((0.0..=1.0).contains(&st.fraction_lost) && st.jitter_ms.is_finite() && st.jitter_ms >= 0.0);
    if let Some(f) = st.remote_fraction_lost {
        assert!((0.0..1.0).contains(&f));
    }
    if let Some(j) = st.remote_jitter_ms {
        assert!(j.is_finite() && j >= 0.0);
    }
    let due = session.poll_timeout();
    if let Some(report) = session.handle_timeout(due) {
        assert!(rtcp::parse_compound(&report).is_ok(), "our report does not parse");
    }
}

// ---------------------------------------------------------------------------
// rfc4733
// ---------------------------------------------------------------------------

/// Content types an INFO body is read under.
const INFO_TYPES: &[&str] =
    &["application/dtmf-relay", "application/dtmf", "Application/DTMF-Relay; charset=utf-8", "text/plain"];

/// `rfc4733`: the bytes as a telephone-event payload (`EventPayload::parse`)
/// and as a SIP INFO body (`dtmf::parse_sip_info`); then as a stream of
/// telephone-event packets into an `Rfc4733Receiver`: a clock-rate byte, then
/// records of sequence (2), timestamp (4), flags (1: bit 7 marker, bits 0-2
/// payload length), gap before arrival (1, in 5 ms) and the payload.
pub fn rfc4733(data: &[u8]) {
    if let Some(p) = EventPayload::parse(data) {
        assert!(p.volume < 64);
        let mut out = Vec::new();
        p.write(&mut out);
        assert_eq!(out.len(), EventPayload::LEN);
        assert_eq!(EventPayload::parse(&out), Some(p));
    }
    for ct in INFO_TYPES {
        if let Some((d, _)) = dtmf::parse_sip_info(ct, data) {
            assert!(dtmf::digit_to_event(d).is_some(), "INFO gave a non-digit {d:?}");
        }
    }

    let Some((&clock, mut rest)) = data.split_first() else { return };
    let clock_rate = [8000, 48_000, 0, 1][usize::from(clock & 3)];
    let mut rx = Rfc4733Receiver::new(clock_rate);
    let t0 = Instant::now();
    let mut now = t0;
    let mut digits = Vec::new();
    let mut timestamps = std::collections::HashSet::new();
    let mut packets = 0;
    while rest.len() >= 8 {
        let (head, tail) = rest.split_at(8);
        let sequence = u16::from_be_bytes([head[0], head[1]]);
        let timestamp = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
        let marker = head[6] & 0x80 != 0;
        let len = usize::from(head[6] & 7).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        now += Duration::from_millis(5 * u64::from(head[7]));
        dtmf_timers(&mut rx, now, &mut digits);
        timestamps.insert(timestamp);
        packets += 1;
        digits.extend(rx.handle_packet(sequence, timestamp, marker, payload, now));
        dtmf_timers(&mut rx, now, &mut digits);
    }
    now += Duration::from_secs(10);
    dtmf_timers(&mut rx, now, &mut digits);
    // The receiver's promises (tests/proptest_dtmf.rs): no digits invented, nothing pending for
    // ever, real digits, in the order their presses started. At most one digit per timestamp
    // holds while the receiver can remember every finished press (dtmf::RECENT_EVENTS); past
    // that a timestamp seen long ago is a new press, and each packet starts at most one.
    if timestamps.len() <= dtmf::RECENT_EVENTS {
        assert!(digits.len() <= timestamps.len(), "{} digits from {} timestamps", digits.len(), timestamps.len());
    } else {
        assert!(digits.len() <= packets, "{} digits from {packets} packets", digits.len());
    }
    assert_eq!(rx.poll_timeout(), None, "still pending after 10 s of quiet");
    for d in &digits {
        assert!(dtmf::digit_to_event(d.digit).is_some(), "not a digit: {:?}", d.digit);
        assert!(d.started >= t0 && d.started <= now);
    }
    assert!(digits.windows(2).all(|w| w[0].started <= w[1].started), "digits out of order");
}

fn dtmf_timers(rx: &mut Rfc4733Receiver, now: Instant, out: &mut Vec<dtmf::DtmfEvent>) {
    for _ in 0..1024 {
        if rx.poll_timeout().is_none_or(|due| due > now) {
            return;
        }
        match rx.handle_timeout(now) {
            Some(d) => out.push(d),
            None => return,
        }
    }
    panic!("the receiver keeps asking for timeouts");
}

// ---------------------------------------------------------------------------
// yaml_config
// ---------------------------------------------------------------------------

/// `yaml_config`: UTF-8 text as `switchboard.yaml` (`config::parse`; a valid
/// one also builds the endpoint's configuration) and as a campaign file
/// (`campaign::spec::parse`). Neither touches the file system.
pub fn yaml_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = crate::config::parse(Path::new("/fuzz/switchboard.yaml"), text) {
        let _ = EndpointConfig::from_config(&c);
        for a in c.agents.values() {
            let _ = (c.llm_model_of(a), c.asr_model_of(a));
        }
    }
    let _ = crate::campaign::spec::parse(Path::new("/fuzz/campaign.yaml"), text);
}
