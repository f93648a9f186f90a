//! The sans-IO media core of one call.
//!
//! RTP in: latch to the first valid source (symmetric RTP, for callers behind
//! NAT), ignore everything else; audio goes to the jitter buffer, telephone
//! events to the RFC 4733 receiver, everything to the RTCP reception
//! statistics; with barge-in on, an audio packet is also decoded as it arrives
//! (in arrival order, by a decoder of its own) for the echo check and the
//! onset gate, which may pause the agent before the packet plays. Every packet time: play out what the jitter buffer releases,
//! decode or conceal it to 16 kHz, give it to the agent, queue the agent's
//! audio in the pacer, and emit the pacer's frames as RTP (or as telephone
//! events while digits are being sent). RTCP reports go out on their own
//! schedule; an RTP timeout asks for the call to end.

use super::bargein::{BargeAction, BargeInConfig, BargeInTracker};
use super::transcriber::{Transcriber, TranscriberEvent};
use super::turns::{CallerState, TurnCommit, TurnDetector, TurnEvent};
use crate::agent::{Agent, AgentOutput, PlayoutState};
use crate::media::codec::{self, CodecKind, Decoder, Encoder, OpusParams, AGENT_RATE};
use crate::media::dtmf::{self, DtmfEvent, DtmfSource, Rfc4733Receiver, Rfc4733Sender};
use crate::media::jitter::{InsertOutcome, JitterBuffer, JitterConfig, MediaPacket, Playout};
use crate::media::pacer::{Pacer, PacerConfig};
use crate::media::rtcp::{RtcpConfig, RtcpSession, RtcpStats};
use crate::media::rtp;
use crate::models::vad::{Segmenter, VadClient, VadEvent};
use crate::sip::sdp::{Codec, Direction, Negotiated, OpusFmtp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// What the SDP negotiation decided for this call's audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaParams {
    pub codec: Codec,
    pub payload_type: u8,
    pub dtmf_payload_type: Option<u8>,
    pub dtmf_clock_rate: u32,
    pub ptime_ms: u32,
    pub direction: Direction,
    pub remote: Option<SocketAddr>,
    pub opus: Option<OpusFmtp>,
}

impl From<&Negotiated> for MediaParams {
    fn from(n: &Negotiated) -> MediaParams {
        MediaParams {
            codec: n.codec,
            payload_type: n.payload_type,
            dtmf_payload_type: n.dtmf_payload_type,
            dtmf_clock_rate: n.dtmf_clock_rate,
            ptime_ms: n.ptime_ms,
            direction: n.direction,
            remote: n.remote_rtp,
            opus: n.opus,
        }
    }
}

/// Per-appliance media settings (from the config).
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub jitter: JitterConfig,
    pub opus: OpusParams,
    pub rtcp_interval: Duration,
    /// None: never time out.
    pub rtp_timeout: Option<Duration>,
    /// RTCP CNAME (RFC 7022: per-call random is fine).
    pub cname: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MediaStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// RTP from an address other than the latched one.
    pub foreign_dropped: u64,
    /// Not RTP, or a payload type we did not negotiate.
    pub invalid_dropped: u64,
    pub late: u64,
    pub lost: u64,
    pub duplicate: u64,
    /// 16 kHz samples of concealment produced for lost packets.
    pub concealed_samples: u64,
    /// 16 kHz samples synthesised while the jitter buffer grew its delay.
    pub stretched_samples: u64,
    /// Frames dropped while the jitter buffer shrank its delay.
    pub shrunk: u64,
    /// 16 kHz samples decoded from packets.
    pub decoded_samples: u64,
    pub decode_errors: u64,
    pub dtmf_digits: u64,
    /// VAD chunks this call could not hand to the (shared) VAD worker: its queue was full.
    pub vad_dropped: u64,
    pub rtcp: RtcpStats,
}

/// What became of one received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    Accepted,
    /// First valid packet: media now flows to/from this address.
    Latched(SocketAddr),
    Foreign,
    Invalid,
    /// Valid but not played: telephone-event, RTCP, late, duplicate, receive disabled.
    Skipped,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Rtp(SocketAddr, Vec<u8>),
    Rtcp(SocketAddr, Vec<u8>),
}

