//! Property tests for the SIP message parser (`sip::message`).
//!
//! 1. Robustness: nothing read from the network may panic the parser, whether
//!    it is random bytes, SIP-looking token soup, or a valid INVITE that was
//!    damaged in transit (flipped bytes, truncation, stray CR/LF/`,`/`"`).
//! 2. Stability: whatever `parse` accepts, `to_bytes` writes in a form that
//!    parses back to the same thing, and typed header values re-read their
//!    own `Display` output.
//! 3. Fidelity: for generated well-formed requests, parse → to_bytes → parse
//!    is the identity and the accessors see the generated values.

use proptest::prelude::*;
use switchboard::sip::message::*;

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8, SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: \"Alice \\\"A\\\"\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>;expires=60, sip:a2@10.0.0.1\r\n\
Record-Route: <sip:p1.example.com;lr>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 31\r\n\
\r\n\
v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n";

/// Whatever `parse` accepted must survive a write/read cycle: the bytes are
/// a fixed point after one cycle and the message after that is stable.
fn check_stable(m: &SipMessage) {
    let bytes = m.to_bytes();
    let m2 = SipMessage::parse(&bytes)
        .unwrap_or_else(|e| panic!("re-parse failed: {e:?}\n{}", String::from_utf8_lossy(&bytes)));
    assert_eq!(m2.to_bytes(), bytes);
    assert_eq!(SipMessage::parse(&m2.to_bytes()).as_ref(), Ok(&m2));
    assert_eq!(frame_stream(&bytes), Frame::Complete(bytes.len()));
}

/// Exercise every accessor; all must return without panicking.
fn touch_accessors(m: &SipMessage) {
    let _ = (m.method(), m.is_request(), m.call_id(), m.cseq(), m.top_via());
    let _ = (m.from(), m.to(), m.contact(), m.record_routes(), m.request_uri());
}

/// Bounded frame result: a reported length never exceeds the buffer.
fn check_frame(buf: &[u8]) {
    match frame_stream(buf) {
        Frame::Complete(n) | Frame::KeepAlive(n) => assert!(n > 0 && n <= buf.len()),
        Frame::Incomplete | Frame::Invalid(_) => {}
    }
}

fn check_typed_values(s: &str) {
    if let Some(v) = Via::parse(s) {
        assert_eq!(Via::parse(&v.to_string()), Some(v));
    }
    if let Some(u) = SipUri::parse(s) {
        assert_eq!(SipUri::parse(&u.to_string()), Some(u));
    }
    if let Some(n) = NameAddr::parse(s) {
        assert_eq!(NameAddr::parse(&n.to_string()), Some(n));
    }
    if let Some(c) = CSeq::parse(s) {
        assert_eq!(CSeq::parse(&c.to_string()), Some(c));
    }
    let _ = Method::parse(s);
    let _ = compact_to_long(s);
}

/// Fragments that make random input look like SIP, so the parser gets past
/// the start line and into the interesting paths.
const SOUP: &[&str] = &[
    "INVITE",
    "SIP/2.0",
    "SIP/2.0 200 OK",
    " ",
    "\t",
    "\r\n",
    "\n",
    "\r",
    ":",
    ";",
    ",",
    "\"",
    "\\",
    "<",
    ">",
    "=",
    "@",
    "[",
    "]",
    "/",
    "?",
    "sip:",
    "sips:",
    "tel:",
    "Via",
    "v",
    "l",
    "m",
    "Contact",
    "Content-Length",
    "Call-ID",
    "CSeq",
    "From",
    "To",
    "tag",
    "branch",
    "z9hG4bK",
    "0",
    "1",
    "65536",
    "99999999999",
    "::1",
    "host.example.com",
    "UDP",
    "*",
    "é",
    "\u{0}",
    "\r\n\r\n",
    "\r\n ",
];

fn soup(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(SOUP), 0..max).prop_map(|v| v.concat())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Delete(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = proptest::sample::select(&b"\r\n,\";:<> \t\\\x00\xff@="[..]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), special).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    let len = buf.len();
    match *m {
        Mutation::Flip(i, b) if len > 0 => buf[i % len] ^= b,
        Mutation::Truncate(i) => buf.truncate(i % (len + 1)),
        Mutation::Insert(i, b) => buf.insert(i % (len + 1), b),
        Mutation::Delete(i) if len > 0 => {
            buf.remove(i % len);
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Generated well-formed requests
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Gen {
    method: &'static str,
    user: String,
    host: String,
    port: Option<u16>,
    branch: String,
    display: String,
    tag: String,
    call_id: String,
    seq: u32,
    compact: bool,
    colon_ws: (&'static str, &'static str),
    lf_only: bool,
    body: Vec<u8>,
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,6}){0,2}",
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| format!("[2001:db8::{a:x}:{b:x}]")),
    ]
}

fn gen_request() -> impl Strategy<Value = Gen> {
    let method = proptest::sample::select(
        &[
            "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK", "REFER", "NOTIFY",
            "MESSAGE", "FOO-BAR",
        ][..],
    );
    let ws = proptest::sample::select(&[("", " "), (" ", " "), ("\t", "\t "), ("", "")][..]);
    (
        (method, "[a-z0-9+._-]{1,12}", host(), proptest::option::of(any::<u16>()), "[A-Za-z0-9.!%*_+`'~-]{1,16}"),
        ("[ -~]{0,16}", "[a-zA-Z0-9]{1,10}", "[a-zA-Z0-9.@_-]{1,24}", any::<u32>()),
        (any::<bool>(), ws, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200)),
    )
        .prop_map(
            |((method, user, host, port, branch), (display, tag, call_id, seq), (compact, colon_ws, lf_only, body))| {
                Gen {
                    method,
                    user,
                    host,
                    port,
                    branch: format!("z9hG4bK{branch}"),
                    display,
                    tag,
                    call_id,
                    seq,
                    compact,
                    colon_ws,
                    lf_only,
                    body,
                }
            },
        )
}

