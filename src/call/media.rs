//! The sans-IO media core of one call.
//!
//! RTP in: latch to the first valid source (symmetric RTP, for callers behind
//! NAT), ignore everything else, feed the jitter buffer. Every packet time:
//! play out what the jitter buffer releases, decode it, give it to the agent,
//! queue the agent's audio in the pacer, and emit the pacer's frames as RTP.

use crate::agent::{Agent, AgentOutput, PlayoutState};
use crate::media::jitter::{InsertOutcome, JitterBuffer, JitterConfig, MediaPacket, Playout};
use crate::media::pacer::{Pacer, PacerConfig};
use crate::media::{g711, rtp};
use crate::sip::sdp::{Codec, Direction, Negotiated};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the SDP negotiation decided for this call's audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaParams {
    pub codec: Codec,
    pub payload_type: u8,
    pub dtmf_payload_type: Option<u8>,
    pub ptime_ms: u32,
    pub direction: Direction,
    pub remote: Option<SocketAddr>,
}

impl From<&Negotiated> for MediaParams {
    fn from(n: &Negotiated) -> MediaParams {
        MediaParams {
            codec: n.codec,
            payload_type: n.payload_type,
            dtmf_payload_type: n.dtmf_payload_type,
            ptime_ms: n.ptime_ms,
            direction: n.direction,
            remote: n.remote_rtp,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// RTP from an address other than the latched one.
    pub foreign_dropped: u64,
    /// Not RTP, RTCP on the RTP port, or a payload type we did not negotiate.
    pub invalid_dropped: u64,
    pub late: u64,
    pub lost: u64,
    pub duplicate: u64,
}

/// What became of one received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    Accepted,
    /// First valid packet: media now flows to/from this address.
    Latched(SocketAddr),
    Foreign,
    Invalid,
    /// Valid but not for the jitter buffer (telephone-event, late, duplicate, receive disabled).
    Skipped,
}

pub struct CallMedia {
    params: MediaParams,
    latched: Option<SocketAddr>,
    jitter: JitterBuffer,
    jitter_cfg: JitterConfig,
    pacer: Pacer,
    agent: Box<dyn Agent>,
    agent_started: bool,
    hangup: Option<String>,
    stats: MediaStats,
    last_rx: Option<Instant>,
    pcm: Vec<i16>,
    payload: Vec<u8>,
    packet: Vec<u8>,
}

/// Random RTP identity (SSRC, first sequence number and timestamp, RFC 3550 §5.1).
#[derive(Debug, Clone, Copy)]
pub struct RtpIdentity {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
}

impl RtpIdentity {
    pub fn random() -> RtpIdentity {
        RtpIdentity { ssrc: rand::random(), sequence: rand::random(), timestamp: rand::random() }
    }
}

impl CallMedia {
    pub fn new(params: MediaParams, jitter: JitterConfig, agent: Box<dyn Agent>, id: RtpIdentity, now: Instant) -> CallMedia {
        let pacer = Pacer::new(Self::pacer_config(&params, id), now);
        CallMedia {
            latched: None,
            jitter: JitterBuffer::new(jitter.clone()),
            jitter_cfg: jitter,
            pacer,
            agent,
            agent_started: false,
            hangup: None,
            stats: MediaStats::default(),
            last_rx: None,
            pcm: Vec::with_capacity(480),
            payload: Vec::with_capacity(480),
            packet: Vec::with_capacity(512),
            params,
        }
    }

    fn pacer_config(p: &MediaParams, id: RtpIdentity) -> PacerConfig {
        PacerConfig {
            clock_rate: p.codec.clock_rate(),
            pcm_rate: p.codec.clock_rate(),
            ptime: Duration::from_millis(p.ptime_ms as u64),
            payload_type: p.payload_type,
            ssrc: id.ssrc,
            initial_sequence: id.sequence,
            initial_timestamp: id.timestamp,
            max_catch_up: 3,
        }
    }

    pub fn params(&self) -> &MediaParams {
        &self.params
    }

    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    pub fn last_rx(&self) -> Option<Instant> {
        self.last_rx
    }

    /// The call is confirmed: the agent begins (its greeting starts playing).
    pub fn start_agent(&mut self, now: Instant) {
        if !self.agent_started {
            self.agent_started = true;
            self.agent.start(self.params.codec.clock_rate(), now);
        }
    }

