//! Prometheus metrics. One `Metrics` per appliance, shared by reference;
//! label children are resolved once so the per-packet path only does atomic adds.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    pub active_calls: IntGauge,
    pub rtp_ports_in_use: IntGauge,
    /// 1 for each loaded model, labelled with the execution provider it really runs on.
    pub model_info: prometheus::IntGaugeVec,
    /// How long the oldest job waiting for a model has waited (seconds; 0 when none waits).
    pub model_queue_wait: prometheus::GaugeVec,
    /// The embedded language model's decoding passes, by the replies batched in each (rows).
    pub llm_decode_passes: IntCounterVec,
    /// The embedded language model's tokens: prompt (computed, not cached) and decoded.
    pub llm_tokens: IntCounterVec,
    /// Embedded language-model workers replaced by the watchdog (a step hung).
    pub llm_workers_replaced: IntCounterVec,
    pub calls: IntCounterVec,
    pub rtp_packets_in: IntCounter,
    pub rtp_packets_out: IntCounter,
    pub rtp_bytes_in: IntCounter,
    pub rtp_bytes_out: IntCounter,
    pub jitter_late: IntCounter,
    pub jitter_lost: IntCounter,
    pub jitter_duplicate: IntCounter,
    pub jitter_stretched: prometheus::Counter,
    pub jitter_shrunk: IntCounter,
    pub rtp_dropped_foreign: IntCounter,
    pub rtp_dropped_invalid: IntCounter,
    pub sip_requests: IntCounter,
    pub sip_malformed: IntCounter,
    pub sip_retransmissions: IntCounter,
    pub dtmf_rfc4733: IntCounter,
    pub dtmf_sip_info: IntCounter,
    pub speech_started: IntCounter,
    pub speech_stopped: IntCounter,
    /// Model work a call could not hand over (the worker's queue was full): the call degrades.
    pub vad_dropped: IntCounter,
    pub concealed_seconds: prometheus::Counter,
    /// Caller turns ended, by why (silence, model, timeout, call_ended).
    pub turns: IntCounterVec,
    /// Work started on a caller's pause: used (the turn ended there) or dropped (they went on).
    pub speculations: IntCounterVec,
    /// Caller turns transcribed (final), empty (no speech heard), failed or refused.
    pub transcripts: IntCounterVec,
    /// From the end of a caller turn (audio submitted) to its final transcript.
    pub transcript_latency: Histogram,
    /// Language-model replies by outcome (done, failed, cancelled).
    pub llm_replies: IntCounterVec,
    /// Failed replies by what failed (connect, status, timeout, garbage, truncated, busy, model).
    pub llm_failures: IntCounterVec,
    /// From asking the language model to its first text.
    pub llm_first_text: Histogram,
    /// Caller speech over the agent: interrupted (the agent stopped) or resumed (it was not).
    pub barge_ins: IntCounterVec,
    pub tool_calls: IntCounterVec,
    /// 1 for each account's current registration state (idle, registering, registered, failed, unregistered).
    pub registration_state: prometheus::IntGaugeVec,
    /// Registration outcomes by account (registered, failed).
    pub registrations: IntCounterVec,
    /// Outbound calls placed, by outcome (answered, busy, no_answer, failed, cancelled).
    pub outbound_calls: IntCounterVec,
    /// Per-call figures observed when each call ends (from RTCP).
    pub call_jitter: Histogram,
    pub call_loss: Histogram,
    pub call_rtt: Histogram,
    /// SIP requests refused or dropped by who-may-call and overload checks, by reason (acl,
    /// scanner, blocked, auth_challenge, auth_failed, call_limit, models_busy, overload).
    pub sip_refused: IntCounterVec,
    /// Temporary blocks imposed on sources, by reason (rate, failed_auth, scanner).
    pub sip_blocks: IntCounterVec,
    /// Sources serving a block now.
    pub sip_blocked_sources: IntGauge,
    /// Inbound SIP messages dropped because the queue to the SIP core was full.
    pub sip_queue_dropped: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let active_calls =
            IntGauge::new("switchboard_active_calls", "Calls in progress (ringing or answered)").expect("valid metric");
        let rtp_ports_in_use =
            IntGauge::new("switchboard_rtp_ports_in_use", "RTP ports bound by calls").expect("valid metric");
        let calls =
            IntCounterVec::new(Opts::new("switchboard_calls_total", "Calls ended, by final status"), &["status"])
                .expect("valid metric");
        let rtp_packets = IntCounterVec::new(Opts::new("switchboard_rtp_packets_total", "RTP packets"), &["direction"])
            .expect("valid metric");
        let rtp_bytes =
            IntCounterVec::new(Opts::new("switchboard_rtp_bytes_total", "RTP bytes (UDP payload)"), &["direction"])
                .expect("valid metric");
        let jitter = IntCounterVec::new(
            Opts::new("switchboard_jitter_buffer_packets_total", "Jitter-buffer packet events"),
            &["event"],
        )
        .expect("valid metric");
        let dropped = IntCounterVec::new(
            Opts::new("switchboard_rtp_dropped_total", "Received datagrams not played"),
            &["reason"],
        )
        .expect("valid metric");
        let sip = IntCounterVec::new(Opts::new("switchboard_sip_messages_total", "SIP messages received"), &["kind"])
            .expect("valid metric");
        let speech = IntCounterVec::new(Opts::new("switchboard_speech_events_total", "server_vad events"), &["event"])
            .expect("valid metric");
        let dropped_work = IntCounterVec::new(
            Opts::new("switchboard_model_work_dropped_total", "Model work dropped because a worker queue was full"),
            &["model"],
        )
        .expect("valid metric");
        registry.register(Box::new(speech.clone())).expect("unique metric");
        registry.register(Box::new(dropped_work.clone())).expect("unique metric");
        let dtmf = IntCounterVec::new(Opts::new("switchboard_dtmf_digits_total", "DTMF digits received"), &["source"])
            .expect("valid metric");
        let jitter_stretched = prometheus::Counter::new(
            "switchboard_jitter_buffer_stretched_seconds_total",
            "Audio synthesised while jitter buffers grew their delay",
        )
        .expect("valid metric");
        registry.register(Box::new(jitter_stretched.clone())).expect("unique metric");
        let concealed_seconds = prometheus::Counter::new(
            "switchboard_concealed_audio_seconds_total",
            "Caller audio synthesised by loss concealment",
        )
        .expect("valid metric");
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric")
        };
        let call_jitter = hist(
            "switchboard_call_jitter_seconds",
            "Interarrival jitter of the caller's RTP at call end (RFC 3550)",
            vec![0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16],
        );
        let call_loss = hist(
            "switchboard_call_loss_ratio",
            "Fraction of the caller's RTP lost over the call",
            vec![0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2],
        );
        let call_rtt = hist(
            "switchboard_call_rtt_seconds",
            "Round-trip time from RTCP at call end",
            vec![0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8],
        );
        let turns = IntCounterVec::new(
            Opts::new("switchboard_turns_total", "Caller turns ended, by what ended them"),
            &["reason"],
        )
        .expect("valid metric");
        registry.register(Box::new(turns.clone())).expect("unique metric");
        let speculations = IntCounterVec::new(
            Opts::new("switchboard_turn_speculations_total", "Recognition and replies started on a caller's pause, by outcome: used (the turn ended there) or dropped (the caller went on)"),
            &["outcome"],
        )
        .expect("valid metric");
        registry.register(Box::new(speculations.clone())).expect("unique metric");
        let transcripts = IntCounterVec::new(
            Opts::new("switchboard_transcripts_total", "Caller turns given to speech recognition, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        registry.register(Box::new(transcripts.clone())).expect("unique metric");
        let transcript_latency = hist(
            "switchboard_transcript_latency_seconds",
            "End of a caller turn to its final transcript (queueing included)",
            vec![0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0],
        );
        let llm_replies = IntCounterVec::new(
            Opts::new("switchboard_llm_replies_total", "Language-model replies, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        registry.register(Box::new(llm_replies.clone())).expect("unique metric");
        let llm_failures = IntCounterVec::new(
            Opts::new(
                "switchboard_llm_failures_total",
                "Language-model replies that failed (the caller heard the apology), by cause",
            ),
            &["kind"],
        )
        .expect("valid metric");
        registry.register(Box::new(llm_failures.clone())).expect("unique metric");
        let llm_first_text = hist(
            "switchboard_llm_first_text_seconds",
            "Asking the language model to its first text",
            vec![0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0],
        );
        let barge_ins = IntCounterVec::new(
            Opts::new("switchboard_barge_ins_total", "Caller speech over the agent, by outcome (interrupted, resumed)"),
            &["outcome"],
        )
        .expect("valid metric");
        registry.register(Box::new(barge_ins.clone())).expect("unique metric");
        let tool_calls = IntCounterVec::new(
            Opts::new(
                "switchboard_tool_calls_total",
                "Tool calls of the agents' models, by tool and outcome (ok, error, timeout, invalid_arguments)",
            ),
            &["tool", "outcome"],
        )
        .expect("valid metric");
        registry.register(Box::new(tool_calls.clone())).expect("unique metric");
        let registration_state = prometheus::IntGaugeVec::new(
            Opts::new("switchboard_registration_state", "1 for each account's current registration state"),
            &["account", "state"],
        )
        .expect("valid metric");
        registry.register(Box::new(registration_state.clone())).expect("unique metric");
        let registrations = IntCounterVec::new(
            Opts::new(
                "switchboard_registrations_total",
                "Registration attempts ended, by account and result (registered, failed)",
            ),
            &["account", "result"],
        )
        .expect("valid metric");
        registry.register(Box::new(registrations.clone())).expect("unique metric");
        let outbound_calls = IntCounterVec::new(
            Opts::new(
                "switchboard_outbound_calls_total",
                "Outbound calls placed, by outcome (answered, busy, no_answer, failed, cancelled)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        registry.register(Box::new(outbound_calls.clone())).expect("unique metric");
        for h in [&call_jitter, &call_loss, &call_rtt, &transcript_latency, &llm_first_text] {
            registry.register(Box::new(h.clone())).expect("unique metric");
        }
        registry.register(Box::new(concealed_seconds.clone())).expect("unique metric");
        for c in [&calls, &rtp_packets, &rtp_bytes, &jitter, &dropped, &sip, &dtmf] {
            registry.register(Box::new(c.clone())).expect("unique metric");
        }
        registry.register(Box::new(active_calls.clone())).expect("unique metric");
        registry.register(Box::new(rtp_ports_in_use.clone())).expect("unique metric");
        let sip_refused = IntCounterVec::new(Opts::new("switchboard_sip_refused_total", "SIP requests refused or dropped: acl (403), scanner (dropped), blocked (dropped), auth_challenge (401), auth_failed, call_limit (503), models_busy (503: calls.max_queue_wait_ms), overload (stateless 503)"), &["reason"]).expect("valid metric");
        registry.register(Box::new(sip_refused.clone())).expect("unique metric");
        let sip_blocks = IntCounterVec::new(
            Opts::new(
                "switchboard_sip_blocks_total",
                "Temporary blocks of a source address, by reason (rate, failed_auth, scanner)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        registry.register(Box::new(sip_blocks.clone())).expect("unique metric");
        let sip_blocked_sources =
            IntGauge::new("switchboard_sip_blocked_sources", "Source addresses serving a temporary block now")
                .expect("valid metric");
        registry.register(Box::new(sip_blocked_sources.clone())).expect("unique metric");
        let sip_queue_dropped = IntCounter::new(
            "switchboard_sip_queue_dropped_total",
            "Inbound SIP messages dropped because the queue to the SIP core was full",
        )
        .expect("valid metric");
        registry.register(Box::new(sip_queue_dropped.clone())).expect("unique metric");
        let model_info = prometheus::IntGaugeVec::new(
            Opts::new("switchboard_model_info", "Loaded models and the execution provider each runs on"),
            &["model", "provider"],
        )
        .expect("valid metric");
        registry.register(Box::new(model_info.clone())).expect("unique metric");
        let model_queue_wait = prometheus::GaugeVec::new(Opts::new("switchboard_model_queue_wait_seconds", "How long the oldest job now waiting for a model has waited (0: none waits); calls.max_queue_wait_ms admits new calls on it"), &["model"]).expect("valid metric");
        registry.register(Box::new(model_queue_wait.clone())).expect("unique metric");
        let llm_decode_passes = IntCounterVec::new(Opts::new("switchboard_llm_decode_passes_total", "The embedded language model's decoding passes, by the replies decoded together in each (rows; the last label: that many or more)"), &["model", "rows"]).expect("valid metric");
        registry.register(Box::new(llm_decode_passes.clone())).expect("unique metric");
        let llm_tokens = IntCounterVec::new(
            Opts::new(
                "switchboard_llm_tokens_total",
                "The embedded language model's tokens computed: prompt (not found in a cache) and decoded",
            ),
            &["model", "kind"],
        )
        .expect("valid metric");
        registry.register(Box::new(llm_tokens.clone())).expect("unique metric");
        let llm_workers_replaced = IntCounterVec::new(Opts::new("switchboard_llm_workers_replaced_total", "The embedded language model's workers replaced by the watchdog: a step did not return (its replies failed, the callers heard the apology)"), &["model"]).expect("valid metric");
        registry.register(Box::new(llm_workers_replaced.clone())).expect("unique metric");
        Metrics {
            llm_decode_passes,
            llm_tokens,
            llm_workers_replaced,
            active_calls,
            rtp_ports_in_use,
            model_info,
            model_queue_wait,
            rtp_packets_in: rtp_packets.with_label_values(&["in"]),
            rtp_packets_out: rtp_packets.with_label_values(&["out"]),
            rtp_bytes_in: rtp_bytes.with_label_values(&["in"]),
            rtp_bytes_out: rtp_bytes.with_label_values(&["out"]),
            jitter_late: jitter.with_label_values(&["late"]),
            jitter_lost: jitter.with_label_values(&["lost"]),
            jitter_duplicate: jitter.with_label_values(&["duplicate"]),
            jitter_shrunk: jitter.with_label_values(&["shrunk"]),
            jitter_stretched,
            rtp_dropped_foreign: dropped.with_label_values(&["foreign_source"]),
            rtp_dropped_invalid: dropped.with_label_values(&["invalid"]),
            sip_requests: sip.with_label_values(&["request"]),
            sip_malformed: sip.with_label_values(&["malformed"]),
            sip_retransmissions: sip.with_label_values(&["retransmission"]),
            dtmf_rfc4733: dtmf.with_label_values(&["rfc4733"]),
            dtmf_sip_info: dtmf.with_label_values(&["sip_info"]),
            speech_started: speech.with_label_values(&["speech_started"]),
            speech_stopped: speech.with_label_values(&["speech_stopped"]),
            vad_dropped: dropped_work.with_label_values(&["vad"]),
            concealed_seconds,
            turns,
            speculations,
            transcripts,
            transcript_latency,
            llm_replies,
            llm_failures,
            llm_first_text,
            barge_ins,
            tool_calls,
            registration_state,
            registrations,
            outbound_calls,
            call_jitter,
            call_loss,
            call_rtt,
            sip_refused,
            sip_blocks,
            sip_blocked_sources,
            sip_queue_dropped,
            calls,
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // The text encoder only fails on invalid metric families, which registration rules out.
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
