//! SDP (RFC 4566) parsing and the offer/answer model (RFC 3264) for one audio stream.
//!
//! Only what a telephony UA needs: session/media connection lines, rtpmap,
//! fmtp, ptime and direction attributes. Unknown lines are kept but ignored.
//! Codecs are chosen by our preference order (config), so an operator decides
//! what the appliance spends its CPU on; the answer keeps the offer's payload
//! type numbers and m-line order, rejecting other streams with port 0.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Option<String>,
    pub connection: Option<IpAddr>,
    /// Session-level attributes (`a=name[:value]`).
    pub attributes: Vec<(String, Option<String>)>,
    pub media: Vec<MediaDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<String>,
    pub connection: Option<IpAddr>,
    pub attributes: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not UTF-8")]
    NotUtf8,
    #[error("SDP has no v= line")]
    NoVersion,
    #[error("bad SDP line {0}: {1}")]
    BadLine(usize, String),
    #[error("SDP too large")]
    TooLarge,
}

/// Direction attribute (RFC 3264 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
    fn parse(s: &str) -> Option<Direction> {
        Some(match s {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
    /// Our direction in the answer to an offer with this direction.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }
    pub fn we_send(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    pub fn we_receive(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// Audio codecs the media engine can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
    /// RFC 7587: always `opus/48000/2` in SDP, whatever is actually encoded.
    Opus,
}

impl Codec {
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }
    /// RTP clock rate (timestamp units per second).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }
    /// The `encoding/rate[/channels]` part of an rtpmap line.
    pub fn rtpmap(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU/8000",
            Codec::Pcma => "PCMA/8000",
            Codec::Opus => "opus/48000/2",
        }
    }
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::Opus => None,
        }
    }
}

impl From<crate::config::CodecName> for Codec {
    fn from(c: crate::config::CodecName) -> Codec {
        match c {
            crate::config::CodecName::Pcmu => Codec::Pcmu,
            crate::config::CodecName::Pcma => Codec::Pcma,
            crate::config::CodecName::Opus => Codec::Opus,
        }
    }
}

/// What the offerer said about its Opus decoder (RFC 7587 §6.1 fmtp), which
/// bounds what our encoder may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpusFmtp {
    /// The peer can use in-band FEC we send.
    pub useinbandfec: bool,
    pub maxaveragebitrate: Option<u32>,
    pub maxplaybackrate: Option<u32>,
    /// The peer prefers stereo (we always send mono content; it is legal).
    pub stereo: bool,
}

impl OpusFmtp {
    fn parse(fmtp: &str) -> OpusFmtp {
        let mut o = OpusFmtp::default();
        for kv in fmtp.split(';') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "useinbandfec" => o.useinbandfec = v == "1",
                "maxaveragebitrate" => o.maxaveragebitrate = v.parse().ok(),
                "maxplaybackrate" => o.maxplaybackrate = v.parse().ok(),
                "stereo" => o.stereo = v == "1",
                _ => {}
            }
        }
        o
    }
}

/// The outcome of negotiating an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Index of the audio m-line we accepted.
    pub media_index: usize,
    pub codec: Codec,
    pub payload_type: u8,
    pub dtmf_payload_type: Option<u8>,
    /// Clock rate of the telephone-event format (8000, or 48000 beside Opus).
    pub dtmf_clock_rate: u32,
    pub ptime_ms: u32,
    /// Our direction (what goes in the answer).
    pub direction: Direction,
    /// The offer's Opus parameters (when the codec is Opus).
    pub opus: Option<OpusFmtp>,
    /// Where the peer wants RTP; None when on hold (c=0.0.0.0) or port 0.
    pub remote_rtp: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiateError {
    #[error("no audio stream in the offer")]
    NoAudio,
    #[error("no acceptable audio codec in the offer (offered: {0})")]
    NoCommonCodec(String),
    #[error("unsupported media transport {0} (plain RTP/AVP only)")]
    UnsupportedProto(String),
}

const MAX_SDP: usize = 16 * 1024;

pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    if body.len() > MAX_SDP {
        return Err(SdpError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut sd = SessionDescription { origin: None, connection: None, attributes: Vec::new(), media: Vec::new() };
    let mut saw_version = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| SdpError::BadLine(n + 1, why.to_string());
        let (kind, value) = match line.split_once('=') {
            Some((k, v)) if k.len() == 1 => (k, v),
            _ => return Err(bad("expected `x=value`")),
        };
        match kind {
            "v" => {
                if value.trim() != "0" {
                    return Err(bad("unsupported SDP version"));
                }
                saw_version = true;
            }
            "o" => sd.origin = Some(value.to_string()),
            "c" => {
                let addr = parse_connection(value).ok_or_else(|| bad("bad c= line"))?;
                match sd.media.last_mut() {
                    Some(m) => m.connection = Some(addr),
                    None => sd.connection = Some(addr),
                }
            }
            "m" => {
                let mut it = value.split_ascii_whitespace();
                let kind = it.next().ok_or_else(|| bad("m= without media"))?.to_string();
                let port_s = it.next().ok_or_else(|| bad("m= without port"))?;
                // "49170/2" (port count) is legal; we only use the first port.
                let port: u16 = port_s.split('/').next().unwrap_or("").parse().map_err(|_| bad("bad m= port"))?;
                let proto = it.next().ok_or_else(|| bad("m= without proto"))?.to_string();
                let formats: Vec<String> = it.map(str::to_string).collect();
                if sd.media.len() >= 16 {
                    return Err(bad("too many m= lines"));
                }
                sd.media.push(MediaDescription {
                    kind,
                    port,
                    proto,
                    formats,
                    connection: None,
                    attributes: Vec::new(),
                });
            }
            "a" => {
                let (name, val) = match value.split_once(':') {
                    Some((a, b)) => (a.to_string(), Some(b.to_string())),
                    None => (value.to_string(), None),
                };
                let attrs = match sd.media.last_mut() {
                    Some(m) => &mut m.attributes,
                    None => &mut sd.attributes,
                };
                if attrs.len() < 256 {
                    attrs.push((name, val));
                }
            }
            _ => {} // s=, t=, b=, i=, ... carry nothing we act on
        }
    }
    if !saw_version {
        return Err(SdpError::NoVersion);
    }
    Ok(sd)
}

fn parse_connection(v: &str) -> Option<IpAddr> {
    let mut it = v.split_ascii_whitespace();
    let (net, atype, addr) = (it.next()?, it.next()?, it.next()?);
    if net != "IN" {
        return None;
    }
    // Multicast "224.2.1.1/127" carries a TTL suffix.
    let addr = addr.split('/').next()?;
    let ip: IpAddr = addr.parse().ok()?;
    match (atype, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Some(ip),
        _ => None,
    }
}

impl MediaDescription {
    fn attr(&self, name: &str) -> Option<Option<&str>> {
        self.attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_deref())
    }
    /// The fmtp parameters of a payload type.
    pub fn fmtp(&self, pt: &str) -> Option<&str> {
        self.attributes.iter().find_map(|(n, v)| {
            let (p, rest) = v.as_deref()?.split_once(' ')?;
            (n == "fmtp" && p.trim() == pt).then_some(rest.trim())
        })
    }
    /// (encoding name, clock rate) for a payload type, from rtpmap or the static table.
    pub fn rtpmap(&self, pt: &str) -> Option<(String, u32)> {
        for (n, v) in &self.attributes {
            if n != "rtpmap" {
                continue;
            }
            let Some(v) = v else { continue };
            let Some((p, rest)) = v.split_once(' ') else { continue };
            if p.trim() == pt {
                let mut parts = rest.trim().split('/');
                let name = parts.next()?.to_string();
                let rate = parts.next()?.parse().ok()?;
                return Some((name, rate));
            }
        }
        match pt {
            "0" => Some(("PCMU".into(), 8000)),
            "8" => Some(("PCMA".into(), 8000)),
            _ => None,
        }
    }
    pub fn direction(&self) -> Option<Direction> {
        self.attributes.iter().find_map(|(n, v)| if v.is_none() { Direction::parse(n) } else { None })
    }
}

