//! Building responses (RFC 3261 §8.2.6) and in-dialog requests (§12.2.1.1).

use super::types::{Source, Target, Transmit, Transport};
use crate::sip::message::{Headers, Method, SipMessage, SipUri, StartLine, Via};
use std::net::SocketAddr;

/// The methods we implement; a request for any other gets 405 with this list.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY";
pub const ACCEPT: &str = "application/sdp";

pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The top Via as we must echo it: `received` when the sent-by host is not
/// the packet's source address, `rport` filled in when the client asked (RFC 3581).
pub fn fixed_top_via(via: &Via, src: &Source) -> Via {
    let mut v = via.clone();
    let host = v.host.trim_start_matches('[').trim_end_matches(']');
    let src_ip = src.addr.ip().to_string();
    if host != src_ip {
        v.set_param("received", Some(src_ip));
    }
    if let Some(None) = v.param("rport") {
        v.set_param("rport", Some(src.addr.port().to_string()));
        // RFC 3581 §4: with rport, received is always added.
        if v.param("received").is_none() {
            v.set_param("received", Some(src.addr.ip().to_string()));
        }
    }
    v
}

/// Where a response goes (§18.2.2 with RFC 3581): the same connection for
/// TCP; for UDP the source address when rport was asked, else source IP and
/// the Via port.
pub fn response_target(via: &Via, src: &Source) -> Transmit {
    let target = match src.transport {
        Transport::Tcp => src.addr,
        Transport::Udp => {
            if via.param("rport").is_some() {
                src.addr
            } else {
                SocketAddr::new(src.addr.ip(), via.port.unwrap_or(5060))
            }
        }
    };
    Transmit { transport: src.transport, target: Target::Addr(target), conn: src.conn, data: Vec::new() }
}

/// A response to the request whose headers are `req`: Via (top one fixed),
/// From, To (with `to_tag` added when it has none), Call-ID and CSeq copied.
pub fn response(req: &Headers, top_via: &Via, code: u16, to_tag: Option<&str>, server: &str) -> SipMessage {
    let mut h = Headers::default();
    let mut first = true;
    for v in req.get_all("Via") {
        if first {
            h.push("Via", top_via.to_string());
            first = false;
        } else {
            h.push("Via", v);
        }
    }
    if let Some(f) = req.get("From") {
        h.push("From", f);
    }
    if let Some(t) = req.get("To") {
        h.push("To", with_tag(t, to_tag));
    }
    if let Some(c) = req.get("Call-ID") {
        h.push("Call-ID", c);
    }
    if let Some(c) = req.get("CSeq") {
        h.push("CSeq", c);
    }
    h.push("Server", server);
    SipMessage {
        start: StartLine::Response { code, reason: reason_phrase(code).to_string() },
        headers: h,
        body: Vec::new(),
    }
}

/// Add `;tag=` to a To header value that has none (keeps the original text otherwise).
fn with_tag(to: &str, tag: Option<&str>) -> String {
    match (tag, crate::sip::message::NameAddr::parse(to)) {
        (Some(tag), Some(mut na)) if na.tag().is_none() => {
            na.set_tag(tag);
            na.to_string()
        }
        _ => to.to_string(),
    }
}

/// Our Contact for a request that arrived from `src`.
pub fn contact(host: &str, port: u16, transport: Transport) -> String {
    let host = bracket_v6(host);
    match transport {
        Transport::Udp => format!("<sip:switchboard@{host}:{port}>"),
        Transport::Tcp => format!("<sip:switchboard@{host}:{port};transport=tcp>"),
    }
}

pub fn bracket_v6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Where an in-dialog request goes, per the route set (§12.2.1.1, loose and strict routing).
pub struct RequestRouting {
    pub request_uri: String,
    pub routes: Vec<String>,
    pub next_hop: Option<SipUri>,
}

pub fn route_request(remote_target: &str, route_set: &[String]) -> RequestRouting {
    let first = route_set.first().and_then(|r| crate::sip::message::NameAddr::parse(r));
    match first {
        None => RequestRouting { request_uri: remote_target.to_string(), routes: Vec::new(), next_hop: None },
        Some(na) if na.uri.param("lr").is_some() => RequestRouting {
            request_uri: remote_target.to_string(),
            routes: route_set.to_vec(),
            next_hop: Some(na.uri),
        },
        Some(na) => {
            // Strict router: it becomes the Request-URI; the remote target goes last in Route.
            let mut routes: Vec<String> = route_set[1..].to_vec();
            routes.push(format!("<{remote_target}>"));
            RequestRouting { request_uri: na.uri.to_string(), routes, next_hop: Some(na.uri) }
        }
    }
}

/// The address (or name to resolve) and transport of a SIP URI (no DNS SRV/NAPTR: host and port as written).
pub fn uri_target(uri: &SipUri, default_transport: Transport) -> (Target, Transport) {
    let transport = match uri.param("transport").flatten() {
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        Some(t) if t.eq_ignore_ascii_case("udp") => Transport::Udp,
        _ => default_transport,
    };
    let port = uri.port.unwrap_or(if uri.scheme == "sips" { 5061 } else { 5060 });
    let host = uri.host.trim_start_matches('[').trim_end_matches(']');
    let target = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
        Err(_) => Target::Host(host.to_string(), port),
    };
    (target, transport)
}

/// A new in-dialog request with a fresh branch.
#[allow(clippy::too_many_arguments)]
pub fn dialog_request(
    method: Method,
    routing: &RequestRouting,
    via_host: &str,
    via_port: u16,
    transport: Transport,
    branch: &str,
    from: &str,
    to: &str,
    call_id: &str,
    cseq: u32,
    user_agent: &str,
) -> SipMessage {
    let mut h = Headers::default();
    h.push(
        "Via",
        format!("SIP/2.0/{} {}:{via_port};branch={branch};rport", transport.via_name(), bracket_v6(via_host)),
    );
    h.push("Max-Forwards", "70");
    h.push("From", from);
    h.push("To", to);
    h.push("Call-ID", call_id);
    h.push("CSeq", format!("{cseq} {}", method.as_str()));
    for r in &routing.routes {
        h.push("Route", r.as_str());
    }
    h.push("User-Agent", user_agent);
    SipMessage { start: StartLine::Request { method, uri: routing.request_uri.clone() }, headers: h, body: Vec::new() }
}
