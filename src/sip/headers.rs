//! Typed views of single SIP header values (RFC 3261 §19, §20, §25):
//! SIP/SIPS/tel URIs, name-addr (From/To/Contact/Route), Via and CSeq,
//! plus the small lexical helpers the message parser in `message.rs` shares.
//!
//! Every parser here takes an untrusted `&str` and answers `Option`: `None`
//! means "cannot read this", never a panic. Strings are only sliced at indices
//! obtained from `find`/`char_indices` on that same string, which are always
//! in bounds and on char boundaries. Nothing allocates more than a small
//! multiple of its input. All types are re-exported from `sip::message`.
//!
//! The parsers are deliberately tolerant where real phones are sloppy (LWS
//! around `/`, `:`, `;` and `=` in Via, unknown parameters, empty `;;`), and
//! strict where being wrong would route a call to the wrong place (host and
//! port syntax, whitespace inside a URI).

use std::fmt;

use super::message::Method;

/// `;name[=value]` parameters in order of appearance. Names are stored as
/// received and compared case-insensitively (RFC 3261 §19.1.4); values are
/// kept verbatim, quoted-string values with their quotes, so that writing a
/// parsed value back reproduces it.
pub type Params = Vec<(String, Option<String>)>;

// ---------------------------------------------------------------------------
// Lexical helpers (RFC 3261 §25.1)
// ---------------------------------------------------------------------------

/// SP / HTAB: the only whitespace SIP's LWS allows (line folding is undone
/// by the message parser before values reach us).
pub(crate) fn is_lws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Trim SP/HTAB only. `str::trim` would also eat Unicode spaces and
/// VT/FF, which are not SIP whitespace and would make parse/print differ.
pub(crate) fn trim_lws(s: &str) -> &str {
    s.trim_matches(is_lws)
}

/// RFC 3261 `token` characters.
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~')
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// Split `s` at every `sep` that is outside a quoted-string (with `\`
/// escapes) and outside `<...>`. Used for comma-separated header values
/// (`Contact: "Doe, J" <sip:a@b>, <sip:c@d;x=1,2>`) and for `;` parameter
/// lists whose quoted values may contain `;`.
///
/// Splits only happen in the "plain" state, so each piece re-splits to
/// itself: parsing what we wrote gives back what we parsed. An unterminated
/// quote or `<` simply swallows the rest of the string.
pub(crate) fn split_outside(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let (mut in_quote, mut escaped, mut in_angle) = (false, false, false);
    for (i, c) in s.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
        } else if in_angle {
            if c == '>' {
                in_angle = false;
            }
        } else if c == '"' {
            in_quote = true;
        } else if c == '<' {
            in_angle = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Byte index of the first `c` outside a quoted-string, if any.
fn find_outside_quotes(s: &str, target: char) -> Option<usize> {
    let (mut in_quote, mut escaped) = (false, false);
    for (i, c) in s.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
        } else if c == '"' {
            in_quote = true;
        } else if c == target {
            return Some(i);
        }
    }
    None
}

/// Read a quoted-string at the start of `s` (which must begin with `"`).
/// Returns the unescaped content and the text after the closing quote.
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Some((out, &body[i + 1..]));
        } else {
            out.push(c);
        }
    }
    None // unterminated
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

/// A parameter name: anything printable that cannot be confused with the
/// surrounding syntax. Looser than `token` on purpose: URI parameters may
/// legally contain `[]/:&+$%`.
fn valid_param_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars().all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '"' | '<' | '>' | ',' | ';' | '='))
}

/// Parse the parameter list that follows the first `;` (e.g. for
/// `...;branch=z9;rport` pass `branch=z9;rport`). Empty elements (`;;`) are
/// skipped; LWS around `;` and `=` is allowed; a quoted value may contain `;`.
pub(crate) fn parse_params(s: &str) -> Option<Params> {
    let mut out = Vec::new();
    for piece in split_outside(s, ';') {
        let piece = trim_lws(piece);
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match piece.split_once('=') {
            Some((n, v)) => (trim_lws(n), Some(trim_lws(v).to_string())),
            None => (piece, None),
        };
        if !valid_param_name(name) {
            return None;
        }
        out.push((name.to_string(), value));
    }
    Some(out)
}

fn find_param<'a>(params: &'a Params, name: &str) -> Option<Option<&'a str>> {
    params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
}