/// Choose a codec and direction for the first usable audio stream of `offer`.
pub fn negotiate(
    offer: &SessionDescription,
    prefs: &[Codec],
    default_ptime_ms: u32,
) -> Result<Negotiated, NegotiateError> {
    let mut saw_audio = false;
    let mut bad_proto = None;
    let mut offered = Vec::new();
    for (idx, m) in offer.media.iter().enumerate() {
        if m.kind != "audio" || m.port == 0 {
            continue;
        }
        saw_audio = true;
        if m.proto != "RTP/AVP" && m.proto != "RTP/AVPF" {
            bad_proto = Some(m.proto.clone());
            continue;
        }
        let mut best: Option<(usize, Codec, u8)> = None;
        let mut dtmf: Vec<(u8, u32)> = Vec::new();
        for f in &m.formats {
            let Ok(pt) = f.parse::<u8>() else { continue };
            let Some((name, rate)) = m.rtpmap(f) else {
                offered.push(format!("PT {f}"));
                continue;
            };
            offered.push(format!("{name}/{rate}"));
            if name.eq_ignore_ascii_case("telephone-event") && (rate == 8000 || rate == 48000) {
                dtmf.push((pt, rate));
                continue;
            }
            for (rank, c) in prefs.iter().enumerate() {
                if name.eq_ignore_ascii_case(c.encoding_name())
                    && rate == c.clock_rate()
                    && best.is_none_or(|b| rank < b.0)
                {
                    best = Some((rank, *c, pt));
                }
            }
        }
        let Some((_, codec, payload_type)) = best else { continue };
        // telephone-event at the audio's clock rate if offered (RFC 4733 §2.1), else at 8 kHz.
        let dtmf =
            dtmf.iter().find(|(_, r)| *r == codec.clock_rate()).or(dtmf.iter().find(|(_, r)| *r == 8000)).copied();
        let opus = (codec == Codec::Opus).then(|| OpusFmtp::parse(m.fmtp(&payload_type.to_string()).unwrap_or("")));
        let session_dir =
            offer.attributes.iter().find_map(|(n, v)| if v.is_none() { Direction::parse(n) } else { None });
        let offer_dir = m.direction().or(session_dir).unwrap_or(Direction::SendRecv);
        let conn = m.connection.or(offer.connection);
        // c=0.0.0.0 is the RFC 2543 way of putting a call on hold.
        let remote_rtp = conn.filter(|ip| !ip.is_unspecified()).map(|ip| SocketAddr::new(ip, m.port));
        let ptime = m
            .attr("ptime")
            .flatten()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|p| (10..=60).contains(p) && p % 10 == 0)
            .unwrap_or(default_ptime_ms);
        return Ok(Negotiated {
            media_index: idx,
            codec,
            payload_type,
            dtmf_payload_type: dtmf.map(|d| d.0),
            dtmf_clock_rate: dtmf.map_or(8000, |d| d.1),
            ptime_ms: ptime,
            direction: offer_dir.answer(),
            remote_rtp,
            opus,
        });
    }
    if !offered.is_empty() {
        return Err(NegotiateError::NoCommonCodec(offered.join(", ")));
    }
    if let Some(p) = bad_proto {
        return Err(NegotiateError::UnsupportedProto(p));
    }
    if saw_audio {
        return Err(NegotiateError::NoCommonCodec("nothing".into()));
    }
    Err(NegotiateError::NoAudio)
}

/// Identity of our SDP session: o= line fields that must stay stable across re-offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub session_id: u64,
    pub version: u64,
}

fn ip_line(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("IN IP4 {a}"),
        IpAddr::V6(a) => format!("IN IP6 {a}"),
    }
}

/// Build the SDP answer: same m-line count and order as the offer (RFC 3264 §6),
/// our chosen stream with the local RTP address, every other stream rejected with port 0.
pub fn build_answer(offer: &SessionDescription, neg: &Negotiated, local: SocketAddr, origin: Origin) -> String {
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "v=0\r\no=switchboard {} {} {}\r\ns=switchboard\r\nc={}\r\nt=0 0\r\n",
        origin.session_id,
        origin.version,
        ip_line(local.ip()),
        ip_line(local.ip())
    );
    for (idx, m) in offer.media.iter().enumerate() {
        if idx == neg.media_index {
            write_audio(&mut s, neg, local.port());
        } else {
            let fmt = m.formats.first().map(String::as_str).unwrap_or("0");
            let _ = write!(s, "m={} 0 {} {}\r\n", m.kind, m.proto, fmt);
        }
    }
    s
}