/// Something the call driver must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    Dtmf(DtmfEvent),
    Speech(VadEvent),
    /// A caller turn's transcript (or partial), or why a turn has none.
    Transcription(TranscriberEvent),
    /// A caller turn ended (server_vad silence, semantic_vad model or bound, or the call's end).
    TurnCommitted(TurnCommit),
    /// End the call with BYE for this reason (agent decision, RTP timeout).
    Hangup(String),
    /// Transfer the caller to this SIP URI (REFER), as the agent decided.
    Transfer(String),
    /// The agent's language model began reply number N.
    ReplyStarted(u64),
    /// The agent's language model finished (or failed, or dropped) a reply.
    Reply(crate::agent::ReplyRecord),
    /// The caller spoke over the agent.
    BargeIn(BargeInEvent),
    /// A tool call of the agent's model ended.
    Tool(crate::agent::ToolRecord),
    /// Answering-machine detection decided.
    Amd(crate::media::amd::AmdDecision),
    /// Work started speculatively on a pause was used (the turn ended there) or dropped (the
    /// caller went on).
    Speculation {
        used: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BargeInEvent {
    /// A real interruption: the agent's audio stopped; `played_samples` (16 kHz) had been heard.
    Interrupted { onset_ms: u64, played_samples: u64, dropped_samples: u64 },
    /// Speech over the agent that was not an interruption (a back-channel, a cough): it resumed.
    Resumed,
}

/// Random RTP identity (SSRC, first sequence number and timestamp, RFC 3550 §5.1).
#[derive(Debug, Clone, Copy)]
pub struct RtpIdentity {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
}

impl RtpIdentity {
    /// An identity drawn from `rng` (the driver's: the core draws none of its own).
    pub fn from_rng(rng: &mut impl Rng) -> RtpIdentity {
        RtpIdentity { ssrc: rng.random(), sequence: rng.random(), timestamp: rng.random() }
    }
}

fn kind(c: Codec) -> CodecKind {
    match c {
        Codec::Pcmu => CodecKind::Pcmu,
        Codec::Pcma => CodecKind::Pcma,
        Codec::Opus => CodecKind::Opus,
    }
}

/// Our Opus encoder settings, bounded by what the peer's fmtp allows.
fn opus_params(ours: &OpusParams, peer: Option<&OpusFmtp>) -> OpusParams {
    let mut p = ours.clone();
    if let Some(f) = peer {
        if let Some(max) = f.maxaveragebitrate {
            p.bitrate_bps = p.bitrate_bps.min(max.max(6000));
        }
        // FEC costs bits; send it only to a decoder that said it will use it.
        p.fec = p.fec && f.useinbandfec;
    }
    p
}

/// The codec state of one negotiated session (rebuilt when a re-INVITE changes the codec).
struct Codecs {
    decoder: Box<dyn Decoder>,
    /// Decodes packets as they arrive, for barge-in's onset gate (its own state: the playout
    /// decoder must see the packets in playout order).
    arrival: Box<dyn Decoder>,
    encoder: Box<dyn Encoder>,
    dtmf_rx: Rfc4733Receiver,
    dtmf_tx: Rfc4733Sender,
}

impl Codecs {
    fn new(p: &MediaParams, s: &MediaSettings) -> Result<Codecs, codec::CodecError> {
        let k = kind(p.codec);
        Ok(Codecs {
            decoder: codec::decoder(k, p.ptime_ms)?,
            arrival: codec::decoder(k, p.ptime_ms)?,
            encoder: codec::encoder(k, p.ptime_ms, &opus_params(&s.opus, p.opus.as_ref()))?,
            dtmf_rx: Rfc4733Receiver::new(p.dtmf_clock_rate),
            dtmf_tx: Rfc4733Sender::new(p.dtmf_clock_rate, p.ptime_ms),
        })
    }
}

pub struct CallMedia {
    params: MediaParams,
    settings: MediaSettings,
    latched: Option<SocketAddr>,
    /// Source of the peer's RTCP (latched like RTP), when it uses a separate port.
    rtcp_peer: Option<SocketAddr>,
    jitter: JitterBuffer,
    codecs: Codecs,
    pacer: Pacer,
    rtcp: RtcpSession,
    agent: Box<dyn Agent>,
    agent_started: bool,
    /// turn_detection: this call's stream on the shared VAD worker, its segmenter, and the
    /// detector that decides where turns end.
    vad: Option<(VadClient, Segmenter, TurnDetector)>,
    /// The VAD worker gave this call up (reported once).
    vad_lost: bool,
    /// Speech recognition of the turns the VAD finds.
    transcriber: Option<Transcriber>,
    /// A tentative end of the open turn was announced and not yet used or dropped.
    speculating: bool,
    /// Barge-in (needs the VAD): the decision, the echo check, and which recent caller audio was
    /// the agent's own echo (caller sample position, length, echo?).
    barge: Option<BargeInTracker>,
    /// Caller samples (16 kHz) handed on so far: the caller audio's timeline.
    caller_samples: u64,
    /// Sequence number of the last packet decoded on arrival (older ones are not: reordered).
    arrival_seq: Option<u16>,
    arrival_pcm: Vec<i16>,
    events: VecDeque<MediaEvent>,
    timed_out: bool,
    stats: MediaStats,
    started: Instant,
    /// The wall-clock time at `started` (RTCP's NTP timestamps follow from it and `now`).
    wall_at_start: SystemTime,
    /// Random choices after the start (a new stream's identity, RTCP's interval jitter), from the
    /// driver's seed (not from anything on the wire, so a later stream's SSRC, sequence and
    /// timestamp stay unpredictable, RFC 3550 §5.1): the core reads no RNG and no clock of its own.
    rng: StdRng,
    last_rx: Option<Instant>,
    pcm: Vec<i16>,
    payload: Vec<u8>,
}

impl CallMedia {
    /// `id` is the first outgoing stream's identity; `now` and `wall` the start on the monotonic
    /// and the wall clock; `seed` the RNG's for later random choices. All come from the driver.
    pub fn new(
        params: MediaParams,
        settings: MediaSettings,
        agent: Box<dyn Agent>,
        id: RtpIdentity,
        now: Instant,
        wall: SystemTime,
        seed: u64,
    ) -> Result<CallMedia, codec::CodecError> {
        let codecs = Codecs::new(&params, &settings)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let rtcp = RtcpSession::with_seed(
            RtcpConfig {
                ssrc: id.ssrc,
                cname: settings.cname.clone(),
                clock_rate: params.codec.clock_rate(),
                interval: settings.rtcp_interval,
            },
            now,
            wall,
            rng.random(),
        );
        Ok(CallMedia {
            pacer: Pacer::new(Self::pacer_config(&params, id), now),
            jitter: JitterBuffer::new(Self::jitter_config(&settings, &params)),
            latched: None,
            rtcp_peer: None,
            codecs,
            rtcp,
            agent,
            agent_started: false,
            vad: None,
            vad_lost: false,
            transcriber: None,
            speculating: false,
            barge: None,
            caller_samples: 0,
            arrival_seq: None,
            arrival_pcm: Vec::with_capacity(960),
            events: VecDeque::new(),
            timed_out: false,
            stats: MediaStats::default(),
            started: now,
            wall_at_start: wall,
            rng,
            last_rx: None,
            pcm: Vec::with_capacity(960),
            payload: Vec::with_capacity(512),
            settings,
            params,
        })
    }

    /// The jitter buffer runs on the negotiated codec's RTP clock (48 kHz for Opus).
    fn jitter_config(s: &MediaSettings, p: &MediaParams) -> JitterConfig {
        JitterConfig { clock_rate: p.codec.clock_rate(), ..s.jitter.clone() }
    }

    fn pacer_config(p: &MediaParams, id: RtpIdentity) -> PacerConfig {
        PacerConfig {
            clock_rate: p.codec.clock_rate(),
            pcm_rate: AGENT_RATE,
            ptime: Duration::from_millis(p.ptime_ms as u64),
            payload_type: p.payload_type,
            ssrc: id.ssrc,
            initial_sequence: id.sequence,
            initial_timestamp: id.timestamp,
            max_catch_up: 3,
        }
    }

    /// Turn on server_vad: caller audio goes to the VAD worker, speech events come back.
    pub fn set_vad(&mut self, client: VadClient, segmenter: Segmenter, turns: TurnDetector) {
        self.vad = Some((client, segmenter, turns));
    }

    /// Let the caller interrupt the agent (needs `set_vad`).
    pub fn set_barge_in(&mut self, cfg: BargeInConfig, echo_max_delay_ms: u64, fade_ms: u64) {
        self.pacer.set_fade(fade_ms as usize * AGENT_RATE as usize / 1000);
        self.barge = Some(BargeInTracker::new(cfg, echo_max_delay_ms));
    }

    /// Transcribe the turns server_vad finds (needs `set_vad`).
    pub fn set_transcriber(&mut self, t: Transcriber) {
        self.transcriber = Some(t);
    }

    pub fn params(&self) -> &MediaParams {
        &self.params
    }

    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// The call is confirmed: the agent begins (its greeting starts playing).
    pub fn start_agent(&mut self, now: Instant) {
        if !self.agent_started {
            self.agent_started = true;
            self.agent.start(AGENT_RATE, now);
        }
    }

    /// A re-INVITE/UPDATE changed the session. A new remote address re-opens
    /// latching; a codec or packet-time change rebuilds the codecs and the
    /// jitter buffer (a bad new codec keeps the old one: the call goes on).
    pub fn update(&mut self, params: MediaParams, now: Instant) {
        if params.remote != self.params.remote {
            self.latched = None;
            self.rtcp_peer = None;
        }
        let codec_changed = params.codec != self.params.codec
            || params.payload_type != self.params.payload_type
            || params.ptime_ms != self.params.ptime_ms;
        if codec_changed {
            match Codecs::new(&params, &self.settings) {
                Ok(c) => self.codecs = c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot switch codec: keeping the previous one");
                    return;
                }
            }
            self.retire_jitter_stats();
            self.jitter = JitterBuffer::new(Self::jitter_config(&self.settings, &params));
            // A new outgoing stream: new SSRC, and an RTCP session for it at its clock rate.
            let id = RtpIdentity::from_rng(&mut self.rng);
            self.pacer = Pacer::new(Self::pacer_config(&params, id), now);
            let cfg = RtcpConfig {
                ssrc: id.ssrc,
                cname: self.settings.cname.clone(),
                clock_rate: params.codec.clock_rate(),
                interval: self.settings.rtcp_interval,
            };
            let wall = self.wall_at_start + now.saturating_duration_since(self.started);
            self.rtcp = RtcpSession::with_seed(cfg, now, wall, self.rng.random());
        }
        self.params = params;
    }

    /// Keep a retiring jitter buffer's counts: the metrics are cumulative.
    fn retire_jitter_stats(&mut self) {
        let j = self.jitter.stats();
        self.stats.late += j.late;
        self.stats.lost += j.lost;
        self.stats.duplicate += j.duplicate;
        self.stats.shrunk += j.shrunk;
    }

    pub fn handle_rtp(&mut self, data: &[u8], from: SocketAddr, now: Instant) -> RxOutcome {
        if let Some(l) = self.latched {
            if l != from {
                self.stats.foreign_dropped += 1;
                return RxOutcome::Foreign;
            }
        }
        if rtp::looks_like_rtcp(data) {
            // A peer multiplexing RTCP on the RTP port (RFC 5761) without having
            // negotiated it: read its reports (from the latched source only).
            if self.latched == Some(from) {
                let _ = self.rtcp.handle_rtcp(data, now);
                return RxOutcome::Skipped;
            }
            self.stats.invalid_dropped += 1;
            return RxOutcome::Invalid;
        }
        let Ok((h, payload)) = rtp::parse(data) else {
            self.stats.invalid_dropped += 1;
            return RxOutcome::Invalid;
        };
        let is_audio = h.payload_type == self.params.payload_type;
        let is_dtmf = Some(h.payload_type) == self.params.dtmf_payload_type;
        if !is_audio && !is_dtmf {
            self.stats.invalid_dropped += 1;
            return RxOutcome::Invalid;
        }
        let outcome = match self.latched {
            None => {
                self.latched = Some(from);
                tracing::info!(remote = %from, "RTP latched");
                RxOutcome::Latched(from)
            }
            Some(_) => RxOutcome::Accepted,
        };
        self.stats.packets_in += 1;
        self.stats.bytes_in += data.len() as u64;
        self.last_rx = Some(now);
        self.rtcp.on_rtp_received(h.ssrc, h.sequence, h.timestamp, now);
        let skipped = if outcome == RxOutcome::Accepted { RxOutcome::Skipped } else { outcome };
        if is_dtmf {
            if let Some(ev) = self.codecs.dtmf_rx.handle_packet(h.sequence, h.timestamp, h.marker, payload, now) {
                self.dtmf(ev, now);
            }
            return skipped;
        }
        if !self.params.direction.we_receive() {
            return skipped;
        }
        let pkt = MediaPacket {
            sequence: h.sequence,
            timestamp: h.timestamp,
            marker: h.marker,
            ssrc: h.ssrc,
            payload_type: h.payload_type,
            payload: payload.to_vec(),
        };
        let (sequence, timestamp) = (pkt.sequence, pkt.timestamp);
        match self.jitter.insert(pkt, now) {
            InsertOutcome::Late | InsertOutcome::Duplicate | InsertOutcome::Overflow => skipped,
            o => {
                self.arrived(sequence, timestamp, payload, o == InsertOutcome::Resync);
                outcome
            }
        }
    }

    /// A caller audio packet the jitter buffer took, as it arrives: barge-in's echo verdict and
    /// onset gate (which pauses the agent's audio from the next frame on, before the packet plays).
    fn arrived(&mut self, sequence: u16, timestamp: u32, payload: &[u8], resync: bool) {
        let Some(b) = &mut self.barge else { return };
        let in_order = resync || self.arrival_seq.is_none_or(|last| (1..0x8000).contains(&sequence.wrapping_sub(last)));
        if !self.agent_started || !in_order {
            return;
        }
        self.arrival_seq = Some(sequence);
        self.arrival_pcm.clear();
        if self.codecs.arrival.decode(payload, &mut self.arrival_pcm).is_err() {
            return;
        }
        let talking = self.pacer.queued_samples() > 0 || self.pacer.is_paused();
        if let Some(BargeAction::Pause { onset_ms }) =
            b.caller_arrived(timestamp, &self.arrival_pcm, talking, self.caller_samples / 16)
        {
            self.pacer.pause();
            tracing::debug!(onset_ms, "barge-in: a loud caller packet that is not echo arrived; agent audio paused");
        }
    }

    /// A datagram on the RTCP port (no rtcp-mux).
    pub fn handle_rtcp_port(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        // Latch RTCP to the first source whose address matches the RTP peer's host.
        match self.rtcp_peer {
            Some(p) if p != from => return,
            None => {
                let expected = self.latched.or(self.params.remote).map(|a| a.ip());
                if expected.is_some_and(|ip| ip != from.ip()) {
                    return;
                }
            }
            _ => {}
        }
        if self.rtcp.handle_rtcp(data, now).is_ok() {
            self.rtcp_peer.get_or_insert(from);
        }
    }

    /// A SIP INFO body from the peer (DTMF relay).
    pub fn handle_info(&mut self, content_type: &str, body: &[u8], now: Instant) {
        match dtmf::parse_sip_info(content_type, body) {
            Some((digit, duration)) => {
                let ev =
                    DtmfEvent { digit, duration_ms: duration.unwrap_or(0), started: now, source: DtmfSource::SipInfo };
                self.dtmf(ev, now);
            }
            None => tracing::debug!(content_type, len = body.len(), "INFO without DTMF ignored"),
        }
    }

    /// The call is over: the agent's last records (a reply the hang-up cut off, the transfer that
    /// ended the call) become events, so the call record has them.
    pub fn finish_agent(&mut self, now: Instant) {
        if !self.agent_started {
            return;
        }
        for o in self.agent.finish(now) {
            match o {
                AgentOutput::ReplyStarted(n) => self.events.push_back(MediaEvent::ReplyStarted(n)),
                AgentOutput::Reply(r) => self.events.push_back(MediaEvent::Reply(r)),
                AgentOutput::Tool(t) => self.events.push_back(MediaEvent::Tool(t)),
                _ => {}
            }
        }
    }

    /// How the agent's transfer is going (from the SIP side).
    pub fn transfer_progress(&mut self, p: crate::sip::endpoint::TransferProgress, now: Instant) {
        tracing::info!(progress = ?p, "transfer");
        if self.agent_started {
            self.agent.on_transfer(&transfer_for_agent(p), now);
        }
    }

    fn dtmf(&mut self, ev: DtmfEvent, now: Instant) {
        tracing::info!(digit = %ev.digit, duration_ms = ev.duration_ms, source = ?ev.source, "DTMF received");
        self.stats.dtmf_digits += 1;
        if self.agent_started {
            self.agent.on_dtmf(&ev, now);
        }
        let digit = ev.digit;
        self.events.push_back(MediaEvent::Dtmf(ev));
        // After the digit's own event, so the record shows the key, then the turn it ended.
        if self.vad.as_ref().and_then(|(_, _, t)| t.commit_key()) == Some(digit) {
            self.commit_turn(now);
        }
    }

    /// Send digits to the far end as RFC 4733 events (for tools: navigating another IVR).
    pub fn send_dtmf(&mut self, digits: &str) -> Result<(), dtmf::DtmfError> {
        self.codecs.dtmf_tx.queue(digits, 100, 60)
    }

    /// When `handle_timeout` must run next.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.pacer.poll_timeout().min(self.rtcp.poll_timeout());
        if let Some(d) = self.codecs.dtmf_rx.poll_timeout() {
            t = t.min(d);
        }
        t
    }

    fn playout_state(&self) -> PlayoutState {
        PlayoutState { queued_samples: self.pacer.queued_samples(), played_samples: self.pacer.played_speech_samples() }
    }

    /// Everything due at `now`: DTMF timeouts, RTCP, the RTP timeout, and
    /// each due packet time (caller audio to the agent, agent audio out).
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        while let Some(ev) = self.codecs.dtmf_rx.handle_timeout(now) {
            self.dtmf(ev, now);
        }
        if let Some(report) = self.rtcp.handle_timeout(now) {
            if let Some(dst) = self.rtcp_destination() {
                out.push(Outgoing::Rtcp(dst, report));
            }
        }
        self.check_rtp_timeout(now);
        if self.pacer.poll_timeout() > now {
            return;
        }
        self.play_out(now);
        self.agent_turn(now);
        self.send_frames(now, out);
    }

    fn check_rtp_timeout(&mut self, now: Instant) {
        let Some(limit) = self.settings.rtp_timeout else { return };
        if self.timed_out
            || !self.params.direction.we_receive()
            || self.params.remote.is_none() && self.latched.is_none()
        {
            return;
        }
        let since = self.last_rx.unwrap_or(self.started);
        if now.saturating_duration_since(since) >= limit {
            self.timed_out = true;
            let reason = format!("RTP timeout: no media for {} s", limit.as_secs());
            tracing::warn!(%reason, "ending call");
            self.events.push_back(MediaEvent::Hangup(reason));
        }
    }

    /// Caller audio: what the jitter buffer releases, decoded or concealed, to the agent.
    fn play_out(&mut self, now: Instant) {
        let clock = self.params.codec.clock_rate();
        let mut produced = false;
        while let Some(p) = self.jitter.pop(now) {
            produced = true;
            self.play_one(p, clock, now);
        }
        if !produced {
            // Nothing due at this tick, but the next packet is here and due before the next one:
            // play it now, or the tick's silence would be put into the caller's audio and the
            // packet played with the next one (wake-up jitter around a playout time near the
            // tick does that, tick after tick).
            let ptime = std::time::Duration::from_millis(u64::from(self.params.ptime_ms));
            match self.jitter.pop_early(now, ptime) {
                Some(p) => self.play_one(p, clock, now),
                None => {
                    // Nothing to play this packet time (before the first packet, or the caller
                    // stopped sending: silence suppression, hold): the caller's timeline goes on
                    // with silence, so the agent and the VAD hear the pause.
                    self.pcm.clear();
                    self.pcm.resize(AGENT_RATE as usize * self.params.ptime_ms as usize / 1000, 0);
                    self.hand_caller_audio(None, now);
                }
            }
        }
        self.vad_results(now);
    }

    /// One frame the jitter buffer released, decoded or concealed, to the agent.
    fn play_one(&mut self, p: Playout, clock: u32, now: Instant) {
        self.pcm.clear();
        let mut timestamp = None;
        match p {
            Playout::Packet(pkt) => {
                timestamp = Some(pkt.timestamp);
                if let Err(e) = self.codecs.decoder.decode(&pkt.payload, &mut self.pcm) {
                    self.stats.decode_errors += 1;
                    tracing::debug!(error = %e, "undecodable packet: concealed");
                    let n = codec::samples_16k(clock * self.params.ptime_ms / 1000, clock);
                    self.codecs.decoder.conceal(n, None, &mut self.pcm);
                    self.stats.concealed_samples += self.pcm.len() as u64;
                } else {
                    self.stats.decoded_samples += self.pcm.len() as u64;
                }
            }
            Playout::Lost { samples, fec } => {
                let n = codec::samples_16k(samples, clock);
                self.codecs.decoder.conceal(n, fec.as_ref().map(|p| p.payload.as_slice()), &mut self.pcm);
                self.stats.concealed_samples += self.pcm.len() as u64;
            }
            // The jitter buffer grows its delay by one frame: concealment
            // without a loss (no FEC to use).
            Playout::Stretch { samples } => {
                let n = codec::samples_16k(samples, clock);
                self.codecs.decoder.conceal(n, None, &mut self.pcm);
                self.stats.stretched_samples += self.pcm.len() as u64;
            }
        }
        self.hand_caller_audio(timestamp, now);
    }

    /// `self.pcm` (16 kHz caller audio: the packet with RTP `timestamp`, or concealment) to the
    /// agent and the VAD.
    fn hand_caller_audio(&mut self, timestamp: Option<u32>, now: Instant) {
        if let Some(b) = &mut self.barge {
            b.caller_frame(self.caller_samples, self.pcm.len() as u64, timestamp);
        }
        self.caller_samples += self.pcm.len() as u64;
        if self.agent_started {
            let st = self.playout_state();
            self.agent.on_caller_audio(&self.pcm, st, now);
        }
        if let Some((client, _, turns)) = &mut self.vad {
            turns.push_audio(&self.pcm);
            // Never waits: a full worker queue drops this call's chunk (counted).
            if !client.push(&self.pcm) {
                self.stats.vad_dropped += 1;
            }
            if let Some(t) = &mut self.transcriber {
                t.push_audio(&self.pcm);
            }
        }
    }

    /// Probabilities the VAD worker has sent back, through the segmenter.
    fn vad_results(&mut self, now: Instant) {
        let Some((client, seg, turns)) = &mut self.vad else { return };
        let ms = client.chunk_ms() as u64;
        while let Some(r) = client.poll() {
            if let (Some(b), true) = (&mut self.barge, self.agent_started) {
                let talking = self.pacer.queued_samples() > 0 || self.pacer.is_paused();
                match b.vad_chunk(r.probability, r.seq * ms, (r.seq + 1) * ms, talking) {
                    Some(BargeAction::Pause { onset_ms }) => {
                        self.pacer.pause();
                        tracing::debug!(onset_ms, "barge-in: agent audio paused");
                    }
                    Some(BargeAction::Resume) => {
                        self.pacer.resume();
                        tracing::info!("barge-in: not an interruption; the agent resumes");
                        self.events.push_back(MediaEvent::BargeIn(BargeInEvent::Resumed));
                    }
                    Some(BargeAction::Commit { onset_ms }) => {
                        let played = self.pacer.played_speech_samples();
                        let dropped = self.pacer.clear();
                        tracing::info!(
                            onset_ms,
                            played_ms = played / 16,
                            dropped_ms = dropped / 16,
                            "barge-in: the caller interrupted"
                        );
                        self.agent.on_interrupt(played, now);
                        self.events.push_back(MediaEvent::BargeIn(BargeInEvent::Interrupted {
                            onset_ms,
                            played_samples: played,
                            dropped_samples: dropped as u64,
                        }));
                    }
                    None => {}
                }
            }
            if let Some(ev) = seg.push(r.probability, r.seq * ms, (r.seq + 1) * ms) {
                match ev {
                    VadEvent::SpeechStarted { audio_start_ms } => tracing::info!(audio_start_ms, "speech started"),
                    VadEvent::SpeechStopped { audio_end_ms } => tracing::info!(audio_end_ms, "speech stopped"),
                }
                if self.agent_started {
                    self.agent.on_speech(ev, now);
                }
                self.events.push_back(MediaEvent::Speech(ev));
                turns.on_vad(ev);
            }
            let state = match seg.quiet_since() {
                Some(since_ms) => CallerState::Quiet { since_ms },
                None if seg.in_speech() => CallerState::Speaking,
                None => CallerState::Idle,
            };
            turns.on_caller_state(state, (r.seq + 1) * ms);
        }
        if !self.vad_lost && client.lost() {
            self.vad_lost = true;
            let what = "speech detection failed";
            tracing::error!("{what}: the VAD worker gave this call up");
            if !self.agent.on_fault(what, now) {
                self.events.push_back(MediaEvent::Hangup(what.into()));
            }
        }
        turns.tick();
        self.turn_events(now);
        self.transcription(now);
    }

    /// The turn detector's events, to the transcriber and the event queue.
    fn turn_events(&mut self, now: Instant) {
        let Some((_, _, turns)) = &mut self.vad else { return };
        while let Some(ev) = turns.poll_event() {
            if let Some(t) = &mut self.transcriber {
                t.on_turn(&ev, now);
            }
            match ev {
                TurnEvent::Tentative { turn, audio_end_ms, .. } => {
                    tracing::info!(turn, audio_end_ms, "turn may have ended: speculative start");
                    self.speculating = true;
                }
                TurnEvent::Resumed { turn } => {
                    tracing::info!(turn, "the caller went on: speculative work dropped");
                    if self.agent_started {
                        self.agent.on_turn_resumed(turn, now);
                    }
                    if std::mem::take(&mut self.speculating) {
                        self.events.push_back(MediaEvent::Speculation { used: false });
                    }
                }
                TurnEvent::Committed(c) => {
                    tracing::info!(turn = c.turn, audio_end_ms = c.audio_end_ms, reason = c.reason.label(), p_complete = ?c.p_complete, speculated = c.speculated, "turn committed");
                    if std::mem::take(&mut self.speculating) {
                        if !c.speculated && self.agent_started {
                            // Committed elsewhere (a key, the call's end): the speculation is void.
                            self.agent.on_turn_resumed(c.turn, now);
                        }
                        self.events.push_back(MediaEvent::Speculation { used: c.speculated });
                    }
                    self.events.push_back(MediaEvent::TurnCommitted(c));
                }
                _ => {}
            }
        }
    }

    /// The recogniser's answers, to the agent and the event queue.
    fn transcription(&mut self, now: Instant) {
        if let Some(t) = &mut self.transcriber {
            t.tick(now);
            while let Some(ev) = t.poll_event() {
                if let TranscriberEvent::Tentative(tr) = &ev {
                    // For the agent's speculative reply only: not the record's, not yet the turn's.
                    tracing::info!(turn = tr.turn, latency_ms = tr.latency_ms as u64, text = %tr.text, "tentative transcript");
                    if self.agent_started {
                        self.agent.on_tentative_transcript(tr, now);
                    }
                    continue;
                }
                if let (TranscriberEvent::Transcript(tr), true) = (&ev, self.agent_started) {
                    self.agent.on_transcript(tr, now);
                }
                self.events.push_back(MediaEvent::Transcription(ev));
            }
        }
    }

    /// End the caller's turn now (manual turn detection: the commit key, or a command). False when
    /// the caller has not spoken since the last turn.
    pub fn commit_turn(&mut self, now: Instant) -> bool {
        let Some((_, _, turns)) = &mut self.vad else { return false };
        let done = turns.commit_now();
        if !done {
            tracing::info!("commit asked with no speech since the last turn: nothing to commit");
        }
        self.turn_events(now);
        done
    }

    /// The call is ending: submit the turn in progress. Returns true while transcripts are
    /// still owed; the driver calls `poll_transcription` until false (or it gives up).
    pub fn finish_transcription(&mut self, now: Instant) -> bool {
        if let Some((_, _, turns)) = &mut self.vad {
            turns.finish();
        }
        // The detector commits the open turn; the transcriber cuts and submits it.
        self.turn_events(now);
        self.transcription_pending()
    }

    pub fn transcription_pending(&self) -> bool {
        self.transcriber.as_ref().is_some_and(|t| t.pending_finals() > 0)
    }

    /// Collect answers after the call (events come out of `poll_event`).
    pub fn poll_transcription(&mut self, now: Instant) {
        self.transcription(now);
    }

    /// The agent's decisions: audio to queue, interruptions, hang-up.
    fn agent_turn(&mut self, now: Instant) {
        if !self.agent_started {
            return;
        }
        loop {
            let st = self.playout_state();
            match self.agent.poll_output(st, now) {
                Some(AgentOutput::Audio(a)) => self.pacer.push_audio(&a),
                Some(AgentOutput::ClearAudio) => {
                    self.pacer.clear();
                }
                Some(AgentOutput::Hangup(r)) => self.events.push_back(MediaEvent::Hangup(r)),
                Some(AgentOutput::Transfer(t)) => self.events.push_back(MediaEvent::Transfer(t)),
                Some(AgentOutput::ReplyStarted(n)) => self.events.push_back(MediaEvent::ReplyStarted(n)),
                Some(AgentOutput::Reply(r)) => self.events.push_back(MediaEvent::Reply(r)),
                Some(AgentOutput::Tool(t)) => self.events.push_back(MediaEvent::Tool(t)),
                Some(AgentOutput::Amd(d)) => self.events.push_back(MediaEvent::Amd(d)),
                Some(AgentOutput::SendDtmf(d)) => match self.send_dtmf(&d) {
                    Ok(()) => tracing::info!(digits = %d, "agent sends DTMF"),
                    // No telephone-event negotiated, or a bad digit: the keys cannot go out.
                    Err(e) => tracing::warn!(digits = %d, error = %e, "agent's DTMF not sent"),
                },
                None => break,
            }
        }
    }

    /// The pacer's due frames, encoded (or replaced by telephone events) as RTP.
    fn send_frames(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        let dest = self.latched.or(self.params.remote);
        let send = self.params.direction.we_send();
        for frame in self.pacer.handle_timeout(now) {
            if let Some(b) = &mut self.barge {
                b.agent_sent(&frame.pcm);
            }
            let (Some(dest), true) = (dest, send) else { continue };
            let slot_ts = frame.header.timestamp;
            let mut header = frame.header;
            self.payload.clear();
            let event = self
                .params
                .dtmf_payload_type
                .and_then(|pt| Some((pt, self.codecs.dtmf_tx.next_for_slot(header.timestamp)?)));
            match event {
                Some((pt, evs)) => {
                    let Some(ev) = evs.into_iter().next() else { continue };
                    header.payload_type = pt;
                    header.marker = ev.marker;
                    header.timestamp = ev.timestamp;
                    self.payload.extend_from_slice(&ev.payload);
                }
                None => {
                    if let Err(e) = self.codecs.encoder.encode(&frame.pcm, &mut self.payload) {
                        tracing::debug!(error = %e, "encode failed: frame skipped");
                        continue;
                    }
                }
            }
            let mut packet = Vec::with_capacity(12 + self.payload.len());
            rtp::write(&header, &self.payload, &mut packet);
            self.rtcp.on_rtp_sent(slot_ts, self.payload.len(), now);
            self.stats.packets_out += 1;
            self.stats.bytes_out += packet.len() as u64;
            out.push(Outgoing::Rtp(dest, packet));
        }
    }

    /// Where our RTCP goes: the RTCP source we latched, else the RTP peer's port + 1.
    fn rtcp_destination(&self) -> Option<SocketAddr> {
        if let Some(p) = self.rtcp_peer {
            return Some(p);
        }
        let rtp = self.latched.or(self.params.remote)?;
        Some(SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1)))
    }

    /// The RTCP BYE to send when the call ends.
    pub fn goodbye(&mut self, now: Instant) -> Option<Outgoing> {
        let dst = self.rtcp_destination()?;
        let bye = self.rtcp.bye(now);
        Some(Outgoing::Rtcp(dst, bye))
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    pub fn stats(&self) -> MediaStats {
        let j = self.jitter.stats();
        MediaStats {
            late: self.stats.late + j.late,
            lost: self.stats.lost + j.lost,
            duplicate: self.stats.duplicate + j.duplicate,
            shrunk: self.stats.shrunk + j.shrunk,
            rtcp: self.rtcp.stats(),
            ..self.stats
        }
    }
}

/// The SIP dialog's report of a transfer in the agent's terms.
fn transfer_for_agent(p: crate::sip::endpoint::TransferProgress) -> crate::agent::TransferProgress {
    use crate::agent::TransferProgress as A;
    use crate::sip::endpoint::TransferProgress as S;
    match p {
        S::Accepted => A::Accepted,
        S::Trying(code) => A::Trying(code),
        S::Succeeded => A::Succeeded,
        S::Failed { code, reason } => A::Failed { code, reason },
    }
}
