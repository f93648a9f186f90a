//! DTMF: RFC 4733 telephone-events in both directions, and digits carried in
//! SIP INFO bodies.
//!
//! Receiving ([`Rfc4733Receiver`]) follows RFC 4733 §2.5.2: an event is
//! identified by its RTP timestamp (every packet of one key press carries the
//! timestamp of the press's start; only the duration grows). The digit is
//! reported once, as soon as we know the press is over:
//!
//! * on the first end (E-bit) packet — senders repeat the end packet three
//!   times, and the repeats must not give a second digit;
//! * if every end packet was lost: when a packet with another timestamp
//!   arrives (a new press has begun, so the old one is over), or after
//!   [`QUIET_TIMEOUT`] without packets for the event ([`Rfc4733Receiver::handle_timeout`]).
//!
//! The marker bit is not relied on: the first packet may be lost and some
//! senders never set it, so a new timestamp alone starts a new event.
//!
//! Sending ([`Rfc4733Sender`]) is driven by the media loop's packet slots: for
//! each slot it either returns the event packet to send instead of audio, or
//! `None` when the slot carries audio.
//!
//! Everything here is sans-IO: the caller passes `now` in and drives
//! [`Rfc4733Receiver::poll_timeout`] / [`Rfc4733Receiver::handle_timeout`].
//!
//! RFC 2198 redundancy (`audio/red`) is not negotiated, so a telephone-event
//! payload carries one event; should a peer put several 4-byte blocks in one
//! payload anyway, only the first is read.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Without any packet for this long, an event whose end packets were all lost
/// is taken as finished. Senders refresh a running event at least every 50 ms
/// or so (RFC 4733 §2.5.1.2), so 600 ms of silence means the press is over,
/// while still reporting the digit quickly enough for an IVR menu.
pub const QUIET_TIMEOUT: Duration = Duration::from_millis(600);

/// How many finished events (their timestamps) are remembered, so that late
/// repeats of their end packets and reordered stragglers are not mistaken for
/// new presses. Far more than can be in flight at once. A timestamp that comes
/// back after more presses than this is a new press (a sender that restarted
/// its timestamps), so only within this memory does a stream give at most one
/// digit per distinct timestamp.
pub const RECENT_EVENTS: usize = 16;

/// A packet whose timestamp is *behind* the current event's is a straggler of
/// an older event (reordered, or an event we never saw start) when it arrives
/// within this time of the current event's last packet and is at most this
/// far behind in RTP time. Anything else behind is a sender that restarted its
/// timestamps, and is taken as a new event.
const STRAGGLER_WINDOW: Duration = Duration::from_secs(2);

/// Long events (RFC 4733 §2.5.1.3): a segment ends when its duration would
/// pass 0xFFFF. We accept a new segment as the continuation of the current one
/// only if the current segment is within this much of that limit — the last
/// packets of a segment may be lost, but a short event followed by a new press
/// of the same key must stay two digits.
const LONG_EVENT_SLACK_MS: u64 = 250;

/// Volume of the events we send, in -dBm0 (RFC 4733 §2.3.4). 10 is what
/// common senders use; the field only matters to gateways that regenerate
/// tones.
const SEND_VOLUME: u8 = 10;

/// How many times the final packet of an event is sent (RFC 4733 §2.5.1.4).
const END_PACKET_COPIES: u8 = 3;

/// Upper bound on digits waiting in [`Rfc4733Sender`]; digits may come from a
/// model's tool call, so the queue must not grow without limit.
pub const MAX_QUEUED_DIGITS: usize = 256;

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSource {
    Rfc4733,
    SipInfo,
}

/// One key press, reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmfEvent {
    /// `0`-`9`, `*`, `#`, `A`-`D` (upper case).
    pub digit: char,
    /// Length of the press as far as we saw it (the largest duration received).
    pub duration_ms: u32,
    /// When the first packet of the event arrived.
    pub started: Instant,
    pub source: DtmfSource,
}

/// Why digits could not be queued for sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    #[error("{0:?} is not a DTMF digit (0-9, *, #, A-D)")]
    InvalidDigit(char),
    #[error("more than {MAX_QUEUED_DIGITS} DTMF digits queued")]
    QueueFull,
}

/// Payload of one telephone-event packet (RFC 4733 §2.3): event, E bit,
/// volume, duration.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// |     event     |E|R| volume    |          duration             |
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    pub event: u8,
    pub end: bool,
    /// 6 bits, in -dBm0; `write` masks off anything above.
    pub volume: u8,
    /// In RTP timestamp units, since the event's (or segment's) timestamp.
    pub duration: u16,
}

impl EventPayload {
    /// Length of one event block.
    pub const LEN: usize = 4;

    /// Reads the first event block; `None` when the payload is shorter than
    /// one block. Extra bytes are ignored (see the module doc on RFC 2198).
    /// The reserved bit is ignored, as RFC 4733 §2.3.3 asks of receivers.
    pub fn parse(b: &[u8]) -> Option<EventPayload> {
        let block: &[u8; Self::LEN] = b.get(..Self::LEN)?.try_into().ok()?;
        Some(EventPayload {
            event: block[0],
            end: block[1] & 0x80 != 0,
            volume: block[1] & 0x3F,
            duration: u16::from_be_bytes([block[2], block[3]]),
        })
    }

    /// Appends the 4-byte block (reserved bit zero).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(self.event);
        out.push(if self.end { 0x80 } else { 0 } | (self.volume & 0x3F));
        out.extend_from_slice(&self.duration.to_be_bytes());
    }
}

/// RFC 4733 §3.2 event code to digit: 0-9, 10 = `*`, 11 = `#`, 12-15 = `A`-`D`.
/// Other codes (flash, fax and line tones) are not digits.
pub fn event_to_digit(ev: u8) -> Option<char> {
    match ev {
        0..=9 => Some(char::from(b'0' + ev)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + (ev - 12))),
        _ => None,
    }
}

/// Digit to RFC 4733 event code; `a`-`d` are accepted as `A`-`D`.
pub fn digit_to_event(d: char) -> Option<u8> {
    match d.to_ascii_uppercase() {
        c @ '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        c @ 'A'..='D' => Some(c as u8 - b'A' + 12),
        _ => None,
    }
}

/// Timestamp units to milliseconds (64-bit: long events sum several segments).
fn units_to_ms(units: u64, clock_rate: u32) -> u32 {
    u32::try_from(units * 1000 / u64::from(clock_rate)).unwrap_or(u32::MAX)
}

/// `a` is behind `b` in RTP serial arithmetic, by how many units.
fn behind_by(a: u32, b: u32) -> Option<u32> {
    let d = b.wrapping_sub(a);
    (d != 0 && d < 0x8000_0000).then_some(d)
}

// ---------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------

