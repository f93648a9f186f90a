//! RTCP (RFC 3550 §6) for one audio stream: packet parsing and writing,
//! reception statistics (Appendix A.1, A.3, A.8) and a sans-IO session that
//! schedules our reports and digests the peer's.
//!
//! Hand-written for the same reasons as [`super::rtp`]: we need only SR, RR,
//! SDES and BYE, the parser faces hostile input and must never panic, and the
//! session has to be a plain state machine driven with explicit `now`
//! instants so its timers and the RTT arithmetic are tested in virtual time.
//!
//! The session never reads a clock. Monotonic time comes in as `now:
//! Instant`; the wall-clock time needed for NTP timestamps is given once at
//! construction and advanced with the monotonic elapsed time, which also
//! keeps NTP timestamps immune to wall-clock steps during a call.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The RTCP version we speak; anything else is not for us.
const VERSION: u8 = 2;
/// Sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// Receiver report (RFC 3550 §6.4.2).
pub const PT_RR: u8 = 201;
/// Source description (RFC 3550 §6.5).
pub const PT_SDES: u8 = 202;
/// Goodbye (RFC 3550 §6.6).
pub const PT_BYE: u8 = 203;
/// SDES item type of the canonical name, the one item every report carries.
pub const SDES_CNAME: u8 = 1;

/// Every RTCP packet type lives in 192..=223 (RFC 5761 §4 reserves exactly
/// that range so RTCP can share a port with RTP). A second octet outside it
/// means the datagram is not RTCP — most likely RTP sent to the wrong port —
/// so rejecting it keeps the parser and `rtp::looks_like_rtcp` in agreement.
const RTCP_TYPES: std::ops::RangeInclusive<u8> = 192..=223;
/// A compound packet in practice holds 2–5 packets (report, SDES, maybe BYE,
/// XR, feedback). Refusing more bounds the work and allocation one datagram
/// can cause; 4-byte empty packets would otherwise let 64 KiB make 16 k of
/// them.
pub const MAX_PACKETS: usize = 32;
/// SDES items kept per chunk; further items are validated and skipped. We only
/// use CNAME, and this bounds what a chunk of empty items can allocate.
pub const MAX_SDES_ITEMS: usize = 16;
/// Report, chunk and SSRC counts are 5-bit fields.
const MAX_COUNT: usize = 31;
/// SDES item text and BYE reason lengths are 8-bit fields.
const MAX_TEXT: usize = 255;
/// Size of one report block on the wire.
const REPORT_BLOCK_LEN: usize = 24;
/// Size of the sender info on the wire.
const SENDER_INFO_LEN: usize = 20;

/// One reception report block (RFC 3550 §6.4.1): what the sender of the
/// report observed about the stream `ssrc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Fraction of packets lost in the last interval, in 1/256.
    pub fraction_lost: u8,
    /// 24-bit signed on the wire; `write` clamps to -2^23..2^23-1 (RFC 3550
    /// A.3: duplicates can make it negative, overflow saturates).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (cycles << 16 | max_seq).
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR from `ssrc`, 0 if none.
    pub lsr: u32,
    /// Delay since that SR was received, in 1/65536 s.
    pub dlsr: u32,
}

/// The sender information of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp (32.32 fixed point, seconds since 1900).
    pub ntp: u64,
    /// The same instant as `ntp`, in RTP timestamp units.
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    /// Payload octets sent (headers and padding excluded).
    pub octet_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    SenderReport {
        ssrc: u32,
        info: SenderInfo,
        reports: Vec<ReportBlock>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: Vec<ReportBlock>,
    },
    /// Chunks of (SSRC, items of (type, text)). Text is decoded lossily as
    /// UTF-8: it is only ever logged, and rejecting a peer's report because of
    /// a Latin-1 NAME would lose the SR it came with.
    Sdes {
        chunks: Vec<(u32, Vec<(u8, String)>)>,
    },
    Bye {
        ssrcs: Vec<u32>,
        reason: Option<String>,
    },
    /// APP, XR, RTCP feedback and anything else in the RTCP type range: we
    /// neither need nor parse them, but they are valid members of a compound.
    Other {
        packet_type: u8,
    },
}

/// Why a datagram is not a usable compound RTCP packet. Every variant is an
/// ordinary outcome of network input (the driver counts and drops), never a
/// bug. One bad member rejects the whole compound, as RFC 3550 A.2 does: its
/// length fields cannot be trusted past that point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    #[error("fewer than 4 octets left for an RTCP header")]
    TooShort,
    #[error("unsupported RTCP version {0}")]
    BadVersion(u8),
    #[error("packet type {0} is outside the RTCP range 192..=223")]
    BadPacketType(u8),
    #[error("length field runs past the end of the datagram")]
    BadLength,
    #[error("padding count is zero or larger than the packet body")]
    BadPadding,
    #[error("packet type {0} is shorter than its count field requires")]
    Truncated(u8),
    #[error("malformed SDES chunk")]
    BadSdes,
    #[error("malformed BYE reason")]
    BadBye,
    #[error("more than {MAX_PACKETS} packets in one compound")]
    TooManyPackets,
}

impl RtcpPacket {
    /// The wire packet type (`Other` gives its own).
    pub fn packet_type(&self) -> u8 {
        match self {
            RtcpPacket::SenderReport { .. } => PT_SR,
            RtcpPacket::ReceiverReport { .. } => PT_RR,
            RtcpPacket::Sdes { .. } => PT_SDES,
            RtcpPacket::Bye { .. } => PT_BYE,
            RtcpPacket::Other { packet_type } => *packet_type,
        }
    }
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parse a compound RTCP packet (several packets back to back; validate version 2, lengths, padding; cap counts). Errors are values, never panics.
///
/// Lenient where RFC 3550 A.2 is strict but nothing is at stake: the first
/// packet need not be SR/RR (RFC 5506 reduced-size RTCP) and padding is
/// accepted on any member, not only the last. Bytes after the parts a member's
/// count describes (profile extensions of SR/RR, SDES chunk padding) are
/// ignored.
pub fn parse_compound(buf: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::TooShort);
    }
    let mut packets = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        if packets.len() == MAX_PACKETS {
            return Err(RtcpError::TooManyPackets);
        }
        if rest.len() < 4 {
            return Err(RtcpError::TooShort);
        }
        let version = rest[0] >> 6;
        if version != VERSION {
            return Err(RtcpError::BadVersion(version));
        }
        let has_padding = rest[0] & 0x20 != 0;
        let count = usize::from(rest[0] & 0x1F);
        let packet_type = rest[1];
        if !RTCP_TYPES.contains(&packet_type) {
            return Err(RtcpError::BadPacketType(packet_type));
        }
        // Length in 32-bit words minus one, so at most 4 * 65536: no overflow.
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if len > rest.len() {
            return Err(RtcpError::BadLength);
        }
        let (packet, tail) = rest.split_at(len);
        let mut body = &packet[4..];
        if has_padding {
            // The last octet counts the padding octets, itself included; zero
            // is malformed and the padding may not eat into the header.
            let pad = usize::from(body.last().copied().unwrap_or(0));
            if pad == 0 || pad > body.len() {
                return Err(RtcpError::BadPadding);
            }
            body = &body[..body.len() - pad];
        }
        packets.push(parse_one(packet_type, count, body)?);
        rest = tail;
    }
    Ok(packets)
}

fn parse_one(packet_type: u8, count: usize, body: &[u8]) -> Result<RtcpPacket, RtcpError> {
    match packet_type {
        PT_SR => {
            let ssrc = be_u32(body, 0).ok_or(RtcpError::Truncated(packet_type))?;
            let info = body.get(4..4 + SENDER_INFO_LEN).ok_or(RtcpError::Truncated(packet_type))?;
            let info = SenderInfo {
                ntp: (u64::from(be_u32(info, 0).unwrap_or(0)) << 32) | u64::from(be_u32(info, 4).unwrap_or(0)),
                rtp_timestamp: be_u32(info, 8).unwrap_or(0),
                packet_count: be_u32(info, 12).unwrap_or(0),
                octet_count: be_u32(info, 16).unwrap_or(0),
            };
            let reports = parse_blocks(packet_type, count, &body[4 + SENDER_INFO_LEN..])?;
            Ok(RtcpPacket::SenderReport { ssrc, info, reports })
        }
        PT_RR => {
            let ssrc = be_u32(body, 0).ok_or(RtcpError::Truncated(packet_type))?;
            let reports = parse_blocks(packet_type, count, &body[4..])?;
            Ok(RtcpPacket::ReceiverReport { ssrc, reports })
        }
        PT_SDES => parse_sdes(count, body),
        PT_BYE => {
            let ssrc_len = 4 * count;
            let list = body.get(..ssrc_len).ok_or(RtcpError::Truncated(packet_type))?;
            let ssrcs = list.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
            // SSRCs keep the body word-aligned, so anything after them can
            // only be the optional length-prefixed reason (and its padding).
            let after = &body[ssrc_len..];
            let reason = match after.first() {
                None => None,
                Some(&n) => {
                    let r = after.get(1..1 + usize::from(n)).ok_or(RtcpError::BadBye)?;
                    Some(text(r))
                }
            };
            Ok(RtcpPacket::Bye { ssrcs, reason })
        }
        _ => Ok(RtcpPacket::Other { packet_type }),
    }
}