/// Replace the first parameter called `name` (keeping its position) or append.
fn set_param_in(params: &mut Params, name: &str, value: Option<String>) {
    match params.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        Some(slot) => slot.1 = value,
        None => params.push((name.to_string(), value)),
    }
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &Params) -> fmt::Result {
    for (n, v) in params {
        match v {
            Some(v) => write!(f, ";{n}={v}")?,
            None => write!(f, ";{n}")?,
        }
    }
    Ok(())
}

/// Hostname, IPv4 address, or bracketed IPv6 reference. Brackets are part of
/// the host as in RFC 3261's `host` rule, so `host:port` stays unambiguous.
fn valid_host(h: &str) -> bool {
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        inner.contains(':') && inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    }
}

/// Digits only: `u16::from_str` would also accept a leading `+`.
fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// `host [ ":" port ]`, with LWS tolerated around the colon (Via's sent-by
/// uses SIP's COLON = SWS ":" SWS).
fn parse_hostport(s: &str) -> Option<(String, Option<u16>)> {
    let s = trim_lws(s);
    let (host, rest) = if s.starts_with('[') {
        let end = s.find(']')?;
        s.split_at(end + 1)
    } else {
        match s.find(':') {
            Some(i) => s.split_at(i),
            None => (s, ""),
        }
    };
    let host = trim_lws(host);
    if !valid_host(host) {
        return None;
    }
    let rest = trim_lws(rest);
    let port = if rest.is_empty() { None } else { Some(parse_port(trim_lws(rest.strip_prefix(':')?))?) };
    Some((host.to_string(), port))
}

fn write_hostport(f: &mut fmt::Formatter<'_>, host: &str, port: Option<u16>) -> fmt::Result {
    f.write_str(host)?;
    if let Some(p) = port {
        write!(f, ":{p}")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// CSeq (RFC 3261 §20.16)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// `1*DIGIT LWS Method`. A number that does not fit in 32 bits is an
    /// error (RFC 4475 "scalar02": answer 400).
    pub fn parse(s: &str) -> Option<CSeq> {
        let mut it = s.split(is_lws).filter(|t| !t.is_empty());
        let (num, method) = (it.next()?, it.next()?);
        if it.next().is_some() || !num.bytes().all(|b| b.is_ascii_digit()) || !is_token(method) {
            return None;
        }
        Some(CSeq { seq: num.parse().ok()?, method: Method::parse(method) })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method.as_str())
    }
}

// ---------------------------------------------------------------------------
// Via (RFC 3261 §20.42)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Upper-cased transport: "UDP", "TCP", "TLS", "WS", ...
    pub transport: String,
    /// sent-by host; an IPv6 address keeps its brackets ("[2001:db8::1]").
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    /// One via-parm: `SIP / 2.0 / UDP host[:port] *(;param)`. LWS is allowed
    /// around the slashes, the colon and the semicolons (RFC 4475 "wsinv").
    pub fn parse(s: &str) -> Option<Via> {
        let (proto, rest) = s.split_once('/')?;
        let (version, rest) = rest.split_once('/')?;
        if !trim_lws(proto).eq_ignore_ascii_case("SIP") || trim_lws(version) != "2.0" {
            return None;
        }
        let rest = rest.trim_start_matches(is_lws);
        let tlen = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
        let (transport, rest) = rest.split_at(tlen);
        // The transport and the sent-by must be separated by LWS.
        if transport.is_empty() || !rest.starts_with(is_lws) {
            return None;
        }
        let (sent_by, params) = match rest.split_once(';') {
            Some((h, p)) => (h, parse_params(p)?),
            None => (rest, Vec::new()),
        };
        let (host, port) = parse_hostport(sent_by)?;
        Some(Via { transport: transport.to_ascii_uppercase(), host, port, params })
    }

    /// The branch parameter (transaction id; "z9hG4bK" prefix for RFC 3261 peers).
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// `Some(None)` when present without a value (e.g. `rport` in a request).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// Replace the first parameter of that name (case-insensitive) or append it
    /// (e.g. `received=` / `rport=` on the server side, RFC 3581).
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param_in(&mut self.params, name, value)
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} ", self.transport)?;
        write_hostport(f, &self.host, self.port)?;
        write_params(f, &self.params)
    }
}

// ---------------------------------------------------------------------------
// URIs (RFC 3261 §19.1, RFC 3966 for tel:)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// Lower-cased: "sip", "sips" or "tel".
    pub scheme: String,
    /// userinfo as received, still %-escaped; includes ":password" if one was
    /// given. For tel: URIs, the number.
    pub user: Option<String>,
    /// Host as received (IPv6 with brackets); empty for tel: URIs.
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
    /// Everything after `?`, raw (e.g. "Replaces=...").
    pub headers: Option<String>,
}