/// The event being received (or the last one, once reported: it stays here
/// so its repeats are recognised).
#[derive(Debug)]
struct Current {
    event: u8,
    /// Timestamp of the segment being received; for all but long events, the
    /// event's own timestamp.
    timestamp: u32,
    /// Largest duration seen in this segment, in timestamp units.
    segment_duration: u16,
    /// Total length of the earlier segments of a long event.
    earlier_segments: u64,
    started: Instant,
    last_packet: Instant,
    /// The digit has been reported; further packets of the event are repeats.
    reported: bool,
}

/// Turns a stream of telephone-event packets into one [`DtmfEvent`] per key
/// press. One receiver per RTP stream (SSRC) and telephone-event payload type.
#[derive(Debug)]
pub struct Rfc4733Receiver {
    clock_rate: u32,
    current: Option<Current>,
    /// Timestamps of finished events (all segments), newest last.
    recent: VecDeque<u32>,
    /// Digits that are due but not yet returned, with when they became due.
    /// A single packet can finish two events (an end-only packet with a new
    /// timestamp ends the previous event too); the second waits here.
    ready: VecDeque<(DtmfEvent, Instant)>,
}

impl Rfc4733Receiver {
    /// `clock_rate` of the telephone-event format: 8000 normally, 48000 next
    /// to Opus. Zero (never negotiated) is treated as 8000 rather than dividing
    /// by it.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: if clock_rate == 0 { 8000 } else { clock_rate },
            current: None,
            recent: VecDeque::with_capacity(RECENT_EVENTS),
            ready: VecDeque::new(),
        }
    }

    /// One telephone-event RTP packet. Returns a digit once per event.
    ///
    /// At most one digit is returned per call; when a packet completes two
    /// events, the second is returned by the next call of this or of
    /// [`Self::handle_timeout`], which [`Self::poll_timeout`] then asks for
    /// at once. The sequence number is not needed: the timestamp identifies
    /// the event and the duration orders its packets.
    pub fn handle_packet(
        &mut self,
        _sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
        now: Instant,
    ) -> Option<DtmfEvent> {
        // Short payloads and events 16+ (flash, fax and line tones) are not
        // DTMF: ignore them without disturbing the event in progress.
        if let Some(p) = EventPayload::parse(payload).filter(|p| event_to_digit(p.event).is_some()) {
            self.accept(timestamp, marker, p, now);
        }
        self.ready.pop_front().map(|(ev, _)| ev)
    }

    /// When [`Self::handle_timeout`] should be called next: at once when a
    /// digit is waiting, or when an event that never saw its end goes quiet.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some((_, due)) = self.ready.front() {
            return Some(*due);
        }
        self.current
            .as_ref()
            .filter(|c| !c.reported)
            .map(|c| c.last_packet.checked_add(QUIET_TIMEOUT).unwrap_or(c.last_packet))
    }

    /// Returns a waiting digit, or reports an event whose end packets were all
    /// lost once it has been quiet for [`QUIET_TIMEOUT`].
    pub fn handle_timeout(&mut self, now: Instant) -> Option<DtmfEvent> {
        if let Some((ev, _)) = self.ready.pop_front() {
            return Some(ev);
        }
        let clock_rate = self.clock_rate;
        let cur = self.current.as_mut().filter(|c| !c.reported)?;
        if now.saturating_duration_since(cur.last_packet) < QUIET_TIMEOUT {
            return None;
        }
        cur.reported = true;
        Some(cur.to_event(clock_rate))
    }

    fn accept(&mut self, timestamp: u32, marker: bool, p: EventPayload, now: Instant) {
        if self.recent.contains(&timestamp) {
            return; // a late repeat of an event already finished
        }
        let clock_rate = self.clock_rate;
        match self.classify(timestamp, marker, p, now) {
            Fit::Ignore => {}
            Fit::SameEvent => {
                if let Some(cur) = &mut self.current {
                    cur.segment_duration = cur.segment_duration.max(p.duration);
                    if let Some(ev) = cur.refresh(p.end, now, clock_rate) {
                        self.ready.push_back((ev, now));
                    }
                }
            }
            Fit::NextSegment => {
                if let Some(cur) = &mut self.current {
                    let previous = cur.timestamp;
                    // The gap, not the duration we saw: the segment's last
                    // packets may have been lost.
                    cur.earlier_segments += u64::from(timestamp.wrapping_sub(previous));
                    cur.timestamp = timestamp;
                    cur.segment_duration = p.duration;
                    if let Some(ev) = cur.refresh(p.end, now, clock_rate) {
                        self.ready.push_back((ev, now));
                    }
                    self.remember(previous);
                }
            }
            Fit::NewEvent => {
                // Whatever the current event was, it is over.
                if let Some(old) = self.current.take() {
                    if !old.reported {
                        self.ready.push_back((old.to_event(clock_rate), now));
                    }
                    self.remember(old.timestamp);
                }
                self.start(timestamp, p, now);
            }
        }
    }

    /// How a packet (already known not to belong to a finished event) relates
    /// to the current event.
    fn classify(&self, timestamp: u32, marker: bool, p: EventPayload, now: Instant) -> Fit {
        let Some(cur) = &self.current else {
            return Fit::NewEvent;
        };
        if timestamp == cur.timestamp {
            // A refresh, a repeat or a reordered packet of this event. A
            // different event code under the same timestamp is a broken
            // sender; keep what we have.
            return if p.event == cur.event { Fit::SameEvent } else { Fit::Ignore };
        }
        if self.is_straggler(cur, timestamp, now) {
            Fit::Ignore
        } else if self.is_next_segment(cur, timestamp, marker, p) {
            Fit::NextSegment
        } else {
            Fit::NewEvent
        }
    }

    fn start(&mut self, timestamp: u32, p: EventPayload, now: Instant) {
        let cur = Current {
            event: p.event,
            timestamp,
            segment_duration: p.duration,
            earlier_segments: 0,
            started: now,
            last_packet: now,
            reported: p.end,
        };
        if p.end {
            // Only the end packets got through: the press is already over.
            self.ready.push_back((cur.to_event(self.clock_rate), now));
        }
        self.current = Some(cur);
    }

    /// A packet from the recent past (behind the current event, shortly after
    /// it) belongs to an event that is over or was never seen starting;
    /// reporting it now would put digits out of order.
    fn is_straggler(&self, cur: &Current, timestamp: u32, now: Instant) -> bool {
        let window_units = u64::from(self.clock_rate) * STRAGGLER_WINDOW.as_secs();
        behind_by(timestamp, cur.timestamp).is_some_and(|d| u64::from(d) <= window_units)
            && now.saturating_duration_since(cur.last_packet) < STRAGGLER_WINDOW
    }

    /// RFC 4733 §2.5.1.3: an event longer than 0xFFFF units continues in a
    /// new segment, same event, no marker, timestamp = previous timestamp +
    /// previous segment's duration. The current segment must have been near
    /// the limit and not ended; the gap may exceed the duration we saw when
    /// the segment's last packets were lost.
    fn is_next_segment(&self, cur: &Current, timestamp: u32, marker: bool, p: EventPayload) -> bool {
        if marker || p.event != cur.event || cur.reported {
            return false;
        }
        let slack = LONG_EVENT_SLACK_MS * u64::from(self.clock_rate) / 1000;
        let seen = u64::from(cur.segment_duration);
        let gap = u64::from(timestamp.wrapping_sub(cur.timestamp));
        seen + slack >= 0xFFFF && (seen..=0xFFFF).contains(&gap)
    }

    fn remember(&mut self, timestamp: u32) {
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(timestamp);
    }
}

