//! SIP message syntax (RFC 3261 §7, §18.3, §20): our own parser and writer.
//!
//! Input comes straight off the network, so the rules here are:
//! * never panic: no slicing at indices that were not just found in the same
//!   buffer, no `unwrap` on anything derived from input;
//! * bounded work and memory: a message is at most [`MAX_MESSAGE_SIZE`]
//!   bytes and carries at most [`MAX_HEADERS`] header entries;
//! * be liberal where the RFC or RFC 4475 says implementations should be
//!   (compact names, folding, LWS around `:`, LF-only line ends, leading
//!   CRLFs) and fail only on syntax we genuinely cannot read. Semantic checks
//!   (mandatory headers present, CSeq method matches, ...) belong to the
//!   endpoint, which answers 400 itself; a `ParseError` carries the request
//!   line status and the headers read so far so that it can do so.
//!
//! Typed header values (URIs, name-addr, Via, CSeq) live in `headers.rs` and
//! are re-exported here so callers only need `sip::message::*`.

use std::fmt;

use super::headers::{is_lws, is_token, split_outside, trim_lws};
pub use super::headers::{CSeq, NameAddr, Params, SipUri, Via};

/// Largest message we read or frame (UDP cannot carry more anyway).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Largest number of header entries (after splitting comma lists).
pub const MAX_HEADERS: usize = 256;

// ---------------------------------------------------------------------------
// Method
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }

    /// Methods are case-sensitive (RFC 3261 §7.1): "invite" is an unknown
    /// method, to be answered 405/501, not an INVITE.
    pub fn parse(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Header names
// ---------------------------------------------------------------------------

/// Compact header forms (RFC 3261 §7.3.3 and later RFCs), case-insensitive.
pub fn compact_to_long(name: &str) -> Option<&'static str> {
    let [b] = name.as_bytes() else { return None };
    Some(match b.to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'o' => "Event",
        b'u' => "Allow-Events",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'x' => "Session-Expires",
        b'a' => "Accept-Contact",
        b'j' => "Reject-Contact",
        b'd' => "Request-Disposition",
        b'y' => "Identity",
        b'n' => "Identity-Info",
        _ => return None,
    })
}

/// Canonical spelling of well-known header names; a name matching one of
/// these case-insensitively is stored in this spelling. Other names are
/// kept exactly as received.
const CANONICAL: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Content-Type",
    "Content-Length",
    "Record-Route",
    "Route",
    "Allow",
    "Accept",
    "Supported",
    "Require",
    "User-Agent",
    "Server",
    "Expires",
    "Retry-After",
    "WWW-Authenticate",
    "Authorization",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Unsupported",
    "Min-Expires",
    "Warning",
    "Date",
    "Timestamp",
    "Organization",
    "Priority",
    "Reply-To",
    "Alert-Info",
    "Call-Info",
    "Error-Info",
    "In-Reply-To",
    "MIME-Version",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Accept-Encoding",
    "Accept-Language",
    "Authentication-Info",
    "Subject",
    "Event",
    "Allow-Events",
    "Subscription-State",
    "Refer-To",
    "Referred-By",
    "Session-Expires",
    "Min-SE",
    "RSeq",
    "RAck",
    "Path",
    "Reason",
    "Replaces",
    "Accept-Contact",
    "Reject-Contact",
    "Request-Disposition",
    "Identity",
    "Identity-Info",
    "P-Asserted-Identity",
    "Privacy",
];

/// Headers whose comma-separated values are split into one entry each
/// (RFC 3261 §7.3.1), so that e.g. `get_all("Via")` yields one hop per item.
const MULTI_VALUED: &[&str] = &["Via", "Route", "Record-Route", "Contact", "Allow", "Supported", "Require"];

fn canonical_name(name: &str) -> String {
    let name = trim_lws(name);
    if let Some(long) = compact_to_long(name) {
        return long.to_string();
    }
    match CANONICAL.iter().find(|c| c.eq_ignore_ascii_case(name)) {
        Some(c) => (*c).to_string(),
        None => name.to_string(),
    }
}

/// Same header? Case-insensitive, with compact forms expanded on both sides
/// (the `Headers` vector is public, so entries may not be canonical).
fn same_name(a: &str, b: &str) -> bool {
    let a = compact_to_long(a).unwrap_or(a);
    let b = compact_to_long(b).unwrap_or(b);
    a.eq_ignore_ascii_case(b)
}

// ---------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical long form ("Via", "Call-ID", ...) for known names.
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// First value of `name` (case-insensitive; compact forms match long ones).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|h| same_name(&h.name, name)).map(|h| h.value.as_str())
    }

    /// All values of `name`, in message order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |h| same_name(&h.name, name)).map(|h| h.value.as_str())
    }

    /// Append (name canonicalised, value as given).
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header { name: canonical_name(name), value: value.into() });
    }

    /// Replace every entry of `name` by one, at the position of the first
    /// (appended if there was none).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let header = Header { name: canonical_name(name), value: value.into() };
        let Some(first) = self.0.iter().position(|h| same_name(&h.name, name)) else {
            self.0.push(header);
            return;
        };
        let mut idx = 0;
        self.0.retain(|h| {
            let keep = idx <= first || !same_name(&h.name, name);
            idx += 1;
            keep
        });
        if let Some(slot) = self.0.get_mut(first) {
            *slot = header;
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|h| !same_name(&h.name, name));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    /// true when a request line was read: the caller may then answer 400 using `headers`
    pub request_line_ok: bool,
    /// the headers that could be read before the error (for building a 400)
    pub headers: Headers,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("empty message")]
    Empty,
    #[error("malformed start line")]
    BadStartLine,
    #[error("malformed header: {0}")]
    BadHeader(String),
    #[error("message too large (over 64 KiB or 256 headers)")]
    TooLarge,
    #[error("malformed or conflicting Content-Length")]
    BadContentLength,
    #[error("message truncated")]
    Truncated,
    #[error("header section is not UTF-8")]
    NotUtf8,
}

impl ParseError {
    fn bare(kind: ParseErrorKind) -> ParseError {
        ParseError { kind, request_line_ok: false, headers: Headers::default() }
    }
}