impl SipUri {
    /// Parse a bare URI (no angle brackets). Whitespace, controls, `<`, `>`
    /// and `"` can never appear in a URI, so they make it unreadable (this is
    /// what rejects RFC 4475 "ltgtruri" and "lwsruri").
    pub fn parse(s: &str) -> Option<SipUri> {
        if s.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"')) {
            return None;
        }
        let (scheme, rest) = s.split_once(':')?;
        let scheme = scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "sip" | "sips" => {}
            "tel" => {
                // tel:+1-201-555-0123;phone-context=example.com
                let (number, params) = match rest.split_once(';') {
                    Some((n, p)) => (n, parse_params(p)?),
                    None => (rest, Vec::new()),
                };
                if number.is_empty() {
                    return None;
                }
                let user = Some(number.to_string());
                return Some(SipUri { scheme, user, host: String::new(), port: None, params, headers: None });
            }
            _ => return None,
        }
        // A valid user part never contains a raw '@' (it must be escaped), but
        // it may contain ';' and '?', so the first '@' ends the userinfo.
        let (user, rest) = match rest.split_once('@') {
            Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
            Some(_) => return None,
            None => (None, rest),
        };
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h.to_string())),
            None => (rest, None),
        };
        let (hostport, params) = match rest.split_once(';') {
            Some((hp, p)) => (hp, parse_params(p)?),
            None => (rest, Vec::new()),
        };
        let (host, port) = parse_hostport(hostport)?;
        Some(SipUri { scheme, user, host, port, params, headers })
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            // tel: has no host part; its "user" is the whole number.
            if self.scheme != "tel" {
                f.write_str("@")?;
            }
        }
        write_hostport(f, &self.host, self.port)?;
        write_params(f, &self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// name-addr / addr-spec (From, To, Contact, Route, Record-Route, Refer-To)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted and unescaped.
    pub display: Option<String>,
    pub uri: SipUri,
    /// Header parameters (tag, expires, q, +sip.instance, lr ...).
    pub params: Params,
}

impl NameAddr {
    /// Accepts `"Bob" <sip:bob@x>;tag=1`, `Bob Smith <sip:bob@x>`, `<sip:bob@x>`
    /// and the addr-spec form `sip:bob@x;tag=1`, where (RFC 3261 §20.10)
    /// everything after the first `;` is a header parameter, not a URI one.
    pub fn parse(s: &str) -> Option<NameAddr> {
        let s = trim_lws(s);
        if s.starts_with('"') {
            let (display, rest) = parse_quoted(s)?;
            let rest = rest.trim_start_matches(is_lws).strip_prefix('<')?;
            return Self::finish_bracketed(Some(display), rest);
        }
        if let Some(lt) = find_outside_quotes(s, '<') {
            let (disp, rest) = s.split_at(lt);
            let disp = trim_lws(disp);
            // Unquoted display-name is *(token LWS); we also let UTF-8 through
            // since phones send it unquoted anyway.
            if !disp.chars().all(|c| is_token_char(c) || is_lws(c) || !c.is_ascii()) {
                return None;
            }
            let display = if disp.is_empty() { None } else { Some(disp.to_string()) };
            return Self::finish_bracketed(display, rest.strip_prefix('<')?);
        }
        let (uri, params) = match s.split_once(';') {
            Some((u, p)) => (u, parse_params(p)?),
            None => (s, Vec::new()),
        };
        Some(NameAddr { display: None, uri: SipUri::parse(trim_lws(uri))?, params })
    }

    /// `rest` is what follows `<`: "uri> ;params".
    fn finish_bracketed(display: Option<String>, rest: &str) -> Option<NameAddr> {
        let (uri, after) = rest.split_once('>')?;
        let uri = SipUri::parse(trim_lws(uri))?;
        let after = trim_lws(after);
        let params = if after.is_empty() { Vec::new() } else { parse_params(after.strip_prefix(';')?)? };
        Some(NameAddr { display, uri, params })
    }

    pub fn tag(&self) -> Option<&str> {
        find_param(&self.params, "tag").flatten()
    }