/// What a packet is to the receiver.
enum Fit {
    Ignore,
    /// Same timestamp as the current event.
    SameEvent,
    /// The next segment of the current long event.
    NextSegment,
    /// A new key press.
    NewEvent,
}

impl Current {
    /// A packet of this event arrived; returns the digit on its first end packet.
    fn refresh(&mut self, end: bool, now: Instant, clock_rate: u32) -> Option<DtmfEvent> {
        self.last_packet = now;
        if end && !self.reported {
            self.reported = true;
            return Some(self.to_event(clock_rate));
        }
        None
    }

    fn to_event(&self, clock_rate: u32) -> DtmfEvent {
        let units = self.earlier_segments + u64::from(self.segment_duration);
        DtmfEvent {
            // Only events with a digit are ever accepted.
            digit: event_to_digit(self.event).unwrap_or('?'),
            duration_ms: units_to_ms(units, clock_rate),
            started: self.started,
            source: DtmfSource::Rfc4733,
        }
    }
}

// ---------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------

/// One telephone-event RTP packet to send in place of an audio packet. The
/// caller adds the RTP header (its own sequence number and SSRC, the
/// telephone-event payload type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPacket {
    pub marker: bool,
    /// RTP timestamp of the event (its start; of the segment for long events).
    pub timestamp: u32,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    event: u8,
    tone_units: u64,
    gap_units: u64,
}

#[derive(Debug, Clone, Copy)]
enum SendState {
    /// No event on the wire. `gap_from` is the slot timestamp of the last
    /// event packet and the audio gap to leave after it before the next digit.
    Idle { gap_from: Option<(u32, u64)> },
    Playing {
        q: Queued,
        /// Timestamp of the current segment (of the event unless it is long).
        segment_start: u32,
        /// Duration last sent in this segment.
        segment_sent: u16,
        /// Total length of the earlier segments.
        earlier_segments: u64,
        /// The next packet is the event's first (marker bit).
        first: bool,
    },
    /// Sending the copies of the final packet.
    Ending { q: Queued, segment_start: u32, duration: u16, copies_left: u8 },
}

/// Plays queued digits as RFC 4733 events, one packet per media slot.
///
/// Each event: the first packet has the marker bit; all packets carry the
/// event's start timestamp (the timestamp of its first slot); the duration
/// covers the slots sent so far and grows by the packet time each slot; the
/// final packet has the E bit and is sent [`END_PACKET_COPIES`] times, **in
/// consecutive slots** (the tone's last slot and the two after it), so that a
/// short loss burst cannot take all three. `gap_ms` of audio follows the last
/// copy before the next digit starts.
#[derive(Debug)]
pub struct Rfc4733Sender {
    /// Timestamp units per packet slot.
    slot_units: u32,
    clock_rate: u32,
    queued: VecDeque<Queued>,
    state: SendState,
}

impl Rfc4733Sender {
    /// `clock_rate` of the negotiated telephone-event format and the packet
    /// time of the stream the events replace.
    pub fn new(clock_rate: u32, ptime_ms: u32) -> Self {
        let clock_rate = if clock_rate == 0 { 8000 } else { clock_rate };
        let slot_units = (u64::from(clock_rate) * u64::from(ptime_ms) / 1000).clamp(1, 0xFFFF) as u32;
        Self { slot_units, clock_rate, queued: VecDeque::new(), state: SendState::Idle { gap_from: None } }
    }

    /// Queue digits to send (e.g. "123#"), each `tone_ms` long (rounded up
    /// to whole packet slots, at least one) with `gap_ms` of audio between.
    /// Nothing is queued when any character is not a DTMF digit.
    pub fn queue(&mut self, digits: &str, tone_ms: u32, gap_ms: u32) -> Result<(), DtmfError> {
        let events = digits
            .chars()
            .map(|c| digit_to_event(c).ok_or(DtmfError::InvalidDigit(c)))
            .collect::<Result<Vec<_>, _>>()?;
        if self.queued.len() + events.len() > MAX_QUEUED_DIGITS {
            return Err(DtmfError::QueueFull);
        }
        let units = |ms: u32| u64::from(ms) * u64::from(self.clock_rate) / 1000;
        let (tone_units, gap_units) = (units(tone_ms), units(gap_ms));
        self.queued.extend(events.into_iter().map(|event| Queued { event, tone_units, gap_units }));
        Ok(())
    }

    /// A digit is playing or waiting to play.
    pub fn is_active(&self) -> bool {
        !matches!(self.state, SendState::Idle { .. }) || !self.queued.is_empty()
    }

    /// Called once per outgoing packet slot with the RTP timestamp that slot
    /// would carry. Returns the event packet to send instead of audio for
    /// this slot (always exactly one: the copies of the final packet go in
    /// consecutive slots), or `None` when this slot carries audio (no digit
    /// playing, or in a gap).
    ///
    /// Durations are computed from the slot timestamps, not counted, so a
    /// slot the media loop skipped still lengthens the event correctly.
    pub fn next_for_slot(&mut self, slot_timestamp: u32) -> Option<Vec<EventPacket>> {
        if let SendState::Idle { gap_from } = self.state {
            if let Some((last, gap)) = gap_from {
                // Timestamps going backwards (a restarted stream) end the gap.
                let since = slot_timestamp.wrapping_sub(last);
                if since < 0x8000_0000 && u64::from(since) <= gap {
                    return None;
                }
            }
            let q = self.queued.pop_front()?;
            self.state = SendState::Playing {
                q,
                segment_start: slot_timestamp,
                segment_sent: 0,
                earlier_segments: 0,
                first: true,
            };
        }

        let slot = u64::from(self.slot_units);
        let packet = match &mut self.state {
            SendState::Idle { .. } => return None,
            SendState::Playing { q, segment_start, segment_sent, earlier_segments, first } => {
                let mut elapsed = u64::from(slot_timestamp.wrapping_sub(*segment_start)) + slot;
                if elapsed > 0xFFFF {
                    // RFC 4733 §2.5.1.3: the duration field is full; go on in
                    // a new segment that starts where the last one ended.
                    *earlier_segments += u64::from(*segment_sent);
                    *segment_start = segment_start.wrapping_add(u32::from(*segment_sent));
                    elapsed = u64::from(slot_timestamp.wrapping_sub(*segment_start)) + slot;
                }
                let duration = elapsed.min(0xFFFF) as u16;
                let marker = std::mem::take(first);
                let end = *earlier_segments + u64::from(duration) >= q.tone_units;
                let packet = event_packet(q.event, end, duration, *segment_start, marker);
                *segment_sent = duration;
                if end {
                    self.state = SendState::Ending {
                        q: *q,
                        segment_start: *segment_start,
                        duration,
                        copies_left: END_PACKET_COPIES - 1,
                    };
                }
                packet
            }
            SendState::Ending { q, segment_start, duration, copies_left } => {
                let packet = event_packet(q.event, true, *duration, *segment_start, false);
                *copies_left -= 1;
                if *copies_left == 0 {
                    self.state = SendState::Idle { gap_from: Some((slot_timestamp, q.gap_units)) };
                }
                packet
            }
        };
        Some(vec![packet])
    }
}