/// At most 60 characters of an offending line, for logs / error text.
fn snippet(s: &str) -> String {
    s.chars().take(60).collect()
}

// ---------------------------------------------------------------------------
// Start line
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { code: u16, reason: String },
}

/// `Method SP Request-URI SP SIP-Version` or `SIP-Version SP 3DIGIT SP
/// Reason-Phrase`. We tolerate runs of SP/HT between elements and trailing
/// SP/HT (RFC 4475 "lwsstart"/"trws" allow either rejecting or accepting
/// that) and an empty reason ("noreason").
/// The version token is compared case-insensitively, but must be 2.0.
pub(crate) fn parse_start_line(line: &str) -> Option<StartLine> {
    if line.len() >= 4 && line.as_bytes().get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/")) {
        let (version, rest) = line.split_once(is_lws)?;
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return None;
        }
        let rest = rest.trim_start_matches(is_lws);
        let (code, reason) = rest.split_at(rest.find(is_lws).unwrap_or(rest.len()));
        let code_ok = code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit());
        let code: u16 = if code_ok { code.parse().ok()? } else { return None };
        if !(100..=699).contains(&code) {
            return None;
        }
        return Some(StartLine::Response { code, reason: trim_lws(reason).to_string() });
    }
    let mut parts = line.split(is_lws).filter(|p| !p.is_empty());
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_token(method) || !version.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    Some(StartLine::Request { method: Method::parse(method), uri: uri.to_string() })
}

// ---------------------------------------------------------------------------
// Line reader
// ---------------------------------------------------------------------------

/// Yields lines terminated by LF, with one preceding CR removed (so both
/// CRLF and bare-LF endings work). `terminated` is false for a final line
/// that ran into the end of the buffer.
struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

struct Line<'a> {
    bytes: &'a [u8],
    terminated: bool,
}

impl<'a> Lines<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Lines { buf, pos: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        let rest = self.rest();
        if rest.is_empty() {
            return None;
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                self.pos += lf + 1;
                let line = rest.get(..lf).unwrap_or_default();
                Some(Line { bytes: line.strip_suffix(b"\r").unwrap_or(line), terminated: true })
            }
            None => {
                self.pos = self.buf.len();
                Some(Line { bytes: rest, terminated: false })
            }
        }
    }
}

/// A header-section line as text. A CR that is not part of a line ending is
/// rejected: it is not valid anywhere in SIP text, and keeping it would let a
/// value we store differ from the one we later write.
fn line_text(bytes: &[u8]) -> Result<&str, ParseErrorKind> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseErrorKind::NotUtf8)?;
    if text.contains('\r') {
        return Err(ParseErrorKind::BadHeader("bare CR".into()));
    }
    Ok(text)
}

/// `1*DIGIT`, no sign, no spaces inside (LWS around it was already trimmed).
fn parse_content_length(v: &str) -> Option<usize> {
    let v = trim_lws(v);
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

// ---------------------------------------------------------------------------
// Header section builder
// ---------------------------------------------------------------------------

/// Accumulates header lines. A header is held in `pending` until the next
/// header (or the blank line) starts, because folded continuation lines may
/// still extend it; only then is it split and stored.
#[derive(Default)]
struct HeaderBuilder {
    headers: Headers,
    pending: Option<(String, String)>,
}

impl HeaderBuilder {
    fn flush(&mut self) -> Result<(), ParseErrorKind> {
        let Some((name, value)) = self.pending.take() else { return Ok(()) };
        let name = canonical_name(&name);
        let mut pushed = false;
        if MULTI_VALUED.contains(&name.as_str()) {
            for part in split_outside(&value, ',') {
                let part = trim_lws(part);
                if !part.is_empty() {
                    self.push(&name, part)?;
                    pushed = true;
                }
            }
        }
        // Not a list header, or a list with no items ("Supported:" is legal):
        // keep the value as it came.
        if !pushed {
            self.push(&name, &value)?;
        }
        Ok(())
    }

    fn push(&mut self, name: &str, value: &str) -> Result<(), ParseErrorKind> {
        if self.headers.0.len() >= MAX_HEADERS {
            return Err(ParseErrorKind::TooLarge);
        }
        self.headers.0.push(Header { name: name.to_string(), value: value.to_string() });
        Ok(())
    }

    /// Handle one non-blank header-section line.
    fn line(&mut self, text: &str) -> Result<(), ParseErrorKind> {
        if text.starts_with(is_lws) {
            // Folding (RFC 3261 §7.3.1): the CRLF + leading LWS become one SP.
            let Some((_, value)) = self.pending.as_mut() else {
                return Err(ParseErrorKind::BadHeader(format!("continuation without a header: {}", snippet(text))));
            };
            let more = trim_lws(text);
            if !more.is_empty() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
            }
            return Ok(());
        }
        self.flush()?;
        // HCOLON = *( SP / HTAB ) ":" SWS
        let Some((name, value)) = text.split_once(':') else {
            return Err(ParseErrorKind::BadHeader(snippet(text)));
        };
        let name = name.trim_end_matches(is_lws);
        if !is_token(name) {
            return Err(ParseErrorKind::BadHeader(snippet(text)));
        }
        self.pending = Some((name.to_string(), trim_lws(value).to_string()));
        Ok(())
    }

    /// Build the error, keeping every complete header read so far.
    fn fail(mut self, kind: ParseErrorKind, request_line_ok: bool) -> ParseError {
        let _ = self.flush(); // best effort: a header that overflows the cap is dropped
        ParseError { kind, request_line_ok, headers: self.headers }
    }
}