fn parse_blocks(packet_type: u8, count: usize, b: &[u8]) -> Result<Vec<ReportBlock>, RtcpError> {
    let need = count * REPORT_BLOCK_LEN;
    let b = b.get(..need).ok_or(RtcpError::Truncated(packet_type))?;
    Ok(b.chunks_exact(REPORT_BLOCK_LEN)
        .map(|c| {
            let word1 = be_u32(c, 4).unwrap_or(0);
            // Sign-extend the 24-bit cumulative loss by shifting it into the
            // top of an i32 and back.
            let cumulative_lost = ((word1 << 8) as i32) >> 8;
            ReportBlock {
                ssrc: be_u32(c, 0).unwrap_or(0),
                fraction_lost: (word1 >> 24) as u8,
                cumulative_lost,
                highest_seq: be_u32(c, 8).unwrap_or(0),
                jitter: be_u32(c, 12).unwrap_or(0),
                lsr: be_u32(c, 16).unwrap_or(0),
                dlsr: be_u32(c, 20).unwrap_or(0),
            }
        })
        .collect())
}

fn parse_sdes(count: usize, body: &[u8]) -> Result<RtcpPacket, RtcpError> {
    let mut chunks = Vec::new();
    let mut at = 0usize;
    for _ in 0..count {
        let ssrc = be_u32(body, at).ok_or(RtcpError::BadSdes)?;
        at += 4;
        let mut items = Vec::new();
        loop {
            let ty = *body.get(at).ok_or(RtcpError::BadSdes)?;
            if ty == 0 {
                // END item; null octets pad the chunk to the next 32-bit
                // boundary. The body starts word-aligned within the packet,
                // so aligning the body offset aligns the packet offset.
                at = (at + 1 + 3) & !3;
                break;
            }
            let len = usize::from(*body.get(at + 1).ok_or(RtcpError::BadSdes)?);
            let value = body.get(at + 2..at + 2 + len).ok_or(RtcpError::BadSdes)?;
            if items.len() < MAX_SDES_ITEMS {
                items.push((ty, text(value)));
            }
            at += 2 + len;
        }
        chunks.push((ssrc, items));
    }
    Ok(RtcpPacket::Sdes { chunks })
}

/// Longest prefix of `s` of at most `max` bytes that ends on a char boundary,
/// so truncating a too-long CNAME or reason never produces invalid UTF-8.
fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn write_block(rb: &ReportBlock, out: &mut Vec<u8>) {
    out.extend_from_slice(&rb.ssrc.to_be_bytes());
    let lost = rb.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32 & 0x00FF_FFFF;
    out.extend_from_slice(&((u32::from(rb.fraction_lost) << 24) | lost).to_be_bytes());
    out.extend_from_slice(&rb.highest_seq.to_be_bytes());
    out.extend_from_slice(&rb.jitter.to_be_bytes());
    out.extend_from_slice(&rb.lsr.to_be_bytes());
    out.extend_from_slice(&rb.dlsr.to_be_bytes());
}

