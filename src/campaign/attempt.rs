//! What the driver reports when an attempt ends, and the transcript shape the store exports.
//!
//! A transcript is a JSON array of turns in order, each
//! `{"role": "caller" | "agent", "text": "…"}` (more fields, like `t_ms`,
//! are kept and ignored by the export). `transcript_from_record` builds it
//! from a call record; the export joins it as `caller: …` / `agent: …` lines.

use super::rules::Outcome;
use serde_json::{json, Value};

/// The end of one attempt, for `Store::finish_attempt`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub outcome: Outcome,
    /// The final SIP status of the INVITE (200, 486, 487 …); `None` when none came (timeout, network).
    pub sip_code: Option<u16>,
    /// From answer to hang-up; 0 if never answered.
    pub duration_ms: u64,
    /// See the module note; `Value::Null` when there was no conversation.
    pub transcript: Value,
    /// The agent's tool calls and results (a JSON array), `Value::Null` if none.
    pub tools: Value,
    /// Free text for the operator: why it failed, the AMD verdict, …
    pub detail: Option<String>,
}

impl AttemptResult {
    /// An attempt that ended without a conversation.
    pub fn without_call(outcome: Outcome, sip_code: Option<u16>, detail: Option<String>) -> AttemptResult {
        AttemptResult { outcome, sip_code, duration_ms: 0, transcript: Value::Null, tools: Value::Null, detail }
    }
}

/// The caller's turns and the agent's replies of a call, merged in time order, from the call
/// record as written (`call::record::CallRecord` as JSON: the dialer reads it back from disk).
pub fn transcript_from_record(record: &Value) -> Value {
    let caller = record["transcripts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| ("caller", t["audio_end_ms"].as_u64().unwrap_or(0), &t["text"]));
    let agent = record["replies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| ("agent", r["t_ms"].as_u64().unwrap_or(0), &r["text"]));
    let mut turns: Vec<(u64, Value)> = caller
        .chain(agent)
        .map(|(role, t_ms, text)| (t_ms, json!({ "role": role, "text": text, "t_ms": t_ms })))
        .collect();
    turns.sort_by_key(|(t, _)| *t); // stable: a caller turn and a reply at the same ms keep caller first
    Value::Array(turns.into_iter().map(|(_, v)| v).collect())
}

/// `caller: hello` / `agent: hi` lines for the export; tolerant of any JSON (a string is taken as it is).
pub fn transcript_text(transcript: &Value) -> String {
    match transcript {
        Value::String(s) => s.clone(),
        Value::Array(turns) => turns
            .iter()
            .filter_map(|t| {
                let text = t.get("text")?.as_str()?;
                let role = t.get("role").or_else(|| t.get("speaker")).and_then(Value::as_str).unwrap_or("?");
                Some(format!("{role}: {text}"))
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_joins_roles_and_ignores_the_unexpected() {
        let t = json!([{ "role": "agent", "text": "Hello Ann" }, { "role": "caller", "text": "hi", "t_ms": 5 }, { "x": 1 }, 7]);
        assert_eq!(transcript_text(&t), "agent: Hello Ann\ncaller: hi");
        assert_eq!(transcript_text(&Value::Null), "");
        assert_eq!(transcript_text(&json!("plain")), "plain");
        assert_eq!(transcript_text(&json!({ "role": "agent" })), "");
    }

    #[test]
    fn a_call_records_turns_and_replies_merge_in_time_order() {
        let rec = json!({
            "transcripts": [{ "text": "hi", "audio_end_ms": 900 }, { "text": "bye", "audio_end_ms": 4000 }],
            "replies": [{ "text": "Hello Ann", "t_ms": 100 }, { "text": "Goodbye", "t_ms": 4000 }],
        });
        let t = transcript_from_record(&rec);
        assert_eq!(transcript_text(&t), "agent: Hello Ann\ncaller: hi\ncaller: bye\nagent: Goodbye");
        assert_eq!(transcript_from_record(&json!({})), json!([]));
    }
}