// ---------------------------------------------------------------------------
// SipMessage
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    pub start: StartLine,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl SipMessage {
    /// Parse one whole message (a UDP datagram, or a frame cut by
    /// [`frame_stream`]).
    pub fn parse(buf: &[u8]) -> Result<SipMessage, ParseError> {
        use ParseErrorKind::*;
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::bare(TooLarge));
        }
        // RFC 3261 §7.5: CRLFs before the start line are ignored.
        let skip = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        let buf = buf.get(skip..).unwrap_or_default();
        let mut lines = Lines::new(buf);
        let Some(first) = lines.next() else { return Err(ParseError::bare(Empty)) };
        let first_text = match line_text(first.bytes) {
            Ok(t) => t,
            Err(NotUtf8) => return Err(ParseError::bare(NotUtf8)),
            Err(_) => return Err(ParseError::bare(BadStartLine)),
        };
        let start = parse_start_line(first_text).ok_or_else(|| ParseError::bare(BadStartLine))?;
        let req = matches!(start, StartLine::Request { .. });

        let mut hb = HeaderBuilder::default();
        if !first.terminated {
            return Err(hb.fail(Truncated, req));
        }
        loop {
            // No blank line before the end: the header section is cut short.
            let Some(line) = lines.next() else { return Err(hb.fail(Truncated, req)) };
            if !line.terminated {
                return Err(hb.fail(Truncated, req));
            }
            if line.bytes.is_empty() {
                break;
            }
            let step = line_text(line.bytes).and_then(|text| hb.line(text));
            if let Err(kind) = step {
                return Err(hb.fail(kind, req));
            }
        }
        if let Err(kind) = hb.flush() {
            return Err(hb.fail(kind, req));
        }
        let mut headers = hb.headers;
        let fail = |kind, headers| ParseError { kind, request_line_ok: req, headers };

        // Content-Length: all copies must agree. Absent is fine on UDP, where
        // the body is the rest of the datagram (RFC 3261 §18.3).
        let agreed =
            headers.get_all("Content-Length").try_fold(None, |seen: Option<usize>, v| match parse_content_length(v) {
                Some(n) if seen.is_none_or(|c| c == n) => Ok(Some(n)),
                _ => Err(()),
            });
        let Ok(content_length) = agreed else { return Err(fail(BadContentLength, headers)) };
        let rest = lines.rest();
        let body = match content_length {
            None => rest,
            Some(n) => {
                // Store the number in canonical form ("007" -> "7") so that
                // to_bytes, which recomputes it, round-trips.
                for h in headers.0.iter_mut().filter(|h| same_name(&h.name, "Content-Length")) {
                    h.value = n.to_string();
                }
                // Extra bytes past Content-Length are ignored (§18.3).
                match rest.get(..n) {
                    Some(b) => b,
                    None => return Err(fail(Truncated, headers)),
                }
            }
        };
        Ok(SipMessage { start, headers, body: body.to_vec() })
    }

    /// Serialise: start line, headers in order, Content-Length recomputed
    /// from the body (written where the first one was, else last), blank
    /// line, body. CR/LF inside names or values (only possible for values
    /// set by our own code) are replaced by spaces so that nothing can be
    /// injected into the header section.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len() + self.headers.0.len() * 48);
        match &self.start {
            StartLine::Request { method, uri } => {
                push_clean(&mut out, method.as_str());
                out.push(b' ');
                push_clean(&mut out, uri);
                out.extend_from_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                out.extend_from_slice(format!("SIP/2.0 {code:03} ").as_bytes());
                push_clean(&mut out, reason);
                out.extend_from_slice(b"\r\n");
            }
        }
        let content_length = format!("Content-Length: {}\r\n", self.body.len());
        let mut wrote_length = false;
        for h in &self.headers.0 {
            if same_name(&h.name, "Content-Length") {
                if !wrote_length {
                    out.extend_from_slice(content_length.as_bytes());
                    wrote_length = true;
                }
                continue;
            }
            push_clean(&mut out, &h.name);
            out.extend_from_slice(b": ");
            push_clean(&mut out, &h.value);
            out.extend_from_slice(b"\r\n");
        }
        if !wrote_length {
            out.extend_from_slice(content_length.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method; None for responses (use `cseq()` for those).
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn call_id(&self) -> Option<&str> {
        self.headers.get("Call-ID")
    }

    pub fn cseq(&self) -> Option<CSeq> {
        CSeq::parse(self.headers.get("CSeq")?)
    }

    pub fn top_via(&self) -> Option<Via> {
        Via::parse(self.headers.get("Via")?)
    }

    pub fn from(&self) -> Option<NameAddr> {
        NameAddr::parse(self.headers.get("From")?)
    }

    pub fn to(&self) -> Option<NameAddr> {
        NameAddr::parse(self.headers.get("To")?)
    }

    /// First Contact; None for `Contact: *` (REGISTER wildcard).
    pub fn contact(&self) -> Option<NameAddr> {
        NameAddr::parse(self.headers.get("Contact")?)
    }

    /// Record-Route entries in order; unreadable ones are skipped.
    pub fn record_routes(&self) -> Vec<NameAddr> {
        self.headers.get_all("Record-Route").filter_map(NameAddr::parse).collect()
    }

    pub fn request_uri(&self) -> Option<SipUri> {
        match &self.start {
            StartLine::Request { uri, .. } => SipUri::parse(uri),
            StartLine::Response { .. } => None,
        }
    }
}

fn push_clean(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
}

// ---------------------------------------------------------------------------
// Stream framing
// ---------------------------------------------------------------------------

/// TCP framing (RFC 3261 §18.3): given the bytes buffered so far on a stream,
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// a whole message occupies buf[..n] (headers + Content-Length bytes of body)
    Complete(usize),
    Incomplete,
    /// cannot be a SIP message (no Content-Length on a stream, bad Content-Length, header section > 64 KiB)
    Invalid(String),
    /// leading CRLF keep-alives (RFC 5626 "\r\n\r\n" ping / single CRLF) to skip
    KeepAlive(usize),
}

