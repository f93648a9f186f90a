//! What a call records in the appliance's metrics: its media counters, speech, turns, barge-ins,
//! tools and replies, translated here from the call's own events (the metrics know none of them).

use super::media::BargeInEvent;
use super::transcriber::TranscriberEvent;
use super::MediaStats;
use crate::agent::{ReplyRecord, ToolRecord};
use crate::media::dtmf::DtmfSource;
use crate::metrics::Metrics;
use crate::models::vad::VadEvent;

impl Metrics {
    /// Add the growth of a call's media counters since the last report.
    pub fn add_media(&self, now: &MediaStats, before: &MediaStats) {
        self.rtp_packets_in.inc_by(now.packets_in - before.packets_in);
        self.rtp_packets_out.inc_by(now.packets_out - before.packets_out);
        self.rtp_bytes_in.inc_by(now.bytes_in - before.bytes_in);
        self.rtp_bytes_out.inc_by(now.bytes_out - before.bytes_out);
        self.jitter_late.inc_by(now.late.saturating_sub(before.late));
        self.jitter_lost.inc_by(now.lost.saturating_sub(before.lost));
        self.jitter_duplicate.inc_by(now.duplicate.saturating_sub(before.duplicate));
        self.rtp_dropped_foreign.inc_by(now.foreign_dropped - before.foreign_dropped);
        self.rtp_dropped_invalid.inc_by(now.invalid_dropped - before.invalid_dropped);
        self.concealed_seconds.inc_by((now.concealed_samples - before.concealed_samples) as f64 / 16000.0);
        self.jitter_stretched.inc_by((now.stretched_samples - before.stretched_samples) as f64 / 16000.0);
        self.jitter_shrunk.inc_by(now.shrunk.saturating_sub(before.shrunk));
        self.vad_dropped.inc_by(now.vad_dropped - before.vad_dropped);
    }

    /// A finished call's reception quality, from its RTCP statistics.
    pub fn observe_call_quality(&self, s: &MediaStats) {
        if s.rtcp.packets_received > 0 {
            self.call_jitter.observe(s.rtcp.jitter_ms / 1000.0);
            let expected = s.rtcp.packets_received as f64 + s.rtcp.cumulative_lost.max(0) as f64;
            self.call_loss.observe(s.rtcp.cumulative_lost.max(0) as f64 / expected);
        }
        if let Some(rtt) = s.rtcp.rtt {
            self.call_rtt.observe(rtt.as_secs_f64());
        }
    }

    pub fn speech_event(&self, ev: VadEvent) {
        match ev {
            VadEvent::SpeechStarted { .. } => self.speech_started.inc(),
            VadEvent::SpeechStopped { .. } => self.speech_stopped.inc(),
        }
    }

    pub fn transcription(&self, ev: &TranscriberEvent) {
        use TranscriberEvent::*;
        match ev {
            Transcript(t) if t.partial => self.transcripts.with_label_values(&["partial"]).inc(),
            Transcript(t) => {
                self.transcripts.with_label_values(&[if t.text.is_empty() { "empty" } else { "final" }]).inc();
                self.transcript_latency.observe(t.latency_ms / 1000.0);
            }
            Failed { .. } => self.transcripts.with_label_values(&["failed"]).inc(),
            Tentative(_) => {}
        }
    }

    pub fn dtmf_digit(&self, source: DtmfSource) {
        match source {
            DtmfSource::Rfc4733 => self.dtmf_rfc4733.inc(),
            DtmfSource::SipInfo => self.dtmf_sip_info.inc(),
        }
    }

    pub fn barge_in(&self, b: &BargeInEvent) {
        let outcome = match b {
            BargeInEvent::Interrupted { .. } => "interrupted",
            BargeInEvent::Resumed => "resumed",
        };
        self.barge_ins.with_label_values(&[outcome]).inc();
    }

    pub fn tool(&self, t: &ToolRecord) {
        self.tool_calls.with_label_values(&[t.name.as_str(), t.outcome]).inc();
    }

    pub fn reply(&self, r: &ReplyRecord) {
        self.llm_replies.with_label_values(&[r.outcome]).inc();
        if let Some(kind) = r.error {
            self.llm_failures.with_label_values(&[kind]).inc();
        }
        if let Some(ms) = r.first_text_ms {
            self.llm_first_text.observe(ms as f64 / 1000.0);
        }
    }
}