/// Our offer for an outbound call: every codec we accept, in our order of preference, with
/// telephone-event (8 kHz, and 48 kHz beside Opus).
pub fn build_offer(codecs: &[Codec], ptime_ms: u32, local: SocketAddr, origin: Origin) -> String {
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "v=0\r\no=switchboard {} {} {}\r\ns=switchboard\r\nc={}\r\nt=0 0\r\n",
        origin.session_id,
        origin.version,
        ip_line(local.ip()),
        ip_line(local.ip())
    );
    let pt = |c: Codec| c.static_payload_type().unwrap_or(111);
    let opus = codecs.contains(&Codec::Opus);
    let mut fmts: Vec<String> = codecs.iter().map(|&c| pt(c).to_string()).collect();
    fmts.push("101".into());
    if opus {
        fmts.push("102".into());
    }
    let _ = write!(s, "m=audio {} RTP/AVP {}\r\n", local.port(), fmts.join(" "));
    for &c in codecs {
        let _ = write!(s, "a=rtpmap:{} {}\r\n", pt(c), c.rtpmap());
        if c == Codec::Opus {
            let _ = write!(s, "a=fmtp:111 useinbandfec=1;stereo=0;sprop-stereo=0;maxplaybackrate=16000;sprop-maxcapturerate=16000\r\n");
        }
    }
    let _ = write!(s, "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n");
    if opus {
        let _ = write!(s, "a=rtpmap:102 telephone-event/48000\r\na=fmtp:102 0-16\r\n");
    }
    let _ = write!(s, "a=ptime:{ptime_ms}\r\na=sendrecv\r\n");
    s
}