fn event_packet(event: u8, end: bool, duration: u16, timestamp: u32, marker: bool) -> EventPacket {
    let mut payload = Vec::with_capacity(EventPayload::LEN);
    EventPayload { event, end, volume: SEND_VOLUME, duration }.write(&mut payload);
    EventPacket { marker, timestamp, payload }
}

// ---------------------------------------------------------------------------
// SIP INFO
// ---------------------------------------------------------------------------

/// Digits from a SIP INFO body: `application/dtmf-relay`
/// (`Signal=5\r\nDuration=160\r\n`; keys case-insensitive, spaces allowed,
/// `Signal` a digit, `*`, `#`, `A`-`D` or an event number such as 10/11) and
/// `application/dtmf` (the body is just the digit, or an event number).
/// Returns (digit, duration in ms if given). The content type is compared
/// case-insensitively, parameters after `;` ignored.
pub fn parse_sip_info(content_type: &str, body: &[u8]) -> Option<(char, Option<u32>)> {
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    // Lossy: a stray non-UTF-8 byte elsewhere must not hide a valid Signal line.
    let body = String::from_utf8_lossy(body);
    if mime.eq_ignore_ascii_case("application/dtmf-relay") {
        let mut signal = None;
        let mut duration = None;
        for line in body.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = key.trim();
            if key.eq_ignore_ascii_case("signal") && signal.is_none() {
                signal = Some(parse_signal(value.trim()));
            } else if key.eq_ignore_ascii_case("duration") {
                duration = value.trim().parse::<u32>().ok();
            }
        }
        // The first Signal line decides; an unreadable one is no digit.
        signal.flatten().map(|d| (d, duration))
    } else if mime.eq_ignore_ascii_case("application/dtmf") {
        parse_signal(body.trim()).map(|d| (d, None))
    } else {
        None
    }
}