impl Gen {
    fn hostport(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let name = |long: &'static str, short: &'static str| if self.compact { short } else { long };
        let (before, after) = self.colon_ws;
        let escaped = self.display.replace('\\', "\\\\").replace('"', "\\\"");
        let uri = format!("sip:{}@{}", self.user, self.hostport());
        let headers = [
            (name("Via", "v"), format!("SIP/2.0/UDP {};branch={};rport", self.hostport(), self.branch)),
            ("Max-Forwards", "70".to_string()),
            (name("From", "f"), format!("\"{escaped}\" <{uri}>;tag={}", self.tag)),
            (name("To", "t"), format!("<{uri}>")),
            (name("Call-ID", "i"), self.call_id.clone()),
            ("CSeq", format!("{} {}", self.seq, self.method)),
            (name("Contact", "m"), format!("<sip:{}@{}>", self.user, self.hostport())),
            (name("Content-Length", "l"), self.body.len().to_string()),
        ];
        let eol = if self.lf_only { "\n" } else { "\r\n" };
        let mut out = format!("{} {uri} SIP/2.0{eol}", self.method);
        for (n, v) in headers {
            out.push_str(&format!("{n}{before}:{after}{v}{eol}"));
        }
        out.push_str(eol);
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..1024)) {
        check_frame(&buf);
        if let Ok(m) = SipMessage::parse(&buf) {
            touch_accessors(&m);
            check_stable(&m);
        }
    }

    #[test]
    fn sip_soup_never_panics(s in soup(80)) {
        check_frame(s.as_bytes());
        if let Ok(m) = SipMessage::parse(s.as_bytes()) {
            touch_accessors(&m);
            check_stable(&m);
        }
        check_typed_values(&s);
    }

    #[test]
    fn arbitrary_strings_in_typed_parsers(s in any::<String>()) {
        check_typed_values(&s);
    }

    #[test]
    fn header_value_soup_in_typed_parsers(s in soup(24)) {
        check_typed_values(&s);
        // And the same soup behind a plausible prefix, to reach the inner
        // branches of each parser.
        check_typed_values(&format!("SIP/2.0/UDP {s}"));
        check_typed_values(&format!("sip:{s}"));
        check_typed_values(&format!("\"{s}\" <sip:{s}>;{s}"));
        check_typed_values(&format!("1 {s}"));
    }

    #[test]
    fn mutated_invite_never_panics(muts in proptest::collection::vec(mutation(), 1..8)) {
        let mut buf = INVITE.as_bytes().to_vec();
        for m in &muts {
            apply(&mut buf, m);
        }
        check_frame(&buf);
        match SipMessage::parse(&buf) {
            Ok(m) => {
                touch_accessors(&m);
                check_stable(&m);
            }
            Err(e) => {
                // An error never carries more than the header cap, and its
                // Display is printable.
                prop_assert!(e.headers.len() <= MAX_HEADERS);
                let _ = e.to_string();
            }
        }
    }

    #[test]
    fn well_formed_requests_round_trip(g in gen_request()) {
        let raw = g.bytes();
        let m = SipMessage::parse(&raw).unwrap_or_else(|e| panic!("{e:?}\n{}", String::from_utf8_lossy(&raw)));
        // parse -> to_bytes -> parse is the identity.
        let again = SipMessage::parse(&m.to_bytes());
        prop_assert_eq!(again.as_ref(), Ok(&m));

        // The accessors see what was generated.
        prop_assert_eq!(m.method().map(Method::as_str), Some(g.method));
        prop_assert_eq!(m.call_id(), Some(g.call_id.as_str()));
        prop_assert_eq!(m.cseq(), Some(CSeq { seq: g.seq, method: Method::parse(g.method) }));
        let via = m.top_via().expect("via");
        prop_assert_eq!((via.host.as_str(), via.port, via.branch()), (g.host.as_str(), g.port, Some(g.branch.as_str())));
        prop_assert_eq!(via.param("rport"), Some(None));
        let from = m.from().expect("from");
        prop_assert_eq!(from.display.as_deref(), Some(g.display.as_str()));
        prop_assert_eq!(from.tag(), Some(g.tag.as_str()));
        let to = m.to().expect("to");
        prop_assert_eq!(to.tag(), None);
        let ruri = m.request_uri().expect("ruri");
        prop_assert_eq!((ruri.user.as_deref(), ruri.host.as_str(), ruri.port), (Some(g.user.as_str()), g.host.as_str(), g.port));
        prop_assert_eq!(m.contact().expect("contact").uri, ruri);
        prop_assert_eq!(&m.body, &g.body);

        // Framing: whole message complete, any prefix incomplete, and two
        // pipelined messages split where they should.
        prop_assert_eq!(frame_stream(&raw), Frame::Complete(raw.len()));
        prop_assert_eq!(frame_stream(&raw[..raw.len() / 2]), Frame::Incomplete);
        let mut two = raw.clone();
        two.extend_from_slice(&raw);
        prop_assert_eq!(frame_stream(&two), Frame::Complete(raw.len()));
    }
}