fn write_audio(s: &mut String, neg: &Negotiated, port: u16) {
    let _ = write!(s, "m=audio {port} RTP/AVP {}", neg.payload_type);
    if let Some(d) = neg.dtmf_payload_type {
        let _ = write!(s, " {d}");
    }
    let _ = write!(s, "\r\na=rtpmap:{} {}\r\n", neg.payload_type, neg.codec.rtpmap());
    if neg.codec == Codec::Opus {
        // What our decoder wants: mono, wideband (we decode at 16 kHz), FEC welcome.
        let _ = write!(
            s,
            "a=fmtp:{} useinbandfec=1;stereo=0;sprop-stereo=0;maxplaybackrate=16000;sprop-maxcapturerate=16000\r\n",
            neg.payload_type
        );
    }
    if let Some(d) = neg.dtmf_payload_type {
        let _ = write!(s, "a=rtpmap:{d} telephone-event/{}\r\na=fmtp:{d} 0-16\r\n", neg.dtmf_clock_rate);
    }
    let _ = write!(s, "a=ptime:{}\r\na={}\r\n", neg.ptime_ms, neg.direction.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:30\r\na=sendonly\r\n\
m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";

    #[test]
    fn negotiates_by_our_preference_and_flips_direction() {
        let sd = parse(OFFER.as_bytes()).unwrap();
        let n = negotiate(&sd, &[Codec::Pcmu, Codec::Pcma], 20).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.payload_type, 0);
        assert_eq!(n.dtmf_payload_type, Some(101));
        assert_eq!(n.ptime_ms, 30);
        assert_eq!(n.direction, Direction::RecvOnly);
        assert_eq!(n.remote_rtp, Some("10.0.0.1:4000".parse().unwrap()));
        let n2 = negotiate(&sd, &[Codec::Pcma], 20).unwrap();
        assert_eq!((n2.codec, n2.payload_type), (Codec::Pcma, 8));
    }

    #[test]
    fn answer_keeps_mline_order_and_rejects_video() {
        let sd = parse(OFFER.as_bytes()).unwrap();
        let n = negotiate(&sd, &[Codec::Pcma], 20).unwrap();
        let a = build_answer(&sd, &n, "192.0.2.7:30000".parse().unwrap(), Origin { session_id: 9, version: 1 });
        assert!(a.contains("c=IN IP4 192.0.2.7\r\n"));
        assert!(a.contains("m=audio 30000 RTP/AVP 8 101\r\n"));
        assert!(a.contains("a=rtpmap:8 PCMA/8000\r\n"));
        assert!(a.contains("a=recvonly\r\n"));
        assert!(a.contains("m=video 0 RTP/AVP 96\r\n"));
        let back = parse(a.as_bytes()).unwrap();
        assert_eq!(back.media.len(), 2);
        assert_eq!(back.media[0].direction(), Some(Direction::RecvOnly));
    }

    #[test]
    fn rejects_offers_we_cannot_serve() {
        let g729 = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        let sd = parse(g729.as_bytes()).unwrap();
        assert!(
            matches!(negotiate(&sd, &[Codec::Pcmu], 20), Err(NegotiateError::NoCommonCodec(s)) if s.contains("G729"))
        );
        let srtp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/SAVP 0\r\n";
        assert!(matches!(
            negotiate(&parse(srtp.as_bytes()).unwrap(), &[Codec::Pcmu], 20),
            Err(NegotiateError::UnsupportedProto(_))
        ));
        let video = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 4000 RTP/AVP 96\r\n";
        assert_eq!(negotiate(&parse(video.as_bytes()).unwrap(), &[Codec::Pcmu], 20), Err(NegotiateError::NoAudio));
    }

    #[test]
    fn hold_and_ipv6_and_static_without_rtpmap() {
        let hold = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let n = negotiate(&parse(hold.as_bytes()).unwrap(), &[Codec::Pcmu], 20).unwrap();
        assert_eq!(n.remote_rtp, None);
        assert_eq!(n.ptime_ms, 20);
        let v6 = "v=0\r\nc=IN IP6 ::1\r\nm=audio 4002 RTP/AVP 0\r\na=inactive\r\n";
        let n = negotiate(&parse(v6.as_bytes()).unwrap(), &[Codec::Pcmu], 20).unwrap();
        assert_eq!(n.remote_rtp, Some("[::1]:4002".parse().unwrap()));
        assert_eq!(n.direction, Direction::Inactive);
    }

    #[test]
    fn opus_with_fmtp_and_48k_telephone_event() {
        let offer = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 111 0 101 102\r\na=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 useinbandfec=1; maxaveragebitrate=20000;stereo=1\r\na=rtpmap:101 telephone-event/8000\r\na=rtpmap:102 telephone-event/48000\r\n";
        let sd = parse(offer.as_bytes()).unwrap();
        let n = negotiate(&sd, &[Codec::Opus, Codec::Pcmu], 20).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Opus, 111));
        assert_eq!((n.dtmf_payload_type, n.dtmf_clock_rate), (Some(102), 48000), "event clock matches the audio clock");
        let o = n.opus.unwrap();
        assert!(o.useinbandfec && o.stereo);
        assert_eq!(o.maxaveragebitrate, Some(20000));
        let a = build_answer(&sd, &n, "192.0.2.1:30000".parse().unwrap(), Origin { session_id: 1, version: 1 });
        assert!(a.contains("m=audio 30000 RTP/AVP 111 102\r\n"), "{a}");
        assert!(a.contains("a=rtpmap:111 opus/48000/2\r\n"), "{a}");
        assert!(a.contains("a=fmtp:111 useinbandfec=1;stereo=0;"), "{a}");
        assert!(a.contains("a=rtpmap:102 telephone-event/48000\r\n"), "{a}");
        // PCMU preferred: Opus ignored, telephone-event/8000 chosen.
        let n = negotiate(&sd, &[Codec::Pcmu, Codec::Opus], 20).unwrap();
        assert_eq!((n.codec, n.dtmf_payload_type, n.opus), (Codec::Pcmu, Some(101), None));
    }

    #[test]
    fn bad_sdp_is_an_error_not_a_panic() {
        assert_eq!(parse(b"c=IN IP4 1.2.3.4\r\n"), Err(SdpError::NoVersion));
        assert!(parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n").is_err());
        assert!(parse(b"v=0\r\nc=IN IP4 banana\r\n").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
    }
}