/// A single digit character, or an RFC 4733 event number ("10" is `*`).
fn parse_signal(value: &str) -> Option<char> {
    let mut chars = value.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        if let Some(ev) = digit_to_event(c) {
            return event_to_digit(ev);
        }
    }
    value.parse::<u8>().ok().and_then(event_to_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(event: u8, end: bool, duration: u16) -> Vec<u8> {
        let mut v = Vec::new();
        EventPayload { event, end, volume: 10, duration }.write(&mut v);
        v
    }

    /// Drives a receiver in virtual time and collects every digit it reports,
    /// including those due to timeouts.
    struct Harness {
        rx: Rfc4733Receiver,
        t0: Instant,
        seq: u16,
        digits: Vec<DtmfEvent>,
    }

    impl Harness {
        fn new(clock_rate: u32) -> Self {
            Self { rx: Rfc4733Receiver::new(clock_rate), t0: Instant::now(), seq: 0, digits: Vec::new() }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn raw(&mut self, ms: u64, ts: u32, marker: bool, bytes: &[u8]) {
            let now = self.at(ms);
            self.run_timers(now);
            self.seq = self.seq.wrapping_add(1);
            if let Some(d) = self.rx.handle_packet(self.seq, ts, marker, bytes, now) {
                self.digits.push(d);
            }
            self.run_timers(now);
        }

        fn packet(&mut self, ms: u64, ts: u32, marker: bool, event: u8, end: bool, duration: u16) {
            self.raw(ms, ts, marker, &payload(event, end, duration));
        }

        /// Handles every timeout due by `ms`.
        fn advance(&mut self, ms: u64) {
            let now = self.at(ms);
            self.run_timers(now);
        }

        fn run_timers(&mut self, now: Instant) {
            while self.rx.poll_timeout().is_some_and(|due| due <= now) {
                match self.rx.handle_timeout(now) {
                    Some(d) => self.digits.push(d),
                    None => break,
                }
            }
        }

        /// A well-formed press at 8 kHz: a packet every 20 ms (duration +160),
        /// the first with the marker, then the end packet three times.
        fn press(&mut self, start_ms: u64, ts: u32, event: u8, packets: u16) {
            for i in 0..packets {
                self.packet(start_ms + 20 * u64::from(i), ts, i == 0, event, false, 160 * (i + 1));
            }
            let end_ms = start_ms + 20 * u64::from(packets);
            for _ in 0..3 {
                self.packet(end_ms, ts, false, event, true, 160 * (packets + 1));
            }
        }

        fn text(&self) -> String {
            self.digits.iter().map(|d| d.digit).collect()
        }
    }

    /// Found by the rfc4733 fuzz target (fuzz/regressions/rfc4733/): a late
    /// packet of a finished press is recognised by its timestamp only while
    /// that is among the last RECENT_EVENTS finished presses; after more
    /// presses than that, and away from the current press (no straggler), it
    /// starts a new press, so the stream gives more digits than it has
    /// distinct timestamps. By design: the memory is bounded.
    #[test]
    fn finished_timestamps_are_remembered_for_recent_events_presses() {
        let late_end_after = |presses: usize| {
            let mut h = Harness::new(8000);
            for k in 0..presses as u32 {
                h.press(u64::from(k) * 1000, 1000 + k * 8000, (k % 10) as u8, 3);
            }
            // The first press's end packet again, 3 s after the last press.
            let at = presses as u64 * 1000 + 3000;
            h.packet(at, 1000, false, 0, true, 480);
            h.advance(at + 5000);
            h.text()
        };
        // RECENT_EVENTS + 1 presses: the first is still remembered (the last is current).
        let n = RECENT_EVENTS + 1;
        let pressed: String = (0..n).map(|k| event_to_digit((k % 10) as u8).unwrap()).collect();
        assert_eq!(late_end_after(n), pressed);
        // One press more and it is forgotten: a new press of 0.
        let n = RECENT_EVENTS + 2;
        let pressed: String = (0..n).map(|k| event_to_digit((k % 10) as u8).unwrap()).collect();
        assert_eq!(late_end_after(n), pressed + "0");
    }

    #[test]
    fn digit_and_event_codes_map_both_ways() {
        let all = "0123456789*#ABCD";
        for (ev, d) in all.chars().enumerate() {
            assert_eq!(event_to_digit(ev as u8), Some(d));
            assert_eq!(digit_to_event(d), Some(ev as u8));
            assert_eq!(digit_to_event(d.to_ascii_lowercase()), Some(ev as u8));
        }
        for ev in 16..=255u8 {
            assert_eq!(event_to_digit(ev), None);
        }
        for c in ['E', 'e', 'x', ' ', '+', '\0', 'é'] {
            assert_eq!(digit_to_event(c), None);
        }
    }

    #[test]
    fn payload_parse_and_write() {
        // 0x8A: E bit set, volume 10; reserved bit ignored on parse.
        let p = EventPayload::parse(&[5, 0x8A | 0x40, 0x03, 0x20]).unwrap();
        assert_eq!(p, EventPayload { event: 5, end: true, volume: 10, duration: 800 });
        let mut out = Vec::new();
        p.write(&mut out);
        assert_eq!(out, [5, 0x8A, 0x03, 0x20]);
        // Volume is 6 bits.
        out.clear();
        EventPayload { event: 1, end: false, volume: 0xFF, duration: 1 }.write(&mut out);
        assert_eq!(out, [1, 0x3F, 0, 1]);
        assert_eq!(EventPayload::parse(&[1, 2, 3]), None);
        // Extra blocks (RFC 2198 is not negotiated) are ignored.
        assert_eq!(EventPayload::parse(&[7, 0, 0, 160, 8, 0x80, 1, 0]).unwrap().event, 7);
    }

    #[test]
    fn every_digit_is_received() {
        let mut h = Harness::new(8000);
        for ev in 0..16u8 {
            h.press(u64::from(ev) * 1000, u32::from(ev) * 8000, ev, 5);
        }
        assert_eq!(h.text(), "0123456789*#ABCD");
        for d in &h.digits {
            assert_eq!(d.duration_ms, 120); // 6 × 160 units at 8 kHz
            assert_eq!(d.source, DtmfSource::Rfc4733);
        }
        assert_eq!(h.digits[3].started, h.at(3000));
        assert_eq!(h.rx.poll_timeout(), None);
    }

    #[test]
    fn end_packet_three_times_gives_one_digit() {
        let mut h = Harness::new(8000);
        h.packet(0, 1000, true, 5, false, 160);
        h.packet(20, 1000, false, 5, false, 320);
        h.packet(40, 1000, false, 5, true, 480);
        assert_eq!(h.text(), "5", "reported on the first end packet");
        h.packet(40, 1000, false, 5, true, 480);
        h.packet(41, 1000, false, 5, true, 480);
        // A late non-end packet of the same event is no new press either.
        h.packet(60, 1000, false, 5, false, 320);
        h.advance(5000);
        assert_eq!(h.text(), "5");
        assert_eq!(h.digits[0].duration_ms, 60);
    }

    #[test]
    fn missing_marker_still_starts_an_event() {
        let mut h = Harness::new(8000);
        // A sender that never sets the marker.
        for (i, ev) in [1u8, 2, 3].into_iter().enumerate() {
            let start = i as u64 * 300;
            let ts = 10_000 + i as u32 * 2400;
            h.packet(start, ts, false, ev, false, 160);
            h.packet(start + 20, ts, false, ev, false, 320);
            h.packet(start + 40, ts, false, ev, true, 480);
        }
        assert_eq!(h.text(), "123");
    }

    #[test]
    fn lost_end_packets_new_timestamp_ends_the_previous_event() {
        let mut h = Harness::new(8000);
        h.packet(0, 1000, true, 4, false, 160);
        h.packet(20, 1000, false, 4, false, 320);
        h.packet(40, 1000, false, 4, false, 480);
        // ...its end packets are lost; the next press begins.
        h.packet(200, 3000, true, 7, false, 160);
        assert_eq!(h.text(), "4");
        assert_eq!(h.digits[0].duration_ms, 60, "largest duration seen");
        assert_eq!(h.digits[0].started, h.at(0));
        h.packet(220, 3000, false, 7, true, 320);
        assert_eq!(h.text(), "47");
    }

    #[test]
    fn lost_end_packets_timeout_ends_the_event() {
        let mut h = Harness::new(8000);
        h.packet(0, 1000, true, 9, false, 160);
        h.packet(20, 1000, false, 9, false, 320);
        assert_eq!(h.rx.poll_timeout(), Some(h.at(20) + QUIET_TIMEOUT));
        h.advance(619);
        assert_eq!(h.text(), "");
        assert_eq!(h.rx.handle_timeout(h.at(300)), None, "early call does nothing");
        h.advance(620);
        assert_eq!(h.text(), "9");
        assert_eq!(h.digits[0].duration_ms, 40);
        assert_eq!(h.rx.poll_timeout(), None);
        // The end packets turning up very late give nothing more.
        h.packet(900, 1000, false, 9, true, 480);
        h.advance(5000);
        assert_eq!(h.text(), "9");
    }

    #[test]
    fn same_digit_twice_is_two_digits() {
        let mut h = Harness::new(8000);
        h.press(0, 50_000, 1, 4);
        h.press(200, 50_000 + 1600, 1, 4);
        assert_eq!(h.text(), "11");
        // And without markers or end packets (all lost), still two.
        let mut h = Harness::new(8000);
        for ts in [8000u32, 9600] {
            let start = u64::from(ts - 8000) / 8;
            h.packet(start, ts, false, 1, false, 160);
            h.packet(start + 20, ts, false, 1, false, 320);
        }
        h.advance(2000);
        assert_eq!(h.text(), "11");
    }

    #[test]
    fn reordered_and_duplicated_packets() {
        let mut h = Harness::new(8000);
        // Event 1: packets 2 and 1 swapped, packet 3 duplicated, end before
        // the last refresh.
        h.packet(0, 1000, false, 6, false, 320);
        h.packet(1, 1000, true, 6, false, 160);
        h.packet(40, 1000, false, 6, false, 480);
        h.packet(41, 1000, false, 6, false, 480);
        h.packet(80, 1000, false, 6, true, 800);
        h.packet(81, 1000, false, 6, false, 640);
        h.packet(82, 1000, false, 6, true, 800);
        assert_eq!(h.text(), "6");
        assert_eq!(h.digits[0].duration_ms, 100);
        // Event 2 starts before event 1's last end copy arrives.
        h.packet(200, 3000, true, 8, false, 160);
        h.packet(201, 1000, false, 6, true, 800);
        h.packet(220, 3000, false, 8, true, 320);
        // A straggler of an older event we never saw start is dropped rather
        // than reported out of order.
        h.packet(230, 2000, true, 3, false, 160);
        h.packet(231, 2000, false, 3, true, 320);
        h.advance(5000);
        assert_eq!(h.text(), "68");
    }

    #[test]
    fn end_only_packet_with_new_timestamp_reports_both_events_in_order() {
        let mut h = Harness::new(8000);
        h.packet(0, 1000, true, 1, false, 160);
        // All of event 2 lost except one end copy: it ends event 1 and is
        // itself complete.
        let now = h.at(300);
        assert_eq!(h.rx.handle_packet(1, 4000, false, &payload(2, true, 800), now).unwrap().digit, '1');
        assert_eq!(h.rx.poll_timeout(), Some(now), "the second digit is due at once");
        assert_eq!(h.rx.handle_timeout(now).unwrap().digit, '2');
        assert_eq!(h.rx.poll_timeout(), None);
        // A waiting digit also comes out of the next handle_packet, before
        // any newer one.
        h.packet(400, 8000, true, 3, false, 160);
        let now = h.at(500);
        assert_eq!(h.rx.handle_packet(2, 9000, false, &payload(4, true, 160), now).unwrap().digit, '3');
        assert_eq!(h.rx.handle_packet(3, 10_000, false, &payload(5, true, 160), now).unwrap().digit, '4');
        assert_eq!(h.rx.handle_timeout(now).unwrap().digit, '5');
        assert_eq!(h.rx.handle_timeout(now), None);
    }

    #[test]
    fn long_event_split_into_segments_is_one_digit() {
        // RFC 4733 §2.5.1.3 at 8 kHz: a 20 s press is segments of 65440
        // units (the last multiple of 160 that fits), each starting where
        // the previous ended, marker only on the very first packet.
        let mut h = Harness::new(8000);
        let start_ts = u32::MAX - 100_000; // and across the wrap
        let total: u32 = 20 * 8000;
        let mut seg_ts = start_ts;
        let mut seg_dur: u32 = 0;
        let mut first = true;
        let mut elapsed = 0;
        let mut ms = 0;
        while elapsed < total {
            if seg_dur + 160 > 0xFFFF {
                seg_ts = seg_ts.wrapping_add(seg_dur);
                seg_dur = 0;
            }
            seg_dur += 160;
            elapsed += 160;
            let end = elapsed >= total;
            // Lose a few packets, including the last ones of the first
            // segment, but never the end.
            let lost = !end && (elapsed % 3040 == 0 || (65_000..65_440).contains(&elapsed));
            if !lost {
                h.packet(ms, seg_ts, first, 0xB, end, seg_dur as u16);
            }
            first = false;
            ms += 20;
            assert!(h.digits.is_empty() || end, "no digit before the end ({elapsed})");
        }
        h.packet(ms, seg_ts, false, 0xB, true, seg_dur as u16);
        h.advance(ms + 5000);
        assert_eq!(h.text(), "#");
        assert_eq!(h.digits[0].duration_ms, 20_000);
        assert_eq!(h.digits[0].started, h.at(0));
    }

    #[test]
    fn short_event_then_same_key_is_not_a_segment() {
        // A gap equal to the seen duration looks like the segment rule, but
        // the first event was far from the 0xFFFF limit: two presses.
        let mut h = Harness::new(8000);
        h.packet(0, 1000, false, 2, false, 800);
        h.packet(100, 1800, false, 2, false, 160);
        h.advance(5000);
        assert_eq!(h.text(), "22");
    }

    #[test]
    fn garbage_payloads_are_ignored() {
        let mut h = Harness::new(8000);
        h.packet(0, 1000, true, 3, false, 160);
        for bytes in [&[][..], &[3], &[3, 0x80], &[3, 0x80, 0]] {
            h.raw(10, 99, true, bytes);
        }
        // Events 16+ (flash, fax tones...) under a new timestamp do not end
        // the DTMF event either.
        h.packet(20, 5000, true, 16, true, 160);
        h.packet(30, 6000, true, 255, true, 160);
        h.packet(40, 7000, true, 36, false, 0xFFFF);
        assert_eq!(h.text(), "");
        h.packet(60, 1000, false, 3, true, 480);
        assert_eq!(h.text(), "3");
        h.advance(10_000);
        assert_eq!(h.text(), "3");
        // Zero durations and maximum ones are just numbers.
        h.packet(20_000, 100_000, false, 0, true, 0);
        h.packet(21_000, 200_000, false, 1, true, 0xFFFF);
        assert_eq!(h.text(), "301");
        assert_eq!(h.digits[1].duration_ms, 0);
        assert_eq!(h.digits[2].duration_ms, 8191);
    }

    #[test]
    fn timestamp_wraparound() {
        let mut h = Harness::new(8000);
        h.press(0, u32::MAX - 200, 1, 3);
        h.press(200, 1400, 2, 3); // after the wrap
        h.press(400, 3000, 3, 3);
        assert_eq!(h.text(), "123");
    }

    #[test]
    fn sender_restart_behind_the_old_timestamp_is_a_new_event_after_a_while() {
        let mut h = Harness::new(8000);
        h.press(0, 500_000, 1, 3);
        // A slightly older timestamp long after: not a straggler.
        h.press(10_000, 499_000, 2, 3);
        // Far behind at once: a restarted sender, not a straggler either.
        h.press(10_200, 7, 3, 3);
        assert_eq!(h.text(), "123");
    }

    #[test]
    fn clock_48k() {
        let mut h = Harness::new(48_000);
        // 20 ms packets of 960 units.
        for i in 1..=5u16 {
            h.packet(u64::from(i) * 20, 96_000, i == 1, 7, false, 960 * i);
        }
        h.packet(120, 96_000, false, 7, true, 960 * 6);
        assert_eq!(h.text(), "7");
        assert_eq!(h.digits[0].duration_ms, 120);
    }

    #[test]
    fn zero_clock_rate_does_not_divide_by_zero() {
        let mut rx = Rfc4733Receiver::new(0);
        let d = rx.handle_packet(1, 1, true, &payload(1, true, 800), Instant::now()).unwrap();
        assert_eq!(d.duration_ms, 100);
        let mut tx = Rfc4733Sender::new(0, 0);
        tx.queue("1", 0, 0).unwrap();
        assert!(tx.next_for_slot(0).is_some());
    }

    // --- sender ----------------------------------------------------------

    fn parse_packet(p: &EventPacket) -> EventPayload {
        EventPayload::parse(&p.payload).unwrap()
    }

    #[test]
    fn sender_packet_shape() {
        let mut tx = Rfc4733Sender::new(8000, 20);
        assert!(!tx.is_active());
        assert_eq!(tx.next_for_slot(0), None);
        tx.queue("1a", 100, 40).unwrap();
        assert!(tx.is_active());
        let slot = |k: u32| 1000 + 160 * k;
        // Digit 1: 5 slots of tone, the last with E, then 2 more copies.
        for k in 0..7 {
            let pkts = tx.next_for_slot(slot(k)).unwrap();
            assert_eq!(pkts.len(), 1);
            let p = &pkts[0];
            let e = parse_packet(p);
            assert_eq!(p.timestamp, 1000);
            assert_eq!(p.marker, k == 0);
            assert_eq!(e.event, 1);
            assert_eq!(e.volume, 10);
            assert_eq!(e.end, k >= 4);
            assert_eq!(e.duration, 160 * (k.min(4) as u16 + 1));
        }
        // 40 ms of audio.
        assert_eq!(tx.next_for_slot(slot(7)), None);
        assert_eq!(tx.next_for_slot(slot(8)), None);
        assert!(tx.is_active());
        // Digit A.
        let first = &tx.next_for_slot(slot(9)).unwrap()[0];
        assert!(first.marker);
        assert_eq!(first.timestamp, slot(9));
        assert_eq!(parse_packet(first).event, 12);
        for k in 10..16 {
            assert!(tx.next_for_slot(slot(k)).is_some());
        }
        assert!(!tx.is_active());
        assert_eq!(tx.next_for_slot(slot(16)), None);
    }

    #[test]
    fn sender_duration_follows_slot_timestamps() {
        // A skipped slot still lengthens the event by its packet time.
        let mut tx = Rfc4733Sender::new(8000, 20);
        tx.queue("5", 200, 0).unwrap();
        assert_eq!(parse_packet(&tx.next_for_slot(0).unwrap()[0]).duration, 160);
        assert_eq!(parse_packet(&tx.next_for_slot(480).unwrap()[0]).duration, 640);
        // Tone lengths round up to whole slots.
        let mut tx = Rfc4733Sender::new(8000, 20);
        tx.queue("5", 90, 0).unwrap();
        let durations: Vec<_> = (0..7).map(|k| parse_packet(&tx.next_for_slot(k * 160).unwrap()[0])).collect();
        assert!(durations[4].end && !durations[3].end);
        assert_eq!(durations[6].duration, 800);
        assert_eq!(tx.next_for_slot(7 * 160), None);
    }

    #[test]
    fn sender_rejects_non_digits_atomically() {
        let mut tx = Rfc4733Sender::new(8000, 20);
        assert_eq!(tx.queue("12x3", 100, 50), Err(DtmfError::InvalidDigit('x')));
        assert_eq!(tx.queue("1 2", 100, 50), Err(DtmfError::InvalidDigit(' ')));
        assert!(!tx.is_active());
        assert_eq!(tx.next_for_slot(0), None);
        assert_eq!(tx.queue(&"1".repeat(MAX_QUEUED_DIGITS + 1), 100, 50), Err(DtmfError::QueueFull));
        tx.queue("", 100, 50).unwrap();
        assert!(!tx.is_active());
    }

    /// Small deterministic PRNG (xorshift64*) for the loss patterns.
    struct Rng(u64);
    impl Rng {
        fn chance(&mut self, percent: u64) -> bool {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % 100 < percent
        }
    }

    /// Sender → lossy packet stream → receiver. `lose_ends` also drops end
    /// packets.
    fn round_trip(
        digits: &str,
        clock_rate: u32,
        ptime_ms: u32,
        tone_ms: u32,
        loss_percent: u64,
        lose_ends: bool,
    ) -> Vec<DtmfEvent> {
        let mut tx = Rfc4733Sender::new(clock_rate, ptime_ms);
        tx.queue(digits, tone_ms, 60).unwrap();
        let mut h = Harness::new(clock_rate);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let slot_units = clock_rate * ptime_ms / 1000;
        let mut ts = u32::MAX - 3 * slot_units; // the stream wraps early on
        let mut ms = 0;
        while tx.is_active() {
            if let Some(pkts) = tx.next_for_slot(ts) {
                for p in pkts {
                    let e = parse_packet(&p);
                    if (!e.end || lose_ends) && rng.chance(loss_percent) {
                        continue;
                    }
                    h.raw(ms, p.timestamp, p.marker, &p.payload);
                }
            } else {
                h.advance(ms);
            }
            ts = ts.wrapping_add(slot_units);
            ms += u64::from(ptime_ms);
        }
        h.advance(ms + 2000);
        h.digits
    }

    #[test]
    fn sender_receiver_round_trip() {
        let digits = "123#*ABCD0";
        let got = round_trip(digits, 8000, 20, 100, 0, false);
        assert_eq!(got.iter().map(|d| d.digit).collect::<String>(), digits);
        assert!(got.iter().all(|d| d.duration_ms == 100));
        assert!(got.windows(2).all(|w| w[0].started < w[1].started));
    }

    #[test]
    fn sender_receiver_round_trip_with_loss() {
        let digits = "123#*ABCD0";
        for (clock, ptime) in [(8000, 20), (8000, 30), (48_000, 20)] {
            let got = round_trip(digits, clock, ptime, 100, 10, false);
            assert_eq!(got.iter().map(|d| d.digit).collect::<String>(), digits, "{clock}/{ptime}");
            // The end packets arrive, so the full duration is known.
            assert!(got.iter().all(|d| (100..=100 + ptime).contains(&d.duration_ms)), "{got:?}");
            // Heavier loss, end packets included: still the right digits
            // (new timestamps and the quiet timeout end the events).
            let got = round_trip(digits, clock, ptime, 100, 30, true);
            assert_eq!(got.iter().map(|d| d.digit).collect::<String>(), digits, "{clock}/{ptime} with lost ends");
        }
    }

    #[test]
    fn long_tone_round_trip_uses_segments() {
        // 10 s at 8 kHz is 80000 units: two segments.
        let mut tx = Rfc4733Sender::new(8000, 20);
        tx.queue("7", 10_000, 0).unwrap();
        let mut timestamps = Vec::new();
        let mut ts = 0u32;
        while let Some(p) = tx.next_for_slot(ts) {
            timestamps.push((p[0].timestamp, p[0].marker));
            ts += 160;
        }
        timestamps.dedup();
        assert_eq!(timestamps, [(0, true), (0, false), (65_440, false)]);
        let got = round_trip("7", 8000, 20, 10_000, 10, false);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].digit, got[0].duration_ms), ('7', 10_000));
        let got = round_trip("*", 48_000, 20, 5_000, 10, false);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].digit, got[0].duration_ms), ('*', 5_000));
    }

    // --- SIP INFO --------------------------------------------------------

    #[test]
    fn sip_info_bodies() {
        let relay = "application/dtmf-relay";
        assert_eq!(parse_sip_info(relay, b"Signal=1\r\nDuration=160\r\n"), Some(('1', Some(160))));
        assert_eq!(parse_sip_info(relay, b"Signal= #\nDuration= 250"), Some(('#', Some(250))));
        assert_eq!(parse_sip_info(relay, b"signal=11"), Some(('#', None)));
        assert_eq!(parse_sip_info(relay, b"SIGNAL = 10\r\nDURATION = 100\r\n"), Some(('*', Some(100))));
        assert_eq!(parse_sip_info(relay, b"Signal=*\r\nDuration=abc\r\n"), Some(('*', None)));
        assert_eq!(parse_sip_info(relay, b"Duration=160\r\nSignal=d\r\n"), Some(('D', Some(160))));
        assert_eq!(parse_sip_info("Application/DTMF-Relay; charset=utf-8", b"Signal=0"), Some(('0', None)));
        assert_eq!(parse_sip_info(relay, b"Signal=16\r\n"), None, "flash is not a digit");
        assert_eq!(parse_sip_info(relay, b"Signal=\r\nDuration=160"), None);
        assert_eq!(parse_sip_info(relay, b"Duration=160"), None);
        assert_eq!(parse_sip_info(relay, b""), None);
        assert_eq!(parse_sip_info(relay, b"Signal=x\r\nSignal=2"), None, "the first Signal decides");
        assert_eq!(parse_sip_info(relay, b"\xff\xfe\r\nSignal=2"), Some(('2', None)));

        assert_eq!(parse_sip_info("application/dtmf", b"5"), Some(('5', None)));
        assert_eq!(parse_sip_info("application/dtmf", b"11\r\n"), Some(('#', None)));
        assert_eq!(parse_sip_info("APPLICATION/DTMF ; x=y", b" b "), Some(('B', None)));
        assert_eq!(parse_sip_info("application/dtmf", b"55"), None);
        assert_eq!(parse_sip_info("application/dtmf", b"Signal=5"), None);

        assert_eq!(parse_sip_info("text/plain", b"5"), None);
        assert_eq!(parse_sip_info("application/sdp", b"Signal=5"), None);
        assert_eq!(parse_sip_info("", b"5"), None);
    }

    // --- SIPp captures ---------------------------------------------------

    /// One RTP packet out of a capture: arrival offset and the header fields
    /// the receiver needs.
    struct CapturedRtp {
        at: Duration,
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: Vec<u8>,
    }

    /// Classic libpcap files (24-byte global header, 16-byte record headers)
    /// with Ethernet + IPv4 + UDP + RTP, parsed by hand so the test needs no
    /// capture library. Anything else in the file is skipped.
    fn read_pcap_rtp(data: &[u8]) -> Vec<CapturedRtp> {
        let u16be = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
        let (big_endian, nanos) = match magic {
            0xA1B2_C3D4 => (false, false),
            0xD4C3_B2A1 => (true, false),
            0xA1B2_3C4D => (false, true),
            0x4D3C_B2A1 => (true, true),
            _ => panic!("not a classic pcap file (magic {magic:#x})"),
        };
        let u32at = |i: usize| {
            let b: [u8; 4] = data[i..i + 4].try_into().unwrap();
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        assert_eq!(u32at(20), 1, "link type Ethernet");
        let mut out = Vec::new();
        let mut first = None;
        let mut pos = 24;
        while pos + 16 <= data.len() {
            let (sec, frac, incl) = (u32at(pos), u32at(pos + 4), u32at(pos + 8) as usize);
            let frame = &data[pos + 16..pos + 16 + incl];
            pos += 16 + incl;
            let t = Duration::from_secs(u64::from(sec))
                + if nanos { Duration::from_nanos(u64::from(frac)) } else { Duration::from_micros(u64::from(frac)) };
            let at = t - *first.get_or_insert(t);

            let mut eth = 14;
            let mut ethertype = u16be(frame, 12);
            if ethertype == 0x8100 {
                ethertype = u16be(frame, 16);
                eth += 4;
            }
            if ethertype != 0x0800 {
                continue;
            }
            let ip = &frame[eth..];
            let ihl = usize::from(ip[0] & 0x0F) * 4;
            if ip[0] >> 4 != 4 || ip[9] != 17 {
                continue;
            }
            let udp = &ip[ihl..usize::from(u16be(ip, 2))];
            let rtp = &udp[8..usize::from(u16be(udp, 4))];
            if rtp.len() < 12 || rtp[0] >> 6 != 2 {
                continue;
            }
            let mut start = 12 + 4 * usize::from(rtp[0] & 0x0F);
            if rtp[0] & 0x10 != 0 {
                start += 4 + 4 * usize::from(u16be(rtp, start + 2));
            }
            let end = if rtp[0] & 0x20 != 0 { rtp.len() - usize::from(rtp[rtp.len() - 1]) } else { rtp.len() };
            out.push(CapturedRtp {
                at,
                payload_type: rtp[1] & 0x7F,
                sequence: u16be(rtp, 2),
                timestamp: u32::from_be_bytes(rtp[4..8].try_into().unwrap()),
                marker: rtp[1] & 0x80 != 0,
                payload: rtp[start..end].to_vec(),
            });
        }
        out
    }

    /// The RFC 2833 captures SIPp ships (Debian package sip-tester,
    /// `/usr/share/sip-tester/dtmf_2833_*.pcap`, played by its `play_pcap_audio`):
    /// each holds one key press on payload type 101 — ten packets 20 ms apart
    /// with the duration growing by 320, the marker on the first, and the end
    /// packet three times (same sequence number) with duration 2240 (280 ms).
    #[test]
    fn sipp_dtmf_captures() {
        let dir = std::path::Path::new("/usr/share/sip-tester");
        // Never skipped: the test set-up installs sip-tester.
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
            panic!("{}: {e}; install the Debian package sip-tester (scripts/setup.sh --test)", dir.display())
        });
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("dtmf_2833_") && n.ends_with(".pcap"))
            })
            .collect();
        files.sort();
        let mut seen = String::new();
        for path in &files {
            let name = path.file_stem().unwrap().to_str().unwrap();
            let expected = match name.trim_start_matches("dtmf_2833_") {
                "pound" => '#',
                "star" => '*',
                d => d.parse::<char>().unwrap(),
            };
            let packets = read_pcap_rtp(&std::fs::read(path).unwrap());
            assert_eq!(packets.len(), 10, "{name}");
            let mut rx = Rfc4733Receiver::new(8000);
            let t0 = Instant::now();
            let mut got = Vec::new();
            for p in &packets {
                assert_eq!(p.payload_type, 101, "{name}");
                got.extend(rx.handle_packet(p.sequence, p.timestamp, p.marker, &p.payload, t0 + p.at));
            }
            assert_eq!(rx.poll_timeout(), None, "{name}: the event ended");
            assert_eq!(got.len(), 1, "{name}: {got:?}");
            assert_eq!(got[0].digit, expected, "{name}");
            assert_eq!(got[0].duration_ms, 280, "{name}");
            assert_eq!(got[0].started, t0, "{name}");
            seen.push(expected);
        }
        if !files.is_empty() {
            assert_eq!(seen, "0123456789#*", "the twelve captures, sorted by name");
        }
    }
}