/// Decide whether `buf` (the unconsumed bytes of a stream) starts with a
/// whole message. The caller consumes `n` bytes on `Complete(n)` /
/// `KeepAlive(n)`, waits for more on `Incomplete`, and closes the connection
/// on `Invalid` (the stream can no longer be re-synchronised).
///
/// Only the start line and Content-Length are examined; everything else is
/// left to `SipMessage::parse`, so a message with a bad header still frames
/// and can be answered 400. Work per call is bounded by 64 KiB.
pub fn frame_stream(buf: &[u8]) -> Frame {
    let keepalive = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    if keepalive > 0 {
        return Frame::KeepAlive(keepalive);
    }
    let window = buf.get(..MAX_MESSAGE_SIZE).unwrap_or(buf);

    // Reject garbage as soon as the first line is in, instead of waiting for
    // 64 KiB of it.
    if let Some(lf) = window.iter().position(|&b| b == b'\n') {
        let first = window.get(..lf).unwrap_or_default();
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        if line_text(first).ok().and_then(parse_start_line).is_none() {
            return Frame::Invalid("not a SIP start line".into());
        }
    }

    let Some(body_start) = find_header_end(window) else {
        return if buf.len() >= MAX_MESSAGE_SIZE {
            Frame::Invalid("header section exceeds 64 KiB".into())
        } else {
            Frame::Incomplete
        };
    };
    let content_length = match stream_content_length(window.get(..body_start).unwrap_or_default()) {
        Ok(Some(n)) => n,
        Ok(None) => return Frame::Invalid("no Content-Length on a stream transport".into()),
        Err(why) => return Frame::Invalid(why),
    };
    match body_start.checked_add(content_length) {
        Some(total) if total <= MAX_MESSAGE_SIZE => {
            if buf.len() >= total {
                Frame::Complete(total)
            } else {
                Frame::Incomplete
            }
        }
        _ => Frame::Invalid("message exceeds 64 KiB".into()),
    }
}

/// Index just past the blank line ending the header section: an LF followed
/// by LF or CRLF (matching how `Lines` sees an empty line).
fn find_header_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(off) = buf.get(from..)?.iter().position(|&b| b == b'\n') {
        let lf = from + off;
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => return Some(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(lf + 3),
            _ => from = lf + 1,
        }
    }
    None
}

