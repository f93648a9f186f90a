//! What the driver exports from the SIP core's and the embedded language model's own counters.

use crate::metrics::Metrics;
use crate::models::llm::local::LlmStats;
use crate::sip::endpoint::EndpointStats;
use prometheus::IntCounter;

impl Metrics {
    /// Export what the embedded language model `model` has counted (its counters only grow).
    pub fn llm_stats(&self, model: &str, s: &LlmStats) {
        use std::sync::atomic::Ordering::Relaxed;
        let sync = |c: IntCounter, now: u64| c.inc_by(now.saturating_sub(c.get()));
        for (i, p) in s.passes.iter().enumerate() {
            let rows = if i + 1 == s.passes.len() { format!("{}+", i + 1) } else { (i + 1).to_string() };
            sync(self.llm_decode_passes.with_label_values(&[model, rows.as_str()]), p.load(Relaxed));
        }
        sync(self.llm_tokens.with_label_values(&[model, "prompt"]), s.prompt_tokens.load(Relaxed));
        sync(self.llm_tokens.with_label_values(&[model, "decoded"]), s.tokens.load(Relaxed));
        sync(self.llm_workers_replaced.with_label_values(&[model]), s.replaced.load(Relaxed));
    }

    /// Export what the SIP core counted since `last`.
    pub fn sip_stats(&self, s: &EndpointStats, last: &EndpointStats) {
        self.sip_requests.inc_by(s.requests - last.requests);
        self.sip_malformed.inc_by(s.malformed - last.malformed);
        self.sip_retransmissions.inc_by(s.retransmissions_absorbed - last.retransmissions_absorbed);
        let (g, lg) = (&s.guard, &last.guard);
        for (reason, now, before) in [
            ("acl", g.acl_rejected, lg.acl_rejected),
            ("scanner", g.scanners, lg.scanners),
            ("blocked", g.blocked_dropped, lg.blocked_dropped),
            ("auth_challenge", g.auth_challenges, lg.auth_challenges),
            ("auth_failed", g.auth_failures, lg.auth_failures),
            ("call_limit", s.call_limit, last.call_limit),
            ("models_busy", s.models_busy, last.models_busy),
            ("overload", s.overload, last.overload),
        ] {
            if now > before {
                self.sip_refused.with_label_values(&[reason]).inc_by(now - before);
            }
        }
        for (reason, now, before) in [
            ("rate", g.rate_blocks, lg.rate_blocks),
            ("failed_auth", g.auth_blocks, lg.auth_blocks),
            ("scanner", g.scanner_blocks, lg.scanner_blocks),
        ] {
            if now > before {
                self.sip_blocks.with_label_values(&[reason]).inc_by(now - before);
            }
        }
    }
}