/// Append one packet to `out` (never padded, so it can sit anywhere in a
/// compound). Counts beyond what the wire can say are cut rather than
/// rejected, since the caller builds these: report blocks, SDES chunks and
/// BYE SSRCs to 31, SDES items to [`MAX_SDES_ITEMS`] per chunk (type 0 items,
/// which would end the chunk early, are skipped), texts to 255 bytes on a
/// char boundary. `Other` is written as a bare 4-byte header, so only types
/// that are valid with an empty body (not 200–203) round-trip.
pub fn write(p: &RtcpPacket, out: &mut Vec<u8>) {
    let start = out.len();
    let header = |out: &mut Vec<u8>, count: usize, pt: u8| {
        out.push((VERSION << 6) | count as u8);
        out.push(pt);
        out.extend_from_slice(&[0, 0]); // length, filled in below
    };
    match p {
        RtcpPacket::SenderReport { ssrc, info, reports } => {
            let reports = &reports[..reports.len().min(MAX_COUNT)];
            header(out, reports.len(), PT_SR);
            out.extend_from_slice(&ssrc.to_be_bytes());
            out.extend_from_slice(&info.ntp.to_be_bytes());
            out.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
            out.extend_from_slice(&info.packet_count.to_be_bytes());
            out.extend_from_slice(&info.octet_count.to_be_bytes());
            reports.iter().for_each(|rb| write_block(rb, out));
        }
        RtcpPacket::ReceiverReport { ssrc, reports } => {
            let reports = &reports[..reports.len().min(MAX_COUNT)];
            header(out, reports.len(), PT_RR);
            out.extend_from_slice(&ssrc.to_be_bytes());
            reports.iter().for_each(|rb| write_block(rb, out));
        }
        RtcpPacket::Sdes { chunks } => {
            let chunks = &chunks[..chunks.len().min(MAX_COUNT)];
            header(out, chunks.len(), PT_SDES);
            for (ssrc, items) in chunks {
                out.extend_from_slice(&ssrc.to_be_bytes());
                for (ty, value) in items.iter().filter(|(ty, _)| *ty != 0).take(MAX_SDES_ITEMS) {
                    let value = truncate_str(value, MAX_TEXT);
                    out.push(*ty);
                    out.push(value.len() as u8);
                    out.extend_from_slice(value.as_bytes());
                }
                // END item, then null octets to the chunk's word boundary.
                out.push(0);
                while (out.len() - start) % 4 != 0 {
                    out.push(0);
                }
            }
        }
        RtcpPacket::Bye { ssrcs, reason } => {
            let ssrcs = &ssrcs[..ssrcs.len().min(MAX_COUNT)];
            header(out, ssrcs.len(), PT_BYE);
            ssrcs.iter().for_each(|s| out.extend_from_slice(&s.to_be_bytes()));
            if let Some(reason) = reason {
                let reason = truncate_str(reason, MAX_TEXT);
                out.push(reason.len() as u8);
                out.extend_from_slice(reason.as_bytes());
            }
        }
        RtcpPacket::Other { packet_type } => header(out, 0, *packet_type),
    }
    while (out.len() - start) % 4 != 0 {
        out.push(0);
    }
    // The caps above bound a packet to about 128 KiB, well within the 16-bit
    // word count, so the cast cannot truncate.
    let words = ((out.len() - start) / 4 - 1) as u16;
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Time conversions

/// Seconds from the NTP era 0 epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// A duration as 32.32 fixed-point seconds. Wraps past 2^32 s like NTP eras.
fn duration_to_ntp(d: Duration) -> u64 {
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (d.as_secs() << 32).wrapping_add(frac)
}

/// NTP timestamp of a wall-clock time. A time before 1970 (a broken clock)
/// maps to the Unix epoch rather than failing: the timestamps only need to be
/// self-consistent for RTT, and a receiver's lip-sync is not our concern.
fn wall_to_ntp(wall: SystemTime) -> u64 {
    let since_unix = wall.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    duration_to_ntp(since_unix).wrapping_add(NTP_UNIX_OFFSET_SECS << 32)
}

/// The middle 32 bits of an NTP timestamp (16.16 fixed point), the form LSR
/// and the RTT arithmetic use.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// A duration in 1/65536 s, saturating (DLSR).
fn duration_to_units_16(d: Duration) -> u32 {
    let units = d.as_nanos() * 65_536 / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

fn units_16_to_duration(units: u32) -> Duration {
    Duration::from_nanos(u64::from(units) * 1_000_000_000 / 65_536)
}

// ---------------------------------------------------------------------------
// Reception statistics (RFC 3550 Appendix A.1, A.3, A.8)

/// Packets in sequence needed before a new source is believed (A.1).
const MIN_SEQUENTIAL: u32 = 2;
/// A forward jump at least this large is not loss but a restart (A.1).
const MAX_DROPOUT: u32 = 3000;
/// A backward jump up to this large is a late packet, beyond it a restart.
const MAX_MISORDER: u32 = 100;
const RTP_SEQ_MOD: u32 = 1 << 16;

/// The last SR received from a source, which the next report block about that
/// source echoes as LSR/DLSR so the source can measure the round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSr {
    /// Sender SSRC of the SR: a report block uses it only for that source.
    pub ssrc: u32,
    /// The SR's NTP timestamp.
    pub ntp: u64,
    /// When it arrived (our monotonic time).
    pub received_at: Instant,
}

/// Per-source state of Appendix A.1 (`source` struct) plus the A.3 interval
/// counters and the A.8 jitter estimate.
#[derive(Debug, Clone)]
struct Source {
    ssrc: u32,
    max_seq: u16,
    /// Sequence number wrap count, already shifted (a multiple of 2^16).
    cycles: u64,
    base_seq: u16,
    /// Sequence number after a suspicious jump; if it comes next, the sender
    /// restarted. RTP_SEQ_MOD + 1 (no sequence number) when none pending.
    bad_seq: u32,
    /// Sequential packets still needed before the source is valid.
    probation: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Relative transit time of the previous packet, in timestamp units;
    /// None until the first packet since (re)start.
    transit: Option<u32>,
    /// Interarrival jitter estimate in timestamp units (A.8, kept as f64 so
    /// no precision is lost to the integer scaling of the RFC's sample code).
    jitter: f64,
}

impl Source {
    /// A.1: a newly heard source starts on probation.
    fn new(ssrc: u32, seq: u16) -> Self {
        let mut s = Source {
            ssrc,
            max_seq: seq,
            cycles: 0,
            base_seq: seq,
            bad_seq: RTP_SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0.0,
        };
        s.init_seq(seq);
        s.max_seq = seq.wrapping_sub(1);
        s
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = seq;
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
        // A restarted sender picks a new random timestamp base: measuring
        // transit across it would put a 2^31-sized spike into the jitter.
        self.transit = None;
    }

    /// A.1 `update_seq`, transcribed: true when the packet counts as received.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = u32::from(seq.wrapping_sub(self.max_seq));
        if self.probation > 0 {
            // Packet is in sequence: one step closer to believing the source.
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return true;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return false;
        } else if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if seq < self.max_seq {
                self.cycles += u64::from(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if udelta <= RTP_SEQ_MOD - MAX_MISORDER {
            // A very large jump: a restart if the next packet follows it.
            if u32::from(seq) == self.bad_seq {
                self.init_seq(seq);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return false;
            }
        } else {
            // Duplicate or reordered packet: counted, as the RFC does, which
            // is why cumulative loss can go negative.
        }
        self.received += 1;
        true
    }

    fn valid(&self) -> bool {
        self.probation == 0
    }

    fn extended_max(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    /// A.3 `expected`.
    fn expected(&self) -> u64 {
        if !self.valid() {
            return 0;
        }
        (self.extended_max() + 1).saturating_sub(u64::from(self.base_seq))
    }

    fn cumulative_lost(&self) -> i64 {
        // Both are far below 2^63 in any call.
        self.expected() as i64 - self.received as i64
    }

    /// A.8 with `arrival` already in timestamp units.
    fn update_jitter(&mut self, timestamp: u32, arrival: u32) {
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(prev) = self.transit {
            // Timestamps are modulo 2^32, so the difference is taken as a
            // signed 32-bit distance.
            let d = transit.wrapping_sub(prev) as i32;
            self.jitter += (f64::from(d.unsigned_abs()) - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }
}

/// Reception statistics of the one stream we receive: sequence validation
/// (A.1), expected/lost/fraction (A.3) and interarrival jitter (A.8).
///
/// One source is tracked. A packet from another SSRC is held as a candidate,
/// which replaces the tracked source once it passes probation (two packets in
/// sequence): a sender that restarts with a new SSRC is followed, while a
/// stray packet of an old stream does not reset the statistics.
#[derive(Debug, Clone)]
pub struct ReceptionStats {
    clock_rate: u32,
    /// Arrival times are measured from the first packet, so the arrival
    /// clock in timestamp units starts at 0 and wraps like timestamps do.
    epoch: Option<Instant>,
    source: Option<Source>,
    candidate: Option<Source>,
    packets: u64,
    last_fraction: f64,
}

impl ReceptionStats {
    /// `clock_rate` of the payload (8000 for G.711); 0 is taken as 1 so the
    /// arithmetic stays defined.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            epoch: None,
            source: None,
            candidate: None,
            packets: 0,
            last_fraction: 0.0,
        }
    }

    /// An RTP packet arrived at `now`. Feed every packet of the stream,
    /// duplicates and late ones included: they are what the statistics count.
    pub fn on_packet(&mut self, ssrc: u32, sequence: u16, timestamp: u32, now: Instant) {
        self.packets += 1;
        let arrival = self.arrival_units(now);
        let source = match &mut self.source {
            Some(s) if s.ssrc == ssrc => s,
            // Nothing believed yet: a new SSRC simply starts over.
            Some(s) if !s.valid() => {
                *s = Source::new(ssrc, sequence);
                s
            }
            Some(_) => {
                let candidate = match &mut self.candidate {
                    Some(c) if c.ssrc == ssrc => c,
                    slot => slot.insert(Source::new(ssrc, sequence)),
                };
                if candidate.update_seq(sequence) {
                    candidate.update_jitter(timestamp, arrival);
                }
                if candidate.valid() {
                    self.source = self.candidate.take();
                    self.last_fraction = 0.0;
                }
                return;
            }
            None => self.source.insert(Source::new(ssrc, sequence)),
        };
        if source.update_seq(sequence) {
            source.update_jitter(timestamp, arrival);
        }
    }

    fn arrival_units(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        let nanos = now.saturating_duration_since(epoch).as_nanos();
        // Truncation to u32 is the wrap modulo 2^32 that RTP timestamps have;
        // the product cannot overflow u128 (2^94 ns × 2^32).
        (nanos * u128::from(self.clock_rate) / 1_000_000_000) as u32
    }

    fn valid_source(&self) -> Option<&Source> {
        self.source.as_ref().filter(|s| s.valid())
    }

    /// SSRC of the stream being reported on, once it passed probation.
    pub fn ssrc(&self) -> Option<u32> {
        self.valid_source().map(|s| s.ssrc)
    }

    /// The report block for the tracked source, closing the A.3 interval
    /// (fraction lost is "since the previous report block"). `last_sr` is the
    /// last SR received, echoed as LSR/DLSR when it is from that source. None
    /// until a source passed probation.
    pub fn report_block(&mut self, last_sr: Option<LastSr>, now: Instant) -> Option<ReportBlock> {
        let source = self.source.as_mut().filter(|s| s.valid())?;
        let expected = source.expected();
        let expected_interval = expected.saturating_sub(source.expected_prior);
        source.expected_prior = expected;
        let received_interval = source.received.saturating_sub(source.received_prior);
        source.received_prior = source.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let (fraction_lost, ratio) = if expected_interval == 0 || lost_interval <= 0 {
            (0, 0.0)
        } else {
            // lost_interval <= expected_interval, so this is at most 256 only
            // when everything was lost; 8 bits cannot say 256, so saturate.
            let f = ((lost_interval as u64) << 8) / expected_interval;
            (f.min(255) as u8, lost_interval as f64 / expected_interval as f64)
        };
        self.last_fraction = ratio;
        let (lsr, dlsr) = match last_sr {
            Some(sr) if sr.ssrc == source.ssrc => {
                (ntp_middle(sr.ntp), duration_to_units_16(now.saturating_duration_since(sr.received_at)))
            }
            _ => (0, 0),
        };
        Some(ReportBlock {
            ssrc: source.ssrc,
            fraction_lost,
            cumulative_lost: source.cumulative_lost().clamp(-0x80_0000, 0x7F_FFFF) as i32,
            // The extended sequence number is 32 bits on the wire: wrap.
            highest_seq: source.extended_max() as u32,
            jitter: source.jitter.round() as u32,
            lsr,
            dlsr,
        })
    }

    /// Expected minus received for the tracked source (A.3); negative with
    /// duplicates. Restarts at 0 when the sender restarts or changes SSRC.
    pub fn cumulative_lost(&self) -> i64 {
        self.valid_source().map_or(0, Source::cumulative_lost)
    }

    /// Packets lost over packets expected in the interval closed by the last
    /// `report_block` (0..=1; the exact ratio, not the 8-bit wire value).
    pub fn fraction_lost(&self) -> f64 {
        self.last_fraction
    }

    /// Interarrival jitter of the tracked source in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.valid_source().map_or(0.0, |s| s.jitter * 1000.0 / f64::from(self.clock_rate))
    }

    /// Every packet handed to `on_packet`, whatever its fate: the count an
    /// operator expects. (A.3's `received` excludes probation packets and
    /// restarts with the source; it only feeds the loss arithmetic.)
    pub fn packets_received(&self) -> u64 {
        self.packets
    }
}

// ---------------------------------------------------------------------------
// The session

#[derive(Debug, Clone)]
pub struct RtcpConfig {
    /// Our SSRC: the one our RTP carries.
    pub ssrc: u32,
    /// SDES CNAME (RFC 7022: a random per-call identifier is fine).
    pub cname: String,
    /// Clock rate of the RTP stream, both directions (8000 for G.711).
    pub clock_rate: u32,
    /// RFC 3550 minimum interval; 5 s. Clamped to 100 ms..=1 h so a bad
    /// configuration can neither spin the driver nor overflow an `Instant`.
    pub interval: Duration,
}

const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RtcpStats {
    /// Our reception of the peer's stream.
    pub packets_received: u64,
    pub cumulative_lost: i64,
    /// 0..1, over the interval closed by our last report.
    pub fraction_lost: f64,
    pub jitter_ms: f64,
    /// What the peer reports about our stream (its latest report block on
    /// our SSRC).
    pub remote_fraction_lost: Option<f64>,
    pub remote_cumulative_lost: Option<i64>,
    pub remote_jitter_ms: Option<f64>,
    /// From the peer's report block on our SR (LSR/DLSR), RFC 3550 §6.4.1.
    pub rtt: Option<Duration>,
    /// Compound packets we produced (reports and the BYE).
    pub reports_sent: u64,
    /// SR and RR packets received from the peer.
    pub reports_received: u64,
}

/// RTCP for one call's audio stream: feed it RTP in and out and the peer's
/// RTCP; send what `handle_timeout` and `bye` return.
#[derive(Debug)]
pub struct RtcpSession {
    cfg: RtcpConfig,
    /// Monotonic anchor of the NTP clock.
    epoch: Instant,
    /// NTP time at `epoch`.
    ntp_epoch: u64,
    rng: StdRng,
    reception: ReceptionStats,
    last_sr: Option<LastSr>,
    packets_sent: u32,
    octets_sent: u32,
    /// RTP timestamp of our last packet and when it was sent, to map the SR's
    /// NTP time onto the RTP timeline.
    last_sent: Option<(u32, Instant)>,
    sent_since_report: bool,
    next_report: Instant,
    closed: bool,
    stats: RtcpStats,
}

impl RtcpSession {
    /// `wall` is the wall-clock time at `now`: NTP times follow from it and the monotonic time
    /// since, so the session never reads a clock. `seed` feeds the interval's randomisation
    /// (RFC 3550 §6.3.1; drawn by the driver, fixed in virtual-time tests, so they reproduce).
    pub fn with_seed(mut cfg: RtcpConfig, now: Instant, wall: SystemTime, seed: u64) -> Self {
        cfg.interval = cfg.interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
        cfg.clock_rate = cfg.clock_rate.max(1);
        let mut s = Self {
            reception: ReceptionStats::new(cfg.clock_rate),
            cfg,
            epoch: now,
            ntp_epoch: wall_to_ntp(wall),
            rng: StdRng::seed_from_u64(seed),
            last_sr: None,
            packets_sent: 0,
            octets_sent: 0,
            last_sent: None,
            sent_since_report: false,
            next_report: now,
            closed: false,
            stats: RtcpStats::default(),
        };
        // RFC 3550 §6.2: the first report comes after half the minimum
        // interval, so the peer learns about us (and RTT) sooner.
        s.next_report = now + s.randomised(s.cfg.interval / 2);
        s
    }

    /// `base` scaled by a uniform factor in [0.5, 1.5] (RFC 3550 §6.3.1), so
    /// that endpoints started together do not report in lockstep.
    fn randomised(&mut self, base: Duration) -> Duration {
        let factor: f64 = self.rng.random_range(0.5..=1.5);
        // `as` saturates; base is at most an hour, so no Instant overflow.
        Duration::from_nanos((base.as_nanos() as f64 * factor) as u64)
    }

    /// Our NTP time at `now`.
    fn ntp(&self, now: Instant) -> u64 {
        self.ntp_epoch.wrapping_add(duration_to_ntp(now.saturating_duration_since(self.epoch)))
    }

    pub fn on_rtp_received(&mut self, ssrc: u32, sequence: u16, timestamp: u32, now: Instant) {
        self.reception.on_packet(ssrc, sequence, timestamp, now);
    }

    /// We sent an RTP packet (for SR sender info: packet and octet counts, and the RTP timestamp ↔ NTP mapping).
    pub fn on_rtp_sent(&mut self, timestamp: u32, payload_len: usize, now: Instant) {
        // RFC 3550 §6.4.1: both counts wrap modulo 2^32.
        self.packets_sent = self.packets_sent.wrapping_add(1);
        let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
        self.octets_sent = self.octets_sent.wrapping_add(len);
        self.last_sent = Some((timestamp, now));
        self.sent_since_report = true;
    }

    /// A received RTCP datagram. Updates remote stats and RTT; returns the parsed packets (so the caller can log a BYE).
    pub fn handle_rtcp(&mut self, buf: &[u8], now: Instant) -> Result<Vec<RtcpPacket>, RtcpError> {
        let packets = parse_compound(buf)?;
        for p in &packets {
            let (sender, reports) = match p {
                RtcpPacket::SenderReport { ssrc, info, reports } => {
                    if *ssrc != self.cfg.ssrc {
                        self.last_sr = Some(LastSr { ssrc: *ssrc, ntp: info.ntp, received_at: now });
                    }
                    (*ssrc, reports)
                }
                RtcpPacket::ReceiverReport { ssrc, reports } => (*ssrc, reports),
                _ => continue,
            };
            // Our own reports reflected back (a looping peer or middlebox)
            // would report on the peer's stream as if about ours.
            if sender == self.cfg.ssrc {
                continue;
            }
            self.stats.reports_received += 1;
            let ours = self.cfg.ssrc;
            for rb in reports.iter().filter(|rb| rb.ssrc == ours) {
                self.on_report_about_us(rb, now);
            }
        }
        Ok(packets)
    }

    fn on_report_about_us(&mut self, rb: &ReportBlock, now: Instant) {
        self.stats.remote_fraction_lost = Some(f64::from(rb.fraction_lost) / 256.0);
        self.stats.remote_cumulative_lost = Some(i64::from(rb.cumulative_lost));
        self.stats.remote_jitter_ms = Some(f64::from(rb.jitter) * 1000.0 / f64::from(self.cfg.clock_rate));
        // RFC 3550 §6.4.1: RTT = A - LSR - DLSR, all in 1/65536 s. LSR 0
        // means the peer has not had an SR from us yet.
        if rb.lsr != 0 {
            let arrival = ntp_middle(self.ntp(now));
            // Modulo 2^32 (18 h): "since" is the SR's age if it is from the
            // last 9 h; a larger value means the LSR is in our future (a
            // garbled or forged block), and DLSR beyond the age would make
            // the RTT negative — both are ignored.
            let since_sr = arrival.wrapping_sub(rb.lsr);
            // Peers compute DLSR at coarse resolution (baresip: milliseconds): on a short path it
            // can exceed the SR's age by its rounding. Up to 5 ms of that is an RTT of ~0, not garbage.
            const ROUNDING: u32 = 5 * 65536 / 1000;
            if since_sr < 1 << 31 && rb.dlsr <= since_sr {
                self.stats.rtt = Some(units_16_to_duration(since_sr - rb.dlsr));
            } else if since_sr < 1 << 31 && rb.dlsr - since_sr <= ROUNDING {
                self.stats.rtt = Some(Duration::ZERO);
            }
        }
    }

    /// When the next report is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_report
    }

    /// When due: a compound packet to send (SR if we sent RTP since the last report, else RR; always followed by SDES CNAME; report block for the peer's SSRC if we received any). Next interval randomised in [0.5, 1.5] × interval (RFC 3550 §6.3.1); the first report after ~interval/2 (faster first feedback).
    ///
    /// After [`RtcpSession::bye`] nothing more is sent, but the deadline
    /// still moves on so a driver that keeps polling does not spin.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Vec<u8>> {
        if now < self.next_report {
            return None;
        }
        // Scheduled from when the report actually goes out (RFC 3550 §6.3.6
        // sets tp = tc), so a late wake-up does not cause a burst.
        self.next_report = now + self.randomised(self.cfg.interval);
        if self.closed {
            return None;
        }
        let mut out = Vec::new();
        self.write_report(now, &mut out);
        Some(out)
    }

    /// A compound RR/SR + SDES + BYE for the end of the call.
    pub fn bye(&mut self, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_report(now, &mut out);
        write(&RtcpPacket::Bye { ssrcs: vec![self.cfg.ssrc], reason: None }, &mut out);
        self.closed = true;
        out
    }

    /// SR or RR, then SDES CNAME: the compound every report starts with
    /// (RFC 3550 §6.1).
    fn write_report(&mut self, now: Instant, out: &mut Vec<u8>) {
        let reports: Vec<ReportBlock> = self.reception.report_block(self.last_sr, now).into_iter().collect();
        let ssrc = self.cfg.ssrc;
        let report = match self.last_sent {
            Some((ts, sent_at)) if self.sent_since_report => {
                // The RTP timestamp of this very instant, extrapolated from
                // the last packet sent (§6.4.1: it need not match any packet).
                let elapsed = now.saturating_duration_since(sent_at).as_nanos();
                let ticks = (elapsed * u128::from(self.cfg.clock_rate) / 1_000_000_000) as u32;
                RtcpPacket::SenderReport {
                    ssrc,
                    info: SenderInfo {
                        ntp: self.ntp(now),
                        rtp_timestamp: ts.wrapping_add(ticks),
                        packet_count: self.packets_sent,
                        octet_count: self.octets_sent,
                    },
                    reports,
                }
            }
            _ => RtcpPacket::ReceiverReport { ssrc, reports },
        };
        write(&report, out);
        write(&RtcpPacket::Sdes { chunks: vec![(ssrc, vec![(SDES_CNAME, self.cfg.cname.clone())])] }, out);
        self.sent_since_report = false;
        self.stats.reports_sent += 1;
    }

    pub fn stats(&self) -> RtcpStats {
        RtcpStats {
            packets_received: self.reception.packets_received(),
            cumulative_lost: self.reception.cumulative_lost(),
            fraction_lost: self.reception.fraction_lost(),
            jitter_ms: self.reception.jitter_ms(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn block(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 12,
            cumulative_lost: -3,
            highest_seq: 0x0001_0203,
            jitter: 77,
            lsr: 0xDEAD_BEEF,
            dlsr: 0x0002_0000,
        }
    }

    fn every_type() -> Vec<RtcpPacket> {
        vec![
            RtcpPacket::SenderReport {
                ssrc: 1,
                info: SenderInfo {
                    ntp: 0xEEAF_EB7B_0E5D_0742,
                    rtp_timestamp: 64642,
                    packet_count: 250,
                    octet_count: 40000,
                },
                reports: vec![block(2), block(3)],
            },
            RtcpPacket::SenderReport {
                ssrc: 1,
                info: SenderInfo { ntp: u64::MAX, rtp_timestamp: u32::MAX, packet_count: 0, octet_count: 0 },
                reports: vec![],
            },
            RtcpPacket::ReceiverReport { ssrc: 4, reports: vec![] },
            RtcpPacket::ReceiverReport { ssrc: 4, reports: vec![block(5)] },
            RtcpPacket::Sdes { chunks: vec![] },
            RtcpPacket::Sdes {
                chunks: vec![
                    (6, vec![(SDES_CNAME, "alice@example.com".into())]),
                    (7, vec![]),
                    (8, vec![(1, "x".into()), (2, "Zoë".into()), (8, String::new())]),
                ],
            },
            RtcpPacket::Bye { ssrcs: vec![9], reason: None },
            RtcpPacket::Bye { ssrcs: vec![9, 10], reason: Some("call ended".into()) },
            RtcpPacket::Bye { ssrcs: vec![], reason: Some(String::new()) },
            RtcpPacket::Other { packet_type: 204 },
            RtcpPacket::Other { packet_type: 207 },
        ]
    }

    #[test]
    fn every_packet_type_round_trips_alone_and_compound() {
        let mut compound = Vec::new();
        for p in every_type() {
            let mut out = Vec::new();
            write(&p, &mut out);
            assert_eq!(out.len() % 4, 0, "{p:?}");
            assert_eq!(parse_compound(&out), Ok(vec![p.clone()]), "{p:?}");
            write(&p, &mut compound);
        }
        assert_eq!(parse_compound(&compound), Ok(every_type()));
    }

    #[test]
    fn receiver_report_wire_format() {
        let mut out = vec![0xAA]; // write appends
        write(&RtcpPacket::ReceiverReport { ssrc: 0x0102_0304, reports: vec![block(0x0506_0708)] }, &mut out);
        assert_eq!(out[1..], hex("81c90007 01020304 05060708 0cfffffd 00010203 0000004d deadbeef 00020000")[..]);
    }

    /// Captured with tshark from baresip 1.0 calling baresip over loopback
    /// (one SR + SDES per direction every 5 s, BYE + SDES at hang-up, APP
    /// "PING" probes at call start). Field values as Wireshark decodes them.
    const BARESIP_SR_SDES: &str = "81c8000c f3428895 eeafeb7b 0e5d0742 0000fc82 000000fa 00009c40
         dec6dfdc 00000000 000049bd 00000007 eb7b0e0e 00000083
         81ca0007 f3428895 0115 7369703a 61403132 372e302e 302e313a 32353037 30 00";
    const BARESIP_BYE_SDES: &str = "81cb0003 f3428895 04 41646a6f 000000
         81ca0007 f3428895 0115 7369703a 61403132 372e302e 302e313a 32353037 30 00";
    const BARESIP_APP: &str = "80cc0003 dec6dfdc 50494e47 504f4e47";

    #[test]
    fn parses_what_baresip_sends() {
        let sr = hex(BARESIP_SR_SDES);
        let cname = "sip:a@127.0.0.1:25070".to_string();
        let expected = vec![
            RtcpPacket::SenderReport {
                ssrc: 0xF342_8895,
                info: SenderInfo {
                    ntp: 0xEEAF_EB7B_0E5D_0742,
                    rtp_timestamp: 64642,
                    packet_count: 250,
                    octet_count: 40000,
                },
                reports: vec![ReportBlock {
                    ssrc: 0xDEC6_DFDC,
                    fraction_lost: 0,
                    cumulative_lost: 0,
                    highest_seq: 18877,
                    jitter: 7,
                    lsr: 0xEB7B_0E0E,
                    dlsr: 131,
                }],
            },
            RtcpPacket::Sdes { chunks: vec![(0xF342_8895, vec![(SDES_CNAME, cname.clone())])] },
        ];
        assert_eq!(parse_compound(&sr).unwrap(), expected);
        // Our writer produces the very same bytes.
        let mut out = Vec::new();
        expected.iter().for_each(|p| write(p, &mut out));
        assert_eq!(out, sr);

        // BYE first, then SDES: not the RFC 3550 A.2 order, accepted anyway.
        let bye = hex(BARESIP_BYE_SDES);
        let expected = vec![
            RtcpPacket::Bye { ssrcs: vec![0xF342_8895], reason: Some("Adjo".into()) },
            RtcpPacket::Sdes { chunks: vec![(0xF342_8895, vec![(SDES_CNAME, cname)])] },
        ];
        assert_eq!(parse_compound(&bye).unwrap(), expected);
        let mut out = Vec::new();
        expected.iter().for_each(|p| write(p, &mut out));
        assert_eq!(out, bye);

        // A lone APP packet (reduced-size, no report first).
        assert_eq!(parse_compound(&hex(BARESIP_APP)), Ok(vec![RtcpPacket::Other { packet_type: 204 }]));
    }

    #[test]
    fn cumulative_lost_is_24_bit_signed() {
        let mut rr = hex("81c90007 00000001 00000002 07ffffff 00000000 00000000 00000000 00000000");
        let lost = |rr: &[u8]| match &parse_compound(rr).unwrap()[0] {
            RtcpPacket::ReceiverReport { reports, .. } => (reports[0].fraction_lost, reports[0].cumulative_lost),
            p => panic!("{p:?}"),
        };
        assert_eq!(lost(&rr), (7, -1));
        rr[13..16].copy_from_slice(&[0x80, 0, 0]);
        assert_eq!(lost(&rr), (7, -0x80_0000));
        rr[13..16].copy_from_slice(&[0x7F, 0xFF, 0xFF]);
        assert_eq!(lost(&rr), (7, 0x7F_FFFF));
        // Out-of-range values are clamped on write, not wrapped.
        for (v, want) in [(-9_000_000, -0x80_0000), (9_000_000, 0x7F_FFFF)] {
            let mut out = Vec::new();
            let rb = ReportBlock { cumulative_lost: v, ..block(2) };
            write(&RtcpPacket::ReceiverReport { ssrc: 1, reports: vec![rb] }, &mut out);
            assert_eq!(lost(&out), (12, want));
        }
    }

    #[test]
    fn padding_is_validated_and_stripped() {
        // RR (no blocks) + BYE with reason, padded by 4 on the last packet.
        let ok = hex("80c90001 00000001 a1cb0003 00000001 02686900 00000004");
        assert_eq!(
            parse_compound(&ok),
            Ok(vec![
                RtcpPacket::ReceiverReport { ssrc: 1, reports: vec![] },
                RtcpPacket::Bye { ssrcs: vec![1], reason: Some("hi".into()) },
            ])
        );
        let mut bad = ok.clone();
        *bad.last_mut().unwrap() = 0;
        assert_eq!(parse_compound(&bad), Err(RtcpError::BadPadding));
        *bad.last_mut().unwrap() = 13; // more than the 12-byte body
        assert_eq!(parse_compound(&bad), Err(RtcpError::BadPadding));
        // Padding that eats into the reason or the SSRC list.
        *bad.last_mut().unwrap() = 6;
        assert_eq!(parse_compound(&bad), Err(RtcpError::BadBye));
        *bad.last_mut().unwrap() = 9;
        assert_eq!(parse_compound(&bad), Err(RtcpError::Truncated(PT_BYE)));
        // Padding bit on a header-only packet: no count octet at all.
        assert_eq!(parse_compound(&hex("a0cc0000")), Err(RtcpError::BadPadding));
    }

    #[test]
    fn malformed_input_is_an_error_value() {
        use RtcpError::*;
        let cases: &[(&str, RtcpError)] = &[
            ("", TooShort),
            ("80c9", TooShort),
            ("80cc0000 0000", TooShort), // trailing bytes after a valid packet
            ("40c90001 00000001", BadVersion(1)),
            ("c0c90001 00000001", BadVersion(3)),
            ("80c90001 00000001 40c90001 00000001", BadVersion(1)),
            ("80600001 00000001", BadPacketType(0x60)), // RTP, PT 96
            ("80e00000", BadPacketType(224)),
            ("80c90002 00000001", BadLength),
            ("80c90000", Truncated(PT_RR)),
            ("82c90007 00000001 00000000 00000000 00000000 00000000 00000000 00000000", Truncated(PT_RR)),
            ("80c80003 00000001 00000000 00000000", Truncated(PT_SR)),
            ("81ca0001 00000001", BadSdes),           // chunk without END
            ("81ca0002 00000001 01050000", BadSdes),  // item past the end
            ("82ca0002 00000001 00000000", BadSdes),  // second chunk missing
            ("82cb0001 00000001", Truncated(PT_BYE)), // two SSRCs promised
            ("81cb0002 00000001 05610000", BadBye),   // reason past the end
        ];
        for (bytes, err) in cases {
            assert_eq!(parse_compound(&hex(bytes)).as_ref(), Err(err), "{bytes}");
        }
        let many: Vec<u8> = (0..=MAX_PACKETS).flat_map(|_| hex("80cc0000")).collect();
        assert_eq!(parse_compound(&many), Err(TooManyPackets));
        assert_eq!(parse_compound(&many[4..]).unwrap().len(), MAX_PACKETS);
    }

    #[test]
    fn extensions_and_chunk_padding_are_skipped() {
        // RR with one word of profile extension after its (zero) blocks;
        // SDES chunk with a 2-octet item followed by END and extra null words.
        let buf = hex("80c90002 00000001 abcdabcd 81ca0003 00000002 01016100 00000000");
        assert_eq!(
            parse_compound(&buf),
            Ok(vec![
                RtcpPacket::ReceiverReport { ssrc: 1, reports: vec![] },
                RtcpPacket::Sdes { chunks: vec![(2, vec![(1, "a".into())])] },
            ])
        );
    }

    #[test]
    fn sdes_items_are_capped_and_invalid_utf8_is_lossy() {
        let items: Vec<(u8, String)> = (1..=20).map(|i| (i, format!("v{i}"))).collect();
        let mut out = Vec::new();
        write(&RtcpPacket::Sdes { chunks: vec![(1, items.clone())] }, &mut out);
        let parsed = parse_compound(&out).unwrap();
        assert_eq!(parsed, vec![RtcpPacket::Sdes { chunks: vec![(1, items[..MAX_SDES_ITEMS].to_vec())] }]);
        // More items on the wire than kept: skipped, not an error.
        let mut wire = hex("81ca0000 00000001");
        wire.extend(std::iter::repeat_n([1u8, 0], 30).flatten());
        wire.extend_from_slice(&[0, 0, 0, 0]);
        let words = (wire.len() / 4 - 1) as u16;
        wire[2..4].copy_from_slice(&words.to_be_bytes());
        match &parse_compound(&wire).unwrap()[0] {
            RtcpPacket::Sdes { chunks } => assert_eq!(chunks[0].1.len(), MAX_SDES_ITEMS),
            p => panic!("{p:?}"),
        }
        let latin1 = hex("81ca0003 00000001 01025aeb 00000000");
        assert_eq!(
            parse_compound(&latin1),
            Ok(vec![RtcpPacket::Sdes { chunks: vec![(1, vec![(1, "Z\u{FFFD}".into())])] }])
        );
    }

    #[test]
    fn write_cuts_what_the_wire_cannot_say() {
        let mut out = Vec::new();
        write(&RtcpPacket::ReceiverReport { ssrc: 1, reports: (0..40).map(block).collect() }, &mut out);
        match &parse_compound(&out).unwrap()[0] {
            RtcpPacket::ReceiverReport { reports, .. } => assert_eq!(reports.len(), 31),
            p => panic!("{p:?}"),
        }
        // 254 ASCII bytes then a 2-byte char: cut before the char, not inside.
        let long = format!("{}é", "a".repeat(254));
        let mut out = Vec::new();
        write(&RtcpPacket::Bye { ssrcs: (0..40).collect(), reason: Some(long.clone()) }, &mut out);
        assert_eq!(
            parse_compound(&out),
            Ok(vec![RtcpPacket::Bye { ssrcs: (0..31).collect(), reason: Some(long[..254].to_string()) }])
        );
        // A type-0 item would end the chunk early; it is dropped.
        let mut out = Vec::new();
        write(&RtcpPacket::Sdes { chunks: vec![(1, vec![(0, "x".into()), (1, "c".into())])] }, &mut out);
        assert_eq!(parse_compound(&out), Ok(vec![RtcpPacket::Sdes { chunks: vec![(1, vec![(1, "c".into())])] }]));
    }

    // -- Reception statistics ----------------------------------------------

    const PEER: u32 = 0xABCD_0001;

    /// Feed `seqs` 20 ms apart with matching timestamps (constant transit).
    fn feed(rs: &mut ReceptionStats, t0: Instant, seqs: impl IntoIterator<Item = u16>) {
        for (i, seq) in seqs.into_iter().enumerate() {
            rs.on_packet(PEER, seq, u32::from(seq).wrapping_mul(160), t0 + ms(20 * i as u64));
        }
    }

    fn rb(rs: &mut ReceptionStats, now: Instant) -> ReportBlock {
        rs.report_block(None, now).expect("a valid source")
    }

    #[test]
    fn in_order_across_the_wrap() {
        let t0 = Instant::now();
        let mut rs = ReceptionStats::new(8000);
        assert_eq!(rs.report_block(None, t0), None);
        feed(&mut rs, t0, (0..2000u32).map(|i| (65000 + i) as u16));
        // A.1: the first packet is spent on probation, so base_seq is the
        // second one (65001) and expected = received = 1999.
        let b = rb(&mut rs, t0);
        assert_eq!(b.ssrc, PEER);
        assert_eq!(b.highest_seq, 65000 + 1999);
        assert_eq!((b.fraction_lost, b.cumulative_lost), (0, 0));
        assert_eq!(b.jitter, 0);
        assert_eq!((b.lsr, b.dlsr), (0, 0));
        assert_eq!(rs.packets_received(), 2000);
        assert_eq!(rs.cumulative_lost(), 0);
        assert_eq!(rs.fraction_lost(), 0.0);
        assert_eq!(rs.ssrc(), Some(PEER));
    }

    #[test]
    fn five_percent_loss_per_interval() {
        let t0 = Instant::now();
        let mut rs = ReceptionStats::new(8000);
        let keep = |s: &u16| s % 20 != 10;
        feed(&mut rs, t0, (0..1000u16).filter(keep));
        // base 1, max 999: expected 999; received 950 - 1 (probation) = 949.
        let b = rb(&mut rs, t0);
        assert_eq!(b.cumulative_lost, 50);
        assert_eq!(b.fraction_lost, ((50u64 << 8) / 999) as u8); // 12
        assert!((rs.fraction_lost() - 50.0 / 999.0).abs() < 1e-12);
        feed(&mut rs, t0 + ms(20_000), (1000..2000u16).filter(keep));
        // Interval: expected 1000, received 950.
        let b = rb(&mut rs, t0);
        assert_eq!(b.cumulative_lost, 100);
        assert_eq!(b.fraction_lost, 12);
        assert_eq!(b.highest_seq, 1999);
        assert!((rs.fraction_lost() - 0.05).abs() < 1e-12);
        assert_eq!(rs.cumulative_lost(), 100);
        assert_eq!(rs.packets_received(), 1900);
        // A silent interval reports no loss.
        assert_eq!(rb(&mut rs, t0).fraction_lost, 0);
        assert_eq!(rs.fraction_lost(), 0.0);
    }

    #[test]
    fn reordered_packet_is_loss_until_it_arrives() {
        let t0 = Instant::now();
        let mut rs = ReceptionStats::new(8000);
        feed(&mut rs, t0, [0, 1, 2, 4]);
        // base 1, max 4: expected 4, received 3 (1, 2, 4).
        let b = rb(&mut rs, t0);
        assert_eq!((b.cumulative_lost, b.fraction_lost), (1, 64));
        feed(&mut rs, t0 + ms(100), [3, 5, 6, 7, 8, 9, 10]);
        // Interval: expected 6 (5..=10), received 7: negative loss reads as 0.
        let b = rb(&mut rs, t0);
        assert_eq!((b.cumulative_lost, b.fraction_lost), (0, 0));
        assert_eq!(b.highest_seq, 10);
    }

    #[test]
    fn duplicates_make_loss_negative() {
        let t0 = Instant::now();
        let mut rs = ReceptionStats::new(8000);
        feed(&mut rs, t0, (0..100u16).flat_map(|s| [s, s]));
        // The second 0 resets probation; from 1 on every packet counts twice:
        // expected 99 (1..=99), received 198.
        let b = rb(&mut rs, t0);
        assert_eq!((b.cumulative_lost, b.fraction_lost), (-99, 0));
        assert_eq!(rs.cumulative_lost(), -99);
    }

    #[test]
    fn big_jumps_restart_and_old_packets_are_dropped() {
        let t0 = Instant::now();
        let mut rs = ReceptionStats::new(8000);
        feed(&mut rs, t0, 0..100u16);
        // 150 behind max: beyond MAX_MISORDER, ignored (A.1 bad_seq path).
        rs.on_packet(PEER, 99u16.wrapping_sub(150), 0, t0);
        // 50 behind: a late duplicate, counted.
        rs.on_packet(PEER, 49, 0, t0);
        assert_eq!(rs.cumulative_lost(), -1);
        // A single jump of 5000 is ignored...
        rs.on_packet(PEER, 5099, 0, t0);
        assert_eq!(rb(&mut rs, t0).highest_seq, 99);
        // ...but two in sequence mean the sender restarted: counters reset.
        rs.on_packet(PEER, 20000, 0, t0);
        rs.on_packet(PEER, 20001, 0, t0);
        let b = rb(&mut rs, t0);
        assert_eq!((b.highest_seq, b.cumulative_lost), (20001, 0));
        rs.on_packet(PEER, 20005, 0, t0);
        assert_eq!(rs.cumulative_lost(), 3);
    }

    #[test]
    fn new_ssrc_replaces_the_source_after_probation_only() {
        let t0 = Instant::now();
        let mut rs = ReceptionStats::new(8000);
        // A single packet of another SSRC before anything is believed simply
        // takes over.
        rs.on_packet(7, 500, 0, t0);
        feed(&mut rs, t0, 0..10u16);
        assert_eq!(rs.ssrc(), Some(PEER));
        // A stray packet of some other stream does not disturb.
        rs.on_packet(7, 501, 0, t0);
        feed(&mut rs, t0, 10..12u16);
        assert_eq!(rs.ssrc(), Some(PEER));
        assert_eq!(rb(&mut rs, t0).highest_seq, 11);
        // Two in sequence do: the sender restarted with a new SSRC.
        rs.on_packet(8, 1000, 0, t0);
        rs.on_packet(8, 1001, 0, t0);
        assert_eq!(rs.ssrc(), Some(8));
        let b = rb(&mut rs, t0);
        assert_eq!((b.ssrc, b.highest_seq, b.cumulative_lost), (8, 1001, 0));
        assert_eq!(rs.packets_received(), 16);
    }

    #[test]
    fn jitter_is_zero_with_constant_transit() {
        let t0 = Instant::now();
        let mut rs = ReceptionStats::new(8000);
        // Arbitrary timestamp base and a large constant network delay.
        for i in 0..500u32 {
            let ts = 0xFFFF_0000u32.wrapping_add(i * 160);
            rs.on_packet(PEER, i as u16, ts, t0 + ms(20 * u64::from(i) + 73));
        }
        assert_eq!(rs.jitter_ms(), 0.0);
        assert_eq!(rb(&mut rs, t0).jitter, 0);
    }

    #[test]
    fn jitter_follows_the_rfc_estimator() {
        let t0 = Instant::now();
        let mut rs = ReceptionStats::new(8000);
        // Transit alternates 40 ms ± 10 ms: |D| is 20 ms = 160 units every
        // packet after the first counted one.
        let n = 300u32;
        for i in 0..n {
            let wobble = if i % 2 == 0 { 30 } else { 50 };
            rs.on_packet(PEER, i as u16, i * 160, t0 + ms(20 * u64::from(i) + wobble));
        }
        // A.8 from J = 0: the first packet is probation, the second sets the
        // transit reference, each later one is one step J += (D - J) / 16.
        let steps = n - 2;
        let mut j = 0.0f64;
        for _ in 0..steps {
            j += (160.0 - j) / 16.0;
        }
        assert!((j - 160.0 * (1.0 - (15.0f64 / 16.0).powi(steps as i32))).abs() < 1e-9);
        assert!((rs.jitter_ms() - j / 8.0).abs() < 1e-9, "{}", rs.jitter_ms());
        assert!((rs.jitter_ms() - 20.0).abs() < 0.01);
        assert_eq!(rb(&mut rs, t0).jitter, 160);
    }

    #[test]
    fn jitter_uses_the_clock_rate_and_survives_sender_restart() {
        let t0 = Instant::now();
        let mut rs = ReceptionStats::new(48_000);
        for i in 0..200u32 {
            let wobble = if i % 2 == 0 { 0 } else { 5 };
            rs.on_packet(PEER, i as u16, i * 960, t0 + ms(20 * u64::from(i) + wobble));
        }
        // |D| = 5 ms = 240 units at 48 kHz.
        assert!((rs.jitter_ms() - 5.0).abs() < 0.01, "{}", rs.jitter_ms());
        let before = rs.jitter_ms();
        // Restart: new random sequence and timestamp base, same SSRC.
        for i in 0..2u32 {
            rs.on_packet(PEER, 30_000 + i as u16, 0x8000_0000 + i * 960, t0 + ms(4000 + 20 * u64::from(i)));
        }
        assert!(rs.jitter_ms() <= before, "no spike from the timestamp jump");
    }

    // -- Session ------------------------------------------------------------

    fn wall() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn cfg(ssrc: u32) -> RtcpConfig {
        RtcpConfig { ssrc, cname: format!("{ssrc:x}@switchboard"), clock_rate: 8000, interval: Duration::from_secs(5) }
    }

    /// Run the session's timer until it emits a report; returns it and when.
    fn next_report(s: &mut RtcpSession) -> (Instant, Vec<RtcpPacket>) {
        let at = s.poll_timeout();
        assert_eq!(s.handle_timeout(at - Duration::from_nanos(1)), None);
        let out = s.handle_timeout(at).expect("due");
        (at, parse_compound(&out).unwrap())
    }

    #[test]
    fn interval_is_randomised_within_bounds() {
        let t0 = Instant::now();
        let mut firsts = Vec::new();
        let mut gaps = Vec::new();
        for seed in 0..50 {
            let mut s = RtcpSession::with_seed(cfg(1), t0, wall(), seed);
            let mut prev = t0;
            for i in 0..20 {
                let (at, _) = next_report(&mut s);
                let gap = at - prev;
                if i == 0 {
                    firsts.push(gap);
                } else {
                    gaps.push(gap);
                }
                prev = at;
            }
        }
        let in_range = |d: &Duration, lo: u64, hi: u64| *d >= ms(lo) && *d <= ms(hi);
        assert!(firsts.iter().all(|d| in_range(d, 1250, 3750)), "{firsts:?}");
        assert!(gaps.iter().all(|d| in_range(d, 2500, 7500)));
        // Actually spread over the range, not a constant.
        assert!(gaps.iter().any(|d| *d < ms(3000)) && gaps.iter().any(|d| *d > ms(7000)));
        let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
        assert!(in_range(&mean, 4800, 5200), "{mean:?}");
        // A new() session is randomised too (seeded from the OS).
        let s = RtcpSession::with_seed(cfg(1), t0, wall(), 1);
        assert!(in_range(&(s.poll_timeout() - t0), 1250, 3750));
    }

    #[test]
    fn late_wakeup_schedules_from_now_and_config_is_clamped() {
        let t0 = Instant::now();
        let mut s = RtcpSession::with_seed(cfg(1), t0, wall(), 1);
        let late = s.poll_timeout() + Duration::from_secs(60);
        assert!(s.handle_timeout(late).is_some());
        assert!(s.poll_timeout() >= late + ms(2500));
        assert!(s.handle_timeout(late).is_none(), "one report per wake-up");
        let zero = RtcpConfig { interval: Duration::ZERO, clock_rate: 0, ..cfg(1) };
        let s = RtcpSession::with_seed(zero, t0, wall(), 1);
        assert!(s.poll_timeout() > t0, "a zero interval does not spin");
        let huge = RtcpConfig { interval: Duration::MAX, ..cfg(1) };
        let mut s = RtcpSession::with_seed(huge, t0, wall(), 1);
        let at = s.poll_timeout();
        assert!(at - t0 <= Duration::from_secs(3600));
        assert!(s.handle_timeout(at).is_some());
    }

    #[test]
    fn receiver_only_sends_rr_then_sr_once_it_sends() {
        let t0 = Instant::now();
        let mut s = RtcpSession::with_seed(cfg(0x5B), t0, wall(), 7);
        let sdes = RtcpPacket::Sdes { chunks: vec![(0x5B, vec![(SDES_CNAME, "5b@switchboard".into())])] };
        // Nothing sent nor received: an empty RR (RFC 3550 §6.1) + SDES.
        let (_, pkts) = next_report(&mut s);
        assert_eq!(pkts, vec![RtcpPacket::ReceiverReport { ssrc: 0x5B, reports: vec![] }, sdes.clone()]);
        // Send 100 packets of 160 octets, the last one with ts 20_000 at t1.
        let t1 = s.poll_timeout() - ms(500);
        for i in 0..100u32 {
            s.on_rtp_sent(20_000 - (99 - i) * 160, 160, t1 - ms(20 * u64::from(99 - i)));
        }
        let (at, pkts) = next_report(&mut s);
        let elapsed = at - t0;
        match &pkts[0] {
            RtcpPacket::SenderReport { ssrc, info, reports } => {
                assert_eq!(*ssrc, 0x5B);
                assert!(reports.is_empty());
                assert_eq!((info.packet_count, info.octet_count), (100, 16_000));
                // 500 ms after the last packet: 4000 ticks later.
                assert_eq!(info.rtp_timestamp, 24_000);
                let want = ((1_700_000_000u64 + 2_208_988_800) << 32) + duration_to_ntp(elapsed);
                assert_eq!(info.ntp, want);
            }
            p => panic!("{p:?}"),
        }
        assert_eq!(pkts[1], sdes);
        // Nothing sent since: back to RR.
        let (_, pkts) = next_report(&mut s);
        assert!(matches!(pkts[0], RtcpPacket::ReceiverReport { .. }));
        assert_eq!(s.stats().reports_sent, 3);
    }

    #[test]
    fn report_echoes_the_peers_last_sr() {
        let t0 = Instant::now();
        let mut s = RtcpSession::with_seed(cfg(1), t0, wall(), 3);
        for i in 0..50u16 {
            s.on_rtp_received(PEER, i, u32::from(i) * 160, t0 + ms(20 * u64::from(i)));
        }
        let peer_sr = |ssrc: u32| {
            let mut out = Vec::new();
            write(
                &RtcpPacket::SenderReport {
                    ssrc,
                    info: SenderInfo { ntp: 0x1122_3344_5566_7788, rtp_timestamp: 0, packet_count: 1, octet_count: 1 },
                    reports: vec![],
                },
                &mut out,
            );
            out
        };
        let at = s.poll_timeout();
        // An SR from some other SSRC is not echoed for the peer's stream.
        s.handle_rtcp(&peer_sr(0x999), at - ms(250)).unwrap();
        let (_, pkts) = next_report(&mut s);
        match &pkts[0] {
            RtcpPacket::ReceiverReport { reports, .. } => {
                assert_eq!(reports.len(), 1);
                assert_eq!((reports[0].ssrc, reports[0].lsr, reports[0].dlsr), (PEER, 0, 0));
            }
            p => panic!("{p:?}"),
        }
        let at = s.poll_timeout();
        s.handle_rtcp(&peer_sr(PEER), at - ms(250)).unwrap();
        let (_, pkts) = next_report(&mut s);
        match &pkts[0] {
            RtcpPacket::ReceiverReport { reports, .. } => {
                assert_eq!(reports[0].lsr, 0x3344_5566);
                assert_eq!(reports[0].dlsr, 65_536 / 4); // 250 ms
                assert_eq!(reports[0].highest_seq, 49);
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn remote_stats_come_from_blocks_about_us() {
        let t0 = Instant::now();
        let mut s = RtcpSession::with_seed(cfg(1), t0, wall(), 3);
        let rr = |sender: u32, about: u32| {
            let mut out = Vec::new();
            write(
                &RtcpPacket::ReceiverReport {
                    ssrc: sender,
                    reports: vec![ReportBlock {
                        ssrc: about,
                        fraction_lost: 64,
                        cumulative_lost: 42,
                        highest_seq: 1000,
                        jitter: 80,
                        lsr: 0,
                        dlsr: 0,
                    }],
                },
                &mut out,
            );
            out
        };
        s.handle_rtcp(&rr(PEER, 0x777), t0).unwrap();
        assert_eq!(s.stats().remote_fraction_lost, None);
        assert_eq!(s.stats().reports_received, 1);
        // Our own report looped back is not the peer's view of us.
        s.handle_rtcp(&rr(1, 1), t0).unwrap();
        assert_eq!(s.stats().remote_fraction_lost, None);
        assert_eq!(s.stats().reports_received, 1);
        let pkts = s.handle_rtcp(&rr(PEER, 1), t0).unwrap();
        assert_eq!(pkts.len(), 1);
        let st = s.stats();
        assert_eq!(st.remote_fraction_lost, Some(0.25));
        assert_eq!(st.remote_cumulative_lost, Some(42));
        assert_eq!(st.remote_jitter_ms, Some(10.0));
        assert_eq!(st.rtt, None, "LSR 0: no RTT");
        assert_eq!(st.reports_received, 2);
        // Garbage changes nothing and is reported as an error.
        assert_eq!(s.handle_rtcp(&[0x80, 0x00], t0), Err(RtcpError::TooShort));
        assert_eq!(s.stats(), st);
    }

    /// RTT from a report block about us with the given LSR/DLSR, received at
    /// `now`.
    fn rtt_of(s: &mut RtcpSession, lsr: u32, dlsr: u32, now: Instant) -> Option<Duration> {
        let mut out = Vec::new();
        write(
            &RtcpPacket::ReceiverReport { ssrc: PEER, reports: vec![ReportBlock { lsr, dlsr, ..block(1) }] },
            &mut out,
        );
        s.handle_rtcp(&out, now).unwrap();
        s.stats().rtt
    }

    #[test]
    fn rtt_arithmetic_wraps_and_ignores_nonsense() {
        // Wall clock chosen so the NTP middle word is just below 2^32.
        let t0 = Instant::now();
        let ntp_secs = 0xFFFF_FFFFu64; // era 0 ends: middle word 0xFFFF_0000
        let wall = UNIX_EPOCH + Duration::from_secs(ntp_secs - 2_208_988_800);
        let mut s = RtcpSession::with_seed(cfg(1), t0, wall, 3);
        let lsr = ntp_middle(s.ntp(t0));
        assert_eq!(lsr, 0xFFFF_0000);
        // Two seconds later the middle word has wrapped to 0x0001_0000.
        let now = t0 + Duration::from_secs(2);
        assert_eq!(ntp_middle(s.ntp(now)), 0x0001_0000);
        // DLSR 1.5 s: RTT 0.5 s.
        assert_eq!(rtt_of(&mut s, lsr, 3 * 32_768, now), Some(ms(500)));
        // DLSR beyond the SR's age would be a negative RTT: ignored.
        assert_eq!(rtt_of(&mut s, lsr, 3 * 65_536, now), Some(ms(500)));
        // LSR in our future: ignored.
        assert_eq!(rtt_of(&mut s, 0x0002_0000, 0, now), Some(ms(500)));
        // Zero RTT is a valid measurement.
        assert_eq!(rtt_of(&mut s, lsr, 2 * 65_536, now), Some(Duration::ZERO));
    }

    #[test]
    fn bye_ends_the_session() {
        let t0 = Instant::now();
        let mut s = RtcpSession::with_seed(cfg(0x5B), t0, wall(), 9);
        s.on_rtp_sent(0, 160, t0);
        feed_session(&mut s, t0);
        let pkts = parse_compound(&s.bye(t0 + ms(100))).unwrap();
        assert_eq!(pkts.len(), 3);
        match &pkts[0] {
            RtcpPacket::SenderReport { reports, .. } => assert_eq!(reports[0].ssrc, PEER),
            p => panic!("{p:?}"),
        }
        assert!(matches!(pkts[1], RtcpPacket::Sdes { .. }));
        assert_eq!(pkts[2], RtcpPacket::Bye { ssrcs: vec![0x5B], reason: None });
        assert_eq!(s.stats().reports_sent, 1);
        // No reports after BYE, but the deadline still moves (no spinning).
        let at = s.poll_timeout();
        assert_eq!(s.handle_timeout(at), None);
        assert!(s.poll_timeout() > at);
    }

    fn feed_session(s: &mut RtcpSession, t0: Instant) {
        for i in 0..10u16 {
            s.on_rtp_received(PEER, i, u32::from(i) * 160, t0 + ms(20 * u64::from(i)));
        }
    }

    #[test]
    fn session_stats_reflect_reception() {
        let t0 = Instant::now();
        let mut s = RtcpSession::with_seed(cfg(1), t0, wall(), 9);
        for i in (0..200u16).filter(|i| i % 10 != 5) {
            s.on_rtp_received(PEER, i, u32::from(i) * 160, t0 + ms(20 * u64::from(i)));
        }
        let st = s.stats();
        assert_eq!(st.packets_received, 180);
        assert_eq!(st.cumulative_lost, 20);
        assert_eq!(st.fraction_lost, 0.0, "no report yet closes an interval");
        assert_eq!(st.jitter_ms, 0.0);
        next_report(&mut s);
        // Expected 199 (1..=199), lost 20.
        assert!((s.stats().fraction_lost - 20.0 / 199.0).abs() < 1e-12);
    }

    /// Two sessions talking through a network with 40 ms one-way delay, in
    /// virtual time with a 1 ms tick: RTP every 20 ms both ways, RTCP when
    /// each session's timer says. Both must measure an 80 ms round trip.
    #[test]
    fn rtt_between_two_sessions_is_the_network_round_trip() {
        let t0 = Instant::now();
        let delay = ms(40);
        // Different wall clocks: RTT must not depend on clock agreement.
        let mut a = RtcpSession::with_seed(cfg(0xA), t0, wall(), 1);
        let mut b = RtcpSession::with_seed(cfg(0xB), t0, wall() + Duration::from_secs(3600 * 5 + 7), 2);
        enum Msg {
            Rtp { ssrc: u32, seq: u16, ts: u32 },
            Rtcp(Vec<u8>),
        }
        // (arrival, to_b, message)
        let mut net: Vec<(Instant, bool, Msg)> = Vec::new();
        let mut seq = 0u16;
        for tick in 0..30_000u64 {
            let now = t0 + ms(tick);
            let (due, rest): (Vec<_>, Vec<_>) = net.into_iter().partition(|(at, _, _)| *at <= now);
            net = rest;
            for (_, to_b, msg) in due {
                let s = if to_b { &mut b } else { &mut a };
                match msg {
                    Msg::Rtp { ssrc, seq, ts } => s.on_rtp_received(ssrc, seq, ts, now),
                    Msg::Rtcp(buf) => {
                        s.handle_rtcp(&buf, now).unwrap();
                    }
                }
            }
            if tick % 20 == 0 {
                let ts = (tick * 8) as u32;
                a.on_rtp_sent(ts, 160, now);
                b.on_rtp_sent(ts.wrapping_add(12345), 160, now);
                net.push((now + delay, true, Msg::Rtp { ssrc: 0xA, seq, ts }));
                let ts = ts.wrapping_add(12345);
                net.push((now + delay, false, Msg::Rtp { ssrc: 0xB, seq: seq.wrapping_add(999), ts }));
                seq = seq.wrapping_add(1);
            }
            for (s, to_b) in [(&mut a, true), (&mut b, false)] {
                if let Some(buf) = s.handle_timeout(now) {
                    net.push((now + delay, to_b, Msg::Rtcp(buf)));
                }
            }
        }
        for s in [&a, &b] {
            let st = s.stats();
            let rtt = st.rtt.expect("rtt measured");
            assert!(rtt.abs_diff(ms(80)) <= ms(1), "{rtt:?}");
            assert!(st.reports_received >= 4, "{st:?}");
            assert_eq!(st.remote_cumulative_lost, Some(0));
            assert_eq!(st.remote_fraction_lost, Some(0.0));
            assert_eq!(st.remote_jitter_ms, Some(0.0));
            assert_eq!(st.cumulative_lost, 0);
            assert_eq!(st.packets_received, 1498, "all but the two in flight");
        }
    }
}