    pub fn set_tag(&mut self, tag: &str) {
        set_param_in(&mut self.params, "tag", Some(tag.to_string()))
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

impl fmt::Display for NameAddr {
    /// Always the name-addr form with angle brackets, so URI parameters and
    /// header parameters can never be confused by the reader.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write_quoted(f, d)?;
            f.write_str(" ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_and_brackets() {
        let v = split_outside(r#""Doe, \"J\"" <sip:a@b;x=1,2>;q=0.5, <sip:c@d>"#, ',');
        assert_eq!(v.len(), 2);
        assert_eq!(trim_lws(v[1]), "<sip:c@d>");
        assert_eq!(split_outside("*", ','), vec!["*"]);
        assert_eq!(split_outside("a;b=\"x;y\";c", ';'), vec!["a", "b=\"x;y\"", "c"]);
    }

    #[test]
    fn cseq() {
        assert_eq!(CSeq::parse("4711 INVITE"), Some(CSeq { seq: 4711, method: Method::Invite }));
        assert_eq!(CSeq::parse("  0009 \t INVITE "), Some(CSeq { seq: 9, method: Method::Invite }));
        assert_eq!(CSeq::parse("1 FOO").map(|c| c.method), Some(Method::Other("FOO".into())));
        assert_eq!(CSeq::parse("4294967296 INVITE"), None); // > u32
        assert_eq!(CSeq::parse("-1 INVITE"), None);
        assert_eq!(CSeq::parse("+1 INVITE"), None);
        assert_eq!(CSeq::parse("1"), None);
        assert_eq!(CSeq::parse("1 INVITE x"), None);
        assert_eq!(CSeq::parse("1 INV:ITE"), None);
        assert_eq!(CSeq::parse("").map(|c| c.seq), None);
        assert_eq!(CSeq::parse("7 BYE").unwrap().to_string(), "7 BYE");
    }

    #[test]
    fn via_basic_and_params() {
        let v = Via::parse("SIP/2.0/udp 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!((v.host.as_str(), v.port), ("192.0.2.1", Some(5060)));
        assert_eq!(v.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(v.param("RPORT"), Some(None));
        assert_eq!(v.param("received"), None);
        assert_eq!(v.to_string(), "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport");
    }

    #[test]
    fn via_set_param_replaces_or_appends() {
        let mut v = Via::parse("SIP/2.0/UDP host.example.com;rport;branch=z9hG4bK1").unwrap();
        v.set_param("rport", Some("5062".into()));
        v.set_param("received", Some("198.51.100.3".into()));
        assert_eq!(v.to_string(), "SIP/2.0/UDP host.example.com;rport=5062;branch=z9hG4bK1;received=198.51.100.3");
        assert_eq!(v.port, None);
    }

    #[test]
    fn via_weird_spacing_and_ipv6() {
        // RFC 4475 "wsinv" style: LWS everywhere it is allowed.
        let v =
            Via::parse("SIP  /   2.0 / TCP   spindle.example.com  :  6070 ; branch = z9hG4bK9ikj8 ;received=192.0.2.1")
                .unwrap();
        assert_eq!((v.transport.as_str(), v.host.as_str(), v.port), ("TCP", "spindle.example.com", Some(6070)));
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(v.param("received"), Some(Some("192.0.2.1")));
        let v6 = Via::parse("SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3;received=[2001:db8::9:255]").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[2001:db8::9:1]", Some(5070)));
        assert_eq!(v6.param("received"), Some(Some("[2001:db8::9:255]")));
        assert_eq!(Via::parse(&v6.to_string()), Some(v6));
        assert_eq!(Via::parse("SIP/2.0/UDP [::1]").map(|v| v.port), Some(None));
    }

    #[test]
    fn via_rejects_garbage() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "SIP/3.0/UDP host",
            "HTTP/2.0/UDP host",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host:+5",
            "SIP/2.0/UDP host:",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP [zz::1]",
            "SIP/2.0/UDP ho st",
            "SIP/2.0/UDP host;=x",
            "SIP/2.0/ host",
        ] {
            assert_eq!(Via::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sip_uri_parts() {
        let u =
            SipUri::parse("sips:alice:secret@Atlanta.com:5061;transport=tcp;lr?subject=project%20x&priority=urgent")
                .unwrap();
        assert_eq!(u.scheme, "sips");
        assert_eq!(u.user.as_deref(), Some("alice:secret"));
        assert_eq!((u.host.as_str(), u.port), ("Atlanta.com", Some(5061)));
        assert_eq!(u.param("TRANSPORT"), Some(Some("tcp")));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.headers.as_deref(), Some("subject=project%20x&priority=urgent"));
        assert_eq!(SipUri::parse(&u.to_string()), Some(u));

        // user part containing ';' (telephone-subscriber with phone-context)
        let u = SipUri::parse("SIP:+1-212-555-1212;phone-context=x.com@gw.example.com;user=phone").unwrap();
        assert_eq!(u.scheme, "sip");
        assert_eq!(u.user.as_deref(), Some("+1-212-555-1212;phone-context=x.com"));
        assert_eq!(u.host, "gw.example.com");
        assert_eq!(u.param("user"), Some(Some("phone")));

        let u = SipUri::parse("sip:[2001:db8::10]:5070").unwrap();
        assert_eq!((u.user, u.host.as_str(), u.port), (None, "[2001:db8::10]", Some(5070)));
    }

    #[test]
    fn tel_uri() {
        let u = SipUri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!((u.scheme.as_str(), u.user.as_deref(), u.host.as_str()), ("tel", Some("+1-201-555-0123"), ""));
        assert_eq!(u.param("phone-context"), Some(Some("example.com")));
        assert_eq!(u.to_string(), "tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!(SipUri::parse("tel:"), None);
    }

    #[test]
    fn uri_rejects_garbage() {
        for bad in [
            "",
            "sip:",
            "sip:@host",
            "http://example.com/",
            "sip:user@example.com; lr",
            "<sip:user@example.com>",
            "sip:user@host:0x10",
            "sip:user@host:65536",
            "sip:user@ho\"st",
            "sip:user@",
            "nocolon",
            "sip:a@b;=1",
        ] {
            assert_eq!(SipUri::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(r#""Bob" <sip:bob@biloxi.com>;tag=a6c85cf"#).unwrap();
        assert_eq!(n.display.as_deref(), Some("Bob"));
        assert_eq!(n.uri.user.as_deref(), Some("bob"));
        assert_eq!(n.tag(), Some("a6c85cf"));

        let n = NameAddr::parse("Bob Smith   <sip:bob@biloxi.com;transport=tcp> ; tag = 1928301774").unwrap();
        assert_eq!(n.display.as_deref(), Some("Bob Smith"));
        assert_eq!(n.uri.param("transport"), Some(Some("tcp")));
        assert_eq!(n.tag(), Some("1928301774"));

        let n = NameAddr::parse("<sip:carol@chicago.com>").unwrap();
        assert_eq!((n.display, n.params.len()), (None, 0));

        // addr-spec form: the params after the URI belong to the header.
        let n = NameAddr::parse("sip:bob@x;tag=1;transport=udp").unwrap();
        assert_eq!(n.uri.params, vec![]);
        assert_eq!(n.tag(), Some("1"));
        assert_eq!(n.param("transport"), Some(Some("udp")));
        assert_eq!(n.to_string(), "<sip:bob@x>;tag=1;transport=udp");
    }

    #[test]
    fn name_addr_escaped_display_and_quoted_params() {
        // RFC 4475 "wsinv" style escaped quotes and backslashes in a display name.
        let n = NameAddr::parse(r#""J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=1"#).unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(NameAddr::parse(&n.to_string()), Some(n));

        let n = NameAddr::parse(r#""<Ann, ;\"Q\">" <sip:a@b>;+sip.instance="<urn:uuid:1;2>";expires=60"#).unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"<Ann, ;"Q">"#));
        assert_eq!(n.param("+sip.instance"), Some(Some("\"<urn:uuid:1;2>\"")));
        assert_eq!(n.param("expires"), Some(Some("60")));
        assert_eq!(NameAddr::parse(&n.to_string()), Some(n));

        // addr-spec form with a quoted '<' in a parameter is still addr-spec
        let n = NameAddr::parse(r#"sip:a@b;x="<y>""#).unwrap();
        assert_eq!(n.param("x"), Some(Some("\"<y>\"")));
    }

    #[test]
    fn name_addr_set_tag_and_display() {
        let mut n = NameAddr::parse("Alice <sip:alice@atlanta.com>").unwrap();
        assert_eq!(n.tag(), None);
        n.set_tag("88sja8x");
        assert_eq!(n.to_string(), r#""Alice" <sip:alice@atlanta.com>;tag=88sja8x"#);
        n.set_tag("other");
        assert_eq!(n.tag(), Some("other"));
        assert_eq!(n.params.len(), 1);
    }

    #[test]
    fn name_addr_rejects_garbage() {
        for bad in [
            "",
            "*",
            "\"unterminated <sip:a@b>",
            "\"x\" sip:a@b",
            "<sip:a@b",
            "<sip:a@b> junk",
            "<sip:a@b>;",
            "a:b <sip:a@b>",
            "<>",
            "< sip:a b>",
        ] {
            let got = NameAddr::parse(bad);
            // "<sip:a@b>;" is tolerated (empty parameter list); everything else is None.
            if bad == "<sip:a@b>;" {
                assert_eq!(got.map(|n| n.params.len()), Some(0));
            } else {
                assert_eq!(got, None, "{bad:?}");
            }
        }
    }
}