    /// A re-INVITE/UPDATE changed the session. A new remote address re-opens
    /// latching; a codec or packet-time change restarts the jitter buffer.
    /// The outgoing stream keeps its SSRC, sequence and timestamp continuity
    /// unless the clock rate or packet time changes.
    pub fn update(&mut self, params: MediaParams, now: Instant) {
        if params.remote != self.params.remote {
            self.latched = None;
        }
        if params.codec != self.params.codec || params.payload_type != self.params.payload_type || params.ptime_ms != self.params.ptime_ms {
            // Keep the retiring buffer's counts: the metrics are cumulative.
            let j = self.jitter.stats();
            self.stats.late += j.late;
            self.stats.lost += j.lost;
            self.stats.duplicate += j.duplicate;
            self.jitter = JitterBuffer::new(self.jitter_cfg.clone());
            self.pacer = Pacer::new(Self::pacer_config(&params, RtpIdentity::random()), now);
        }
        self.params = params;
    }

    pub fn handle_rtp(&mut self, data: &[u8], from: SocketAddr, now: Instant) -> RxOutcome {
        if let Some(l) = self.latched {
            if l != from {
                self.stats.foreign_dropped += 1;
                return RxOutcome::Foreign;
            }
        }
        if rtp::looks_like_rtcp(data) {
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
        if !is_audio || !self.params.direction.we_receive() {
            // telephone-event is decoded in the media step (RFC 4733).
            return if outcome == RxOutcome::Accepted { RxOutcome::Skipped } else { outcome };
        }
        let pkt = MediaPacket {
            sequence: h.sequence,
            timestamp: h.timestamp,
            marker: h.marker,
            ssrc: h.ssrc,
            payload_type: h.payload_type,
            payload: payload.to_vec(),
        };
        match self.jitter.insert(pkt, now) {
            InsertOutcome::Late | InsertOutcome::Duplicate | InsertOutcome::Overflow if outcome == RxOutcome::Accepted => RxOutcome::Skipped,
            _ => outcome,
        }
    }

    /// When `handle_timeout` must run next: the pacer's next frame.
    pub fn poll_timeout(&self) -> Instant {
        self.pacer.poll_timeout()
    }

    fn playout_state(&self) -> PlayoutState {
        PlayoutState { queued_samples: self.pacer.queued_samples(), played_samples: self.pacer.played_speech_samples() }
    }

    /// One packet time: caller audio to the agent, agent audio to the wire.
    /// Packets to send are appended to `out` as (destination, bytes).
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        while let Some(p) = self.jitter.pop(now) {
            self.pcm.clear();
            match p {
                Playout::Packet(pkt) => match self.params.codec {
                    Codec::Pcmu => g711::decode_ulaw(&pkt.payload, &mut self.pcm),
                    Codec::Pcma => g711::decode_alaw(&pkt.payload, &mut self.pcm),
                    Codec::Opus => {} // TEMP: wired to media::codec in the step-2 integration
                },
                // Concealment is silence for now; G.711 Appendix I PLC arrives with the media step.
                Playout::Lost { samples } => self.pcm.resize(samples.min(8000) as usize, 0),
            }
            if self.agent_started {
                let st = self.playout_state();
                self.agent.on_caller_audio(&self.pcm, st, now);
            }
        }
        if self.agent_started {
            loop {
                let st = self.playout_state();
                match self.agent.poll_output(st, now) {
                    Some(AgentOutput::Audio(a)) => self.pacer.push_audio(&a),
                    Some(AgentOutput::ClearAudio) => {
                        self.pacer.clear();
                    }
                    Some(AgentOutput::Hangup(r)) => {
                        self.hangup.get_or_insert(r);
                    }
                    None => break,
                }
            }
        }
        let dest = self.latched.or(self.params.remote);
        let send = self.params.direction.we_send();
        for frame in self.pacer.handle_timeout(now) {
            let (Some(dest), true) = (dest, send) else { continue };
            self.payload.clear();
            match self.params.codec {
                Codec::Pcmu => g711::encode_ulaw(&frame.pcm, &mut self.payload),
                Codec::Pcma => g711::encode_alaw(&frame.pcm, &mut self.payload),
                Codec::Opus => continue, // TEMP: wired to media::codec in the step-2 integration
            }
            self.packet.clear();
            rtp::write(&frame.header, &self.payload, &mut self.packet);
            self.stats.packets_out += 1;
            self.stats.bytes_out += self.packet.len() as u64;
            out.push((dest, self.packet.clone()));
        }
    }

    /// A SIP INFO body from the peer (DTMF relay): decoded in the media step.
    pub fn handle_info(&mut self, content_type: &str, body: &[u8], _now: Instant) {
        tracing::debug!(content_type, len = body.len(), "INFO received");
    }

    /// The agent asked to end the call.
    pub fn take_hangup(&mut self) -> Option<String> {
        self.hangup.take()
    }

    pub fn stats(&self) -> MediaStats {
        let j = self.jitter.stats();
        MediaStats { late: self.stats.late + j.late, lost: self.stats.lost + j.lost, duplicate: self.stats.duplicate + j.duplicate, ..self.stats }
    }
}