/// The Content-Length of a header section (start line included), honouring
/// compact `l` and folding. Ok(None) when there is none.
fn stream_content_length(section: &[u8]) -> Result<Option<usize>, String> {
    let mut found: Option<usize> = None;
    // (is this header Content-Length?, its value so far)
    let mut current: Option<Vec<u8>> = None;
    let mut finish = |value: Option<Vec<u8>>| -> Result<(), String> {
        let Some(v) = value else { return Ok(()) };
        let n = std::str::from_utf8(&v).ok().and_then(parse_content_length);
        match n {
            Some(n) if found.is_none_or(|f| f == n) => {
                found = Some(n);
                Ok(())
            }
            Some(_) => Err("conflicting Content-Length headers".into()),
            None => Err("bad Content-Length".into()),
        }
    };
    for line in Lines::new(section).skip(1) {
        let bytes = line.bytes;
        if bytes.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            if let Some(v) = current.as_mut() {
                v.push(b' ');
                v.extend_from_slice(bytes.trim_ascii());
            }
            continue;
        }
        finish(current.take())?;
        if let Some(colon) = bytes.iter().position(|&b| b == b':') {
            let name = bytes.get(..colon).unwrap_or_default().trim_ascii();
            if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
                current = Some(bytes.get(colon + 1..).unwrap_or_default().trim_ascii().to_vec());
            }
        }
    }
    finish(current.take())?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a message from lines joined with CRLF (keeps test text readable).
    fn crlf(lines: &[&str]) -> Vec<u8> {
        lines.join("\r\n").into_bytes()
    }

    fn invite() -> Vec<u8> {
        crlf(&[
            "INVITE sip:bob@biloxi.example.com SIP/2.0",
            "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKkjshdyff",
            "To: Bob <sip:bob@biloxi.example.com>",
            "From: \"Alice\" <sip:alice@atlanta.example.com>;tag=88sja8x",
            "Max-Forwards: 70",
            "Call-ID: 987asjd97y7atg",
            "CSeq: 986759 INVITE",
            "Contact: <sip:alice@pc33.atlanta.example.com>",
            "Content-Type: application/sdp",
            "Content-Length: 10",
            "",
            "v=0\r\ns=-\r\n",
        ])
    }

    /// parse(to_bytes(m)) == m, except that to_bytes always writes a
    /// Content-Length, which then appears (last) if m had none.
    fn roundtrip(m: &SipMessage) {
        let again = SipMessage::parse(&m.to_bytes()).expect("re-parse");
        let mut expect = m.clone();
        if expect.headers.get("Content-Length").is_none() {
            expect.headers.push("Content-Length", expect.body.len().to_string());
        }
        assert_eq!(again, expect);
    }

    #[test]
    fn method_is_case_sensitive() {
        assert_eq!(Method::parse("INVITE"), Method::Invite);
        assert_eq!(Method::parse("invite"), Method::Other("invite".into()));
        for m in [
            "ACK",
            "BYE",
            "CANCEL",
            "OPTIONS",
            "REGISTER",
            "INFO",
            "UPDATE",
            "PRACK",
            "SUBSCRIBE",
            "NOTIFY",
            "REFER",
            "MESSAGE",
            "PUBLISH",
            "FOO",
        ] {
            assert_eq!(Method::parse(m).as_str(), m);
        }
    }

    #[test]
    fn compact_forms_table() {
        let expect = [
            ("i", "Call-ID"),
            ("m", "Contact"),
            ("e", "Content-Encoding"),
            ("l", "Content-Length"),
            ("c", "Content-Type"),
            ("f", "From"),
            ("s", "Subject"),
            ("k", "Supported"),
            ("t", "To"),
            ("v", "Via"),
            ("o", "Event"),
            ("u", "Allow-Events"),
            ("r", "Refer-To"),
            ("b", "Referred-By"),
            ("x", "Session-Expires"),
            ("a", "Accept-Contact"),
            ("j", "Reject-Contact"),
            ("d", "Request-Disposition"),
            ("y", "Identity"),
            ("n", "Identity-Info"),
        ];
        for (c, long) in expect {
            assert_eq!(compact_to_long(c), Some(long));
            assert_eq!(compact_to_long(&c.to_uppercase()), Some(long));
        }
        assert_eq!(compact_to_long("z"), None);
        assert_eq!(compact_to_long("via"), None);
        assert_eq!(compact_to_long(""), None);
    }

    #[test]
    fn parses_basic_invite() {
        let m = SipMessage::parse(&invite()).unwrap();
        assert!(m.is_request());
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.request_uri().unwrap().host, "biloxi.example.com");
        assert_eq!(m.call_id(), Some("987asjd97y7atg"));
        assert_eq!(m.cseq(), Some(CSeq { seq: 986759, method: Method::Invite }));
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bKkjshdyff"));
        assert_eq!(m.from().unwrap().tag(), Some("88sja8x"));
        assert_eq!(m.to().unwrap().display.as_deref(), Some("Bob"));
        assert_eq!(m.contact().unwrap().uri.host, "pc33.atlanta.example.com");
        assert_eq!(m.body, b"v=0\r\ns=-\r\n");
        assert_eq!(m.headers.get("max-forwards"), Some("70"));
        roundtrip(&m);
    }

    #[test]
    fn compact_names_are_expanded() {
        let raw = crlf(&[
            "OPTIONS sip:x@example.com SIP/2.0",
            "v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
            "V: SIP/2.0/TCP b.example.com;branch=z9hG4bK2",
            "f: <sip:a@example.com>;tag=1",
            "t: sip:x@example.com",
            "i: abc@host",
            "m: <sip:a@10.0.0.1>",
            "k: timer, 100rel",
            "cSeQ: 1 OPTIONS",
            "call-id: second",
            "l: 0",
            "",
            "",
        ]);
        let m = SipMessage::parse(&raw).unwrap();
        let names: Vec<&str> = m.headers.0.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Via",
                "Via",
                "From",
                "To",
                "Call-ID",
                "Contact",
                "Supported",
                "Supported",
                "CSeq",
                "Call-ID",
                "Content-Length"
            ]
        );
        assert_eq!(m.headers.get("Via"), Some("SIP/2.0/UDP a.example.com;branch=z9hG4bK1"));
        assert_eq!(m.headers.get("v"), m.headers.get("VIA"));
        assert_eq!(m.headers.get_all("i").collect::<Vec<_>>(), ["abc@host", "second"]);
        assert_eq!(m.to().unwrap().uri.user.as_deref(), Some("x"));
        assert_eq!(m.cseq().unwrap().method, Method::Options);
        roundtrip(&m);
    }

    #[test]
    fn unknown_header_names_keep_their_spelling() {
        let m = SipMessage::parse(b"BYE sip:a@b SIP/2.0\r\nX-Custom-THING: 1\r\nuser-agent: foo\r\n\r\n").unwrap();
        assert_eq!(m.headers.0[0].name, "X-Custom-THING");
        assert_eq!(m.headers.0[1].name, "User-Agent");
        assert_eq!(m.headers.get("x-custom-thing"), Some("1"));
    }

    #[test]
    fn folding_and_weird_spacing() {
        // In the spirit of RFC 4475 "wsinv" (a short tortuous INVITE).
        let raw = crlf(&[
            "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0",
            "TO :",
            " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
            "from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>",
            "  ;",
            "  tag = 98asjd8",
            "MaX-fOrWaRdS: 0068",
            "Call-ID: wsinv.ndaksdj@192.0.2.1",
            "Content-Length   : 0",
            "cseq: 0009",
            "  INVITE",
            "Via  : SIP  /   2.0",
            " /UDP",
            "    192.0.2.2;rport;branch=390skdjuw",
            "s :",
            "NewFangledHeader:   newfangled value",
            " continued newfangled value",
            "UnknownHeaderWithUnusualValue: ;;,,;;,;",
            "",
            "",
        ]);
        let m = SipMessage::parse(&raw).unwrap();
        let to = m.to().unwrap();
        assert_eq!(to.tag(), Some("1918181833n"));
        let from = m.from().unwrap();
        assert_eq!(from.display.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(from.tag(), Some("98asjd8"));
        assert_eq!(m.headers.get("Max-Forwards"), Some("0068"));
        assert_eq!(m.cseq(), Some(CSeq { seq: 9, method: Method::Invite }));
        let via = m.top_via().unwrap();
        assert_eq!((via.transport.as_str(), via.host.as_str(), via.branch()), ("UDP", "192.0.2.2", Some("390skdjuw")));
        assert_eq!(m.headers.get("Subject"), Some(""));
        assert_eq!(m.headers.get("newfangledheader"), Some("newfangled value continued newfangled value"));
        assert_eq!(m.headers.get("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
        assert_eq!(m.request_uri().unwrap().param("unknownparam"), Some(None));
        roundtrip(&m);
    }

    #[test]
    fn lf_only_line_endings_and_leading_crlf() {
        let raw = b"\r\n\r\nSIP/2.0 180 Ringing\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nCall-ID: x\nCSeq: 1 INVITE\n\n";
        let m = SipMessage::parse(raw).unwrap();
        assert_eq!(m.start, StartLine::Response { code: 180, reason: "Ringing".into() });
        assert!(!m.is_request());
        assert_eq!(m.method(), None);
        assert_eq!(m.request_uri(), None);
        assert_eq!(m.cseq().unwrap().method, Method::Invite);
        assert!(m.body.is_empty());
        // Mixed endings: LF then CRLF as the blank line.
        let m = SipMessage::parse(b"SIP/2.0 200 OK\r\nCall-ID: y\n\r\nbody").unwrap();
        assert_eq!(m.body, b"body");
    }

    #[test]
    fn response_reason_phrases() {
        let m = SipMessage::parse(b"SIP/2.0 404 Not  Found Here \r\n\r\n").unwrap();
        assert_eq!(m.start, StartLine::Response { code: 404, reason: "Not  Found Here".into() });
        let m = SipMessage::parse("SIP/2.0 200 Ça va ☺\r\n\r\n".as_bytes()).unwrap();
        assert_eq!(m.start, StartLine::Response { code: 200, reason: "Ça va ☺".into() });
        roundtrip(&m);
        // Empty reason, with and without the SP after the code.
        for raw in [&b"SIP/2.0 100 \r\n\r\n"[..], b"SIP/2.0 100\r\n\r\n"] {
            let m = SipMessage::parse(raw).unwrap();
            assert_eq!(m.start, StartLine::Response { code: 100, reason: String::new() });
            roundtrip(&m);
        }
    }

    #[test]
    fn bad_start_lines() {
        for raw in [
            &b"INVITE sip:a@b SIP/7.0\r\n\r\n"[..], // RFC 4475 "badvers"
            b"INVITE sip:a@b HTTP/1.1\r\n\r\n",
            b"INVITE sip:a@b\r\n\r\n",
            b"INVITE sip:a@b; lr SIP/2.0\r\n\r\n", // SP inside the URI
            b"INV(ITE sip:a@b SIP/2.0\r\n\r\n",
            b"SIP/2.0 4294967301 OK\r\n\r\n", // oversize status code
            b"SIP/2.0 099 Too low\r\n\r\n",
            b"SIP/2.0 20x OK\r\n\r\n",
            b"SIP/2.0\r\n\r\n",
            b"SIP/3.0 200 OK\r\n\r\n",
            b"hello world\r\n\r\n",
            b"\x00\x01\x02\x03",
            b"INVITE sip:a@b SIP/2.0\rX\r\n\r\n", // bare CR
        ] {
            let e = SipMessage::parse(raw).unwrap_err();
            assert_eq!(e.kind, ParseErrorKind::BadStartLine, "{:?}", String::from_utf8_lossy(raw));
            assert!(!e.request_line_ok);
        }
        assert_eq!(SipMessage::parse(b"").unwrap_err().kind, ParseErrorKind::Empty);
        assert_eq!(SipMessage::parse(b"\r\n\r\n\n").unwrap_err().kind, ParseErrorKind::Empty);
        assert_eq!(SipMessage::parse(b"\xff\xfe sip:a SIP/2.0\r\n\r\n").unwrap_err().kind, ParseErrorKind::NotUtf8);
    }

    #[test]
    fn unknown_method_and_odd_request_uri_still_parse() {
        let m = SipMessage::parse(b"NEWMETHOD sip:a@b SIP/2.0\r\n\r\n").unwrap();
        assert_eq!(m.method(), Some(&Method::Other("NEWMETHOD".into())));
        // RFC 4475 "ltgtruri": "<sip:...>" as Request-URI reads, but is not a usable URI.
        let m = SipMessage::parse(b"INVITE <sip:user@example.com> SIP/2.0\r\n\r\n").unwrap();
        assert_eq!(m.request_uri(), None);
        // Lower-case version token is tolerated; we always write "SIP/2.0".
        let m = SipMessage::parse(b"OPTIONS  sip:a@b \t sip/2.0\r\n\r\n").unwrap();
        assert_eq!(m.to_bytes(), b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn multi_valued_headers_are_split() {
        let raw = crlf(&[
            "REGISTER sip:example.com SIP/2.0",
            "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2;received=::1",
            "Via: SIP/2.0/UDP c.example.com;branch=z9hG4bK3",
            "Contact: \"Doe, John\" <sip:jd@10.0.0.1;x=a,b>;expires=60, <sip:jd@10.0.0.2>;q=0.5,sip:jd@10.0.0.3",
            "Record-Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>",
            "Allow: INVITE,ACK , BYE",
            "Supported:",
            "Require: 100rel",
            "Subject: a, b, c",
            "",
            "",
        ]);
        let m = SipMessage::parse(&raw).unwrap();
        let vias: Vec<Via> = m.headers.get_all("Via").filter_map(Via::parse).collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(
            (vias[1].host.as_str(), vias[1].port, vias[1].transport.as_str()),
            ("[2001:db8::1]", Some(5070), "TCP")
        );
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK1"));
        let contacts: Vec<&str> = m.headers.get_all("Contact").collect();
        assert_eq!(
            contacts,
            ["\"Doe, John\" <sip:jd@10.0.0.1;x=a,b>;expires=60", "<sip:jd@10.0.0.2>;q=0.5", "sip:jd@10.0.0.3"]
        );
        assert_eq!(m.contact().unwrap().display.as_deref(), Some("Doe, John"));
        let rr = m.record_routes();
        assert_eq!(rr.iter().map(|n| n.uri.host.as_str()).collect::<Vec<_>>(), ["p1.example.com", "p2.example.com"]);
        assert_eq!(m.headers.get_all("Allow").collect::<Vec<_>>(), ["INVITE", "ACK", "BYE"]);
        assert_eq!(m.headers.get_all("Supported").collect::<Vec<_>>(), [""]);
        assert_eq!(m.headers.get("Subject"), Some("a, b, c"));
        roundtrip(&m);
    }

    #[test]
    fn contact_star_stays_one() {
        let m = SipMessage::parse(b"REGISTER sip:r SIP/2.0\r\nContact: *\r\nExpires: 0\r\n\r\n").unwrap();
        assert_eq!(m.headers.get_all("Contact").collect::<Vec<_>>(), ["*"]);
        assert_eq!(m.contact(), None);
    }

    #[test]
    fn body_without_content_length_is_rest_of_datagram() {
        let m = SipMessage::parse(b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: 1\r\n\r\nhello\r\nworld").unwrap();
        assert_eq!(m.body, b"hello\r\nworld");
        // to_bytes always writes Content-Length; parsing that gives the same
        // message plus the Content-Length header.
        let again = SipMessage::parse(&m.to_bytes()).unwrap();
        assert_eq!(again.body, m.body);
        assert_eq!(again.headers.get("Content-Length"), Some("12"));
        roundtrip(&again);
    }

    #[test]
    fn short_and_long_content_length() {
        let mut raw = invite();
        raw.extend_from_slice(b"trailing junk");
        let m = SipMessage::parse(&raw).unwrap();
        assert_eq!(m.body, b"v=0\r\ns=-\r\n"); // extra bytes ignored

        let raw = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: c1\r\nContent-Length: 50\r\n\r\nshort";
        let e = SipMessage::parse(raw).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Truncated);
        assert!(e.request_line_ok);
        assert_eq!(e.headers.get("Call-ID"), Some("c1"));

        // "007" is read and normalised, so to_bytes round-trips.
        let m = SipMessage::parse(b"SIP/2.0 200 OK\r\nl: 007\r\n\r\n1234567").unwrap();
        assert_eq!(m.headers.get("Content-Length"), Some("7"));
        roundtrip(&m);
    }

    #[test]
    fn bad_content_length() {
        for cl in ["abc", "-1", "+5", "5 5", "", "99999999999999999999999999", "0x10"] {
            let raw = format!("INVITE sip:a@b SIP/2.0\r\nCall-ID: c\r\nContent-Length: {cl}\r\n\r\n");
            let e = SipMessage::parse(raw.as_bytes()).unwrap_err();
            assert_eq!(e.kind, ParseErrorKind::BadContentLength, "{cl:?}");
            assert!(e.request_line_ok);
            assert_eq!(e.headers.get("Call-ID"), Some("c"));
        }
        let e = SipMessage::parse(b"SIP/2.0 200 OK\r\nContent-Length: 1\r\nl: 2\r\n\r\nab").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::BadContentLength);
        assert!(!e.request_line_ok);
        // Identical duplicates are fine.
        assert!(SipMessage::parse(b"SIP/2.0 200 OK\r\nContent-Length: 2\r\nl: 02\r\n\r\nab").is_ok());
    }

    #[test]
    fn bad_headers_report_what_was_read() {
        let raw =
            b"BYE sip:a@b SIP/2.0\r\nCall-ID: abc\r\nCSeq: 2 BYE\r\nthis line has no colon\r\nTo: <sip:a@b>\r\n\r\n";
        let e = SipMessage::parse(raw).unwrap_err();
        assert!(matches!(&e.kind, ParseErrorKind::BadHeader(s) if s.contains("no colon")));
        assert!(e.request_line_ok);
        assert_eq!(e.headers.get("Call-ID"), Some("abc"));
        assert_eq!(e.headers.get("CSeq"), Some("2 BYE"));
        assert_eq!(e.to_string(), "malformed header: this line has no colon");

        for raw in [
            &b"BYE sip:a@b SIP/2.0\r\n continuation first\r\n\r\n"[..],
            b"BYE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
            b"BYE sip:a@b SIP/2.0\r\n: x\r\n\r\n",
            b"BYE sip:a@b SIP/2.0\r\nX: a\rb\r\n\r\n",
        ] {
            assert!(matches!(SipMessage::parse(raw).unwrap_err().kind, ParseErrorKind::BadHeader(_)));
        }
        let e = SipMessage::parse(b"BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\nX: \xff\r\n\r\n").unwrap_err();
        assert_eq!((e.kind, e.headers.len()), (ParseErrorKind::NotUtf8, 1));
    }

    #[test]
    fn truncated_header_sections() {
        for raw in [
            &b"INVITE sip:a@b SIP/2.0"[..],
            b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x",
            b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n",
        ] {
            let e = SipMessage::parse(raw).unwrap_err();
            assert_eq!(e.kind, ParseErrorKind::Truncated);
            assert!(e.request_line_ok);
        }
        let e = SipMessage::parse(b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n").unwrap_err();
        assert_eq!(e.headers.get("Call-ID"), Some("x"));
    }

    #[test]
    fn size_and_count_limits() {
        let mut big = b"MESSAGE sip:a@b SIP/2.0\r\n\r\n".to_vec();
        big.resize(MAX_MESSAGE_SIZE + 1, b'x');
        assert_eq!(SipMessage::parse(&big).unwrap_err().kind, ParseErrorKind::TooLarge);
        big.truncate(MAX_MESSAGE_SIZE);
        assert!(SipMessage::parse(&big).is_ok());

        let mut many = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
        for i in 0..MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        let ok = format!("{many}\r\n");
        assert_eq!(SipMessage::parse(ok.as_bytes()).unwrap().headers.len(), MAX_HEADERS);
        let too_many = format!("{many}X-last: v\r\n\r\n");
        let e = SipMessage::parse(too_many.as_bytes()).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::TooLarge);
        assert_eq!(e.headers.len(), MAX_HEADERS);

        // A comma bomb in one Via line is capped too.
        let bomb = format!("OPTIONS sip:a@b SIP/2.0\r\nVia: {}\r\n\r\n", "SIP/2.0/UDP h,".repeat(1000));
        assert_eq!(SipMessage::parse(bomb.as_bytes()).unwrap_err().kind, ParseErrorKind::TooLarge);
    }

    #[test]
    fn to_bytes_recomputes_content_length_in_place() {
        let mut m = SipMessage::parse(&invite()).unwrap();
        m.body = b"v=0\r\n".to_vec();
        m.headers.push("Content-Length", "999");
        let out = String::from_utf8(m.to_bytes()).unwrap();
        assert_eq!(out.matches("Content-Length").count(), 1);
        assert!(out.contains("Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"));
    }

    #[test]
    fn to_bytes_neutralises_injected_line_breaks() {
        let mut m = SipMessage {
            start: StartLine::Response { code: 200, reason: "OK\r\nEvil: 1".into() },
            headers: Headers::default(),
            body: vec![],
        };
        m.headers.push("X-Note", "a\r\nVia: SIP/2.0/UDP evil");
        let back = SipMessage::parse(&m.to_bytes()).unwrap();
        assert_eq!(back.headers.get("Evil"), None);
        assert_eq!(back.headers.get("Via"), None);
        assert_eq!(back.headers.get("X-Note"), Some("a  Via: SIP/2.0/UDP evil"));
    }

    #[test]
    fn headers_set_remove_push() {
        let mut h = Headers::default();
        h.push("v", "one");
        h.push("To", "t");
        h.push("VIA", "two");
        assert_eq!(h.0[0].name, "Via");
        assert_eq!(h.get_all("Via").collect::<Vec<_>>(), ["one", "two"]);
        h.set("via", "only");
        assert_eq!(
            h.0,
            vec![Header { name: "Via".into(), value: "only".into() }, Header { name: "To".into(), value: "t".into() }]
        );
        h.set("Call-ID", "c");
        assert_eq!(h.0[2].name, "Call-ID");
        h.remove("t");
        assert_eq!(h.get("To"), None);
        assert_eq!(h.len(), 2);
        // Entries pushed raw into the public Vec still match compact/long lookups.
        h.0.push(Header { name: "l".into(), value: "0".into() });
        assert_eq!(h.get("Content-Length"), Some("0"));
    }

    #[test]
    fn torture_valid_oddities() {
        // "intmeth": every token character in method, header name and URI user part.
        let raw = crlf(&[
            "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0",
            "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~",
            "To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>",
            "extensionHeader-!.%*+_`'~:\u{feff}\u{5927}\u{5165}",
            "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~",
            "",
            "",
        ]);
        let m = SipMessage::parse(&raw).unwrap();
        assert_eq!(m.method(), Some(&Method::Other("!interesting-Method0123456789_*+`.%indeed'~".into())));
        assert_eq!(m.cseq().unwrap().method, *m.method().unwrap());
        let ruri = m.request_uri().unwrap();
        assert_eq!(ruri.host, "example.com");
        assert!(ruri.user.unwrap().starts_with("1_unusual.URI~"));
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
        assert_eq!(m.to().unwrap().display.as_deref(), Some("BEL:\x07 NUL:\x00 DEL:\x7f"));
        assert_eq!(m.headers.get("EXTENSIONHEADER-!.%*+_`'~"), Some("\u{feff}\u{5927}\u{5165}"));
        roundtrip(&m);

        // "lwsdisp", "semiuri", "esc01": no LWS before '<', ';' and escapes in the user part.
        let m = SipMessage::parse(b"OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0\r\nFrom: caller<sip:caller@example.com>;tag=323\r\nTo: sip:sips%3Auser%40example.com@example.net\r\n\r\n").unwrap();
        assert_eq!(m.request_uri().unwrap().user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(m.from().unwrap().display.as_deref(), Some("caller"));
        assert_eq!(m.to().unwrap().uri.user.as_deref(), Some("sips%3Auser%40example.com"));

        // "dblreq": a second message after Content-Length in the same datagram is ignored.
        let m = SipMessage::parse(
            b"REGISTER sip:example.com SIP/2.0\r\nl: 0\r\n\r\nINVITE sip:joe@example.com SIP/2.0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(m.method(), Some(&Method::Register));
        assert!(m.body.is_empty());
    }

    #[test]
    fn torture_invalid_values_are_left_to_the_endpoint() {
        // "baddn", "badinv01", "scalar02", "quotbal": the message parses, but
        // the typed accessors refuse the broken values so the endpoint answers 400.
        let raw = crlf(&[
            "INVITE sip:user@example.com SIP/2.0",
            "From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "To: \"Mr. J. User <sip:j.user@example.com>",
            "Via: SIP/2.0/UDP 192.0.2.15;;,;,,",
            "Contact: <sip:user@host.example.com:70000>",
            "CSeq: 36893488147419103232 INVITE",
            "Content-Length: 0",
            "",
            "",
        ]);
        let m = SipMessage::parse(&raw).unwrap();
        assert_eq!(m.from(), None);
        assert_eq!(m.to(), None);
        assert_eq!(m.top_via().unwrap().branch(), None);
        assert_eq!(m.headers.get_all("Via").count(), 2);
        assert_eq!(m.contact(), None);
        assert_eq!(m.cseq(), None);
        // "ncl" / "clerr" are covered by bad_content_length / short_and_long_content_length.
    }

    #[test]
    fn frame_complete_and_split() {
        let msg = invite();
        assert_eq!(frame_stream(&msg), Frame::Complete(msg.len()));
        // Every proper prefix is incomplete, never invalid.
        for cut in 1..msg.len() {
            assert_eq!(frame_stream(&msg[..cut]), Frame::Incomplete, "cut at {cut}");
        }
        assert_eq!(frame_stream(b""), Frame::Incomplete);
    }

    #[test]
    fn frame_pipelined_and_keepalives() {
        let one = invite();
        let two = b"SIP/2.0 200 OK\nl: 3\n\nabc".to_vec();
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(&one);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(&two);
        stream.extend_from_slice(b"BYE sip:x SIP/2.0\r\n");

        let mut rest = &stream[..];
        let mut got = Vec::new();
        loop {
            match frame_stream(rest) {
                Frame::KeepAlive(n) => rest = &rest[n..],
                Frame::Complete(n) => {
                    got.push(SipMessage::parse(&rest[..n]).unwrap());
                    rest = &rest[n..];
                }
                Frame::Incomplete => break,
                Frame::Invalid(why) => panic!("{why}"),
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], SipMessage::parse(&one).unwrap());
        assert_eq!(got[1].body, b"abc");
        assert_eq!(rest, b"BYE sip:x SIP/2.0\r\n");
    }

    #[test]
    fn frame_folded_content_length() {
        let raw = b"SIP/2.0 200 OK\r\nContent-Length:\r\n  2\r\n\r\nok";
        assert_eq!(frame_stream(raw), Frame::Complete(raw.len()));
        assert_eq!(SipMessage::parse(raw).unwrap().body, b"ok");
    }

    #[test]
    fn frame_invalid() {
        let inv = |b: &[u8]| matches!(frame_stream(b), Frame::Invalid(_));
        assert!(inv(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n")); // no Content-Length
        assert!(inv(b"SIP/2.0 200 OK\r\nContent-Length: x\r\n\r\n"));
        assert!(inv(b"SIP/2.0 200 OK\r\nContent-Length: 1\r\nl: 2\r\n\r\n"));
        assert!(inv(b"SIP/2.0 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n"));
        assert!(inv(b"SIP/2.0 200 OK\r\nContent-Length: 70000\r\n\r\n"));
        assert!(inv(b"GET / HTTP/1.1\r\n"));
        assert!(inv(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n"));
        // Headers that never end.
        let mut endless = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
        while endless.len() < MAX_MESSAGE_SIZE + 10 {
            endless.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(inv(&endless));
        // A long first line without LF is just incomplete until the cap.
        assert_eq!(frame_stream(b"OPTIONS sip:a@b SIP/2"), Frame::Incomplete);
    }

    #[test]
    fn frame_bad_header_still_frames() {
        // Framing only needs the start line and Content-Length; the bad header
        // is then reported by parse so the endpoint can answer 400.
        let raw = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: z\r\nno colon here\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(frame_stream(raw), Frame::Complete(raw.len()));
        assert!(SipMessage::parse(raw).unwrap_err().request_line_ok);
    }
}
