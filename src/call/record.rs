//! The call record: who called, which agent answered, what was said (the
//! caller's turns, transcribed), the speech and DTMF events, the media
//! quality and why the call ended, written as one JSON file per call when
//! the call ends (to a temporary name, fsynced, then renamed, so a reader
//! never sees half a record).
//!
//! While the call lasts, a write-ahead journal (`active/<name>.jsonl`) gets a line per change:
//! its first line (the call's identity) is fsynced when the call starts, the rest are plain
//! appends, which the kernel keeps when the process dies (SIGKILL, a crash), and the final
//! record is fsynced at the end. At start-up, [`recover`] turns every journal left by a
//! stopped appliance into a record ending `interrupted`, so no call is ever lost, and clears
//! half-written temporary files, so none can break start-up.

use super::transcriber::{TranscriberEvent, TurnTranscript};
use crate::wallclock::rfc3339;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub call_id: String,
    pub from: String,
    pub called: String,
    pub agent: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_ms: u64,
    pub end_reason: String,
    /// Final transcripts of the caller's turns, in order.
    pub transcripts: Vec<RecordTranscript>,
    /// The agent's side: each language-model reply as it ended, in order.
    pub replies: Vec<RecordReply>,
    /// Tool calls of the agent's model, in the order they ended (secret arguments redacted).
    pub tools: Vec<RecordTool>,
    /// Speech, turn, DTMF, transcription, response and barge-in events, with their time from the start of the call.
    pub events: Vec<RecordEvent>,
    pub media: Option<RecordMedia>,
    /// Outbound calls with answering-machine detection: who answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amd: Option<RecordAmd>,
}

/// The answering-machine verdict of an outbound call.
#[derive(Debug, Clone, Serialize)]
pub struct RecordAmd {
    pub machine: bool,
    pub reason: String,
    /// From the answer.
    pub after_ms: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordTranscript {
    pub turn: u64,
    pub audio_start_ms: u64,
    pub audio_end_ms: u64,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    pub no_speech_prob: f32,
    pub latency_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordReply {
    /// The reply's number in the call (its `response_started` / `response_done` events carry it).
    pub response: u64,
    /// When the reply ended, from the start of the call.
    pub t_ms: u64,
    pub text: String,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_text_ms: Option<u64>,
    pub total_ms: u64,
    /// Interrupted replies: the audio the caller heard, ms from the reply's first sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_end_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordTool {
    /// When it ended, from the start of the call.
    pub t_ms: u64,
    #[serde(flatten)]
    pub tool: crate::agent::ToolRecord,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordEvent {
    pub t_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    SpeechStarted {
        audio_start_ms: u64,
    },
    SpeechStopped {
        audio_end_ms: u64,
    },
    PartialTranscript {
        turn: u64,
        text: String,
    },
    TranscriptionFailed {
        turn: u64,
        reason: String,
    },
    TurnCommitted {
        turn: u64,
        audio_start_ms: u64,
        audio_end_ms: u64,
        reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        p_complete: Option<f32>,
    },
    Dtmf {
        digit: char,
    },
    /// The caller interrupted the agent (Realtime's response interrupted, with `audio_end_ms`: how much
    /// of the agent's audio had been heard, counted from its first sample in the call).
    ResponseInterrupted {
        onset_ms: u64,
        audio_end_ms: u64,
        dropped_ms: u64,
    },
    /// Speech over the agent that turned out not to be an interruption: the agent resumed.
    BargeInResumed,
    /// The agent began a reply (its request went to the language model).
    ResponseStarted {
        response: u64,
    },
    /// The reply ended: `done`, `failed`, `cancelled` (the caller spoke again before it was written)
    /// or `interrupted` (barge-in; `replies` has what was heard).
    ResponseDone {
        response: u64,
        outcome: &'static str,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordMedia {
    pub packets_in: u64,
    pub packets_out: u64,
    pub lost: u64,
    pub concealed_ms: u64,
    pub jitter_ms: f64,
}

/// Builds one call's record as the call goes.
pub struct Recorder {
    dir: PathBuf,
    record: CallRecord,
    started: Instant,
    started_wall: SystemTime,
    /// The write-ahead journal; None when it could not be opened (the record is still written
    /// at the end; the error was logged).
    journal: Option<std::fs::File>,
}

/// Where the journals of calls in progress live, inside the record directory.
pub const ACTIVE_DIR: &str = "active";

impl Recorder {
    pub fn new(dir: PathBuf, call_id: &str, from: &str, called: &str, agent: &str) -> Recorder {
        let now = SystemTime::now();
        let mut r = Recorder {
            journal: None,
            dir,
            record: CallRecord {
                call_id: call_id.into(),
                from: from.into(),
                called: called.into(),
                agent: agent.into(),
                started_at: rfc3339(now),
                duration_ms: 0,
                end_reason: String::new(),
                transcripts: Vec::new(),
                replies: Vec::new(),
                tools: Vec::new(),
                events: Vec::new(),
                media: None,
                amd: None,
            },
            started: Instant::now(),
            started_wall: now,
        };
        match r.open_journal() {
            Ok(f) => r.journal = Some(f),
            Err(e) => {
                tracing::error!(error = %e, dir = %r.dir.display(), "cannot open the call's journal: its record is written only when the call ends")
            }
        }
        r
    }

    /// The file name shared by the final record (`.json`) and the journal (`.jsonl`).
    fn stem(&self) -> String {
        let ms = self.started_wall.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        format!("{ms}-{}", file_safe(&self.record.call_id))
    }

    /// Create the journal with the call's identity as its first line, durable before the call
    /// goes on (file and directory synced).
    fn open_journal(&self) -> std::io::Result<std::fs::File> {
        let active = self.dir.join(ACTIVE_DIR);
        std::fs::create_dir_all(&active)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(active.join(format!("{}.jsonl", self.stem())))?;
        let line = serde_json::json!({ "start": &self.record });
        writeln!(f, "{line}")?;
        f.sync_data()?;
        std::fs::File::open(&active)?.sync_all()?;
        Ok(f)
    }

    /// One change, appended to the journal: `{"push": field, "v": value}` (the element just added
    /// to the record's list) or `{"set": field, "v": value}`.
    fn journal(&mut self, op: &str, field: &str, v: serde_json::Result<serde_json::Value>) {
        let (Some(f), Ok(v)) = (self.journal.as_mut(), v) else { return };
        let line = serde_json::json!({ op: field, "v": v });
        if let Err(e) = writeln!(f, "{line}") {
            tracing::error!(error = %e, "cannot append to the call's journal: its record is written only when the call ends");
            self.journal = None;
        }
    }

    fn event(&mut self, kind: EventKind) {
        let t_ms = self.started.elapsed().as_millis() as u64;
        self.record.events.push(RecordEvent { t_ms, kind });
        let v = serde_json::to_value(self.record.events.last());
        self.journal("push", "events", v);
    }

    pub fn speech(&mut self, ev: crate::models::vad::VadEvent) {
        use crate::models::vad::VadEvent::*;
        self.event(match ev {
            SpeechStarted { audio_start_ms } => EventKind::SpeechStarted { audio_start_ms },
            SpeechStopped { audio_end_ms } => EventKind::SpeechStopped { audio_end_ms },
        });
    }

    pub fn turn_committed(&mut self, c: &super::turns::TurnCommit) {
        self.event(EventKind::TurnCommitted {
            turn: c.turn,
            audio_start_ms: c.audio_start_ms,
            audio_end_ms: c.audio_end_ms,
            reason: c.reason.label(),
            p_complete: c.p_complete.map(|p| (p * 1000.0).round() / 1000.0),
        });
    }

    pub fn tool(&mut self, t: &crate::agent::ToolRecord) {
        self.record.tools.push(RecordTool { t_ms: self.started.elapsed().as_millis() as u64, tool: t.clone() });
        let v = serde_json::to_value(self.record.tools.last());
        self.journal("push", "tools", v);
    }

    pub fn response_started(&mut self, response: u64) {
        self.event(EventKind::ResponseStarted { response });
    }

    pub fn reply(&mut self, r: &crate::agent::ReplyRecord) {
        self.event(EventKind::ResponseDone { response: r.response, outcome: r.outcome });
        self.record.replies.push(RecordReply {
            response: r.response,
            t_ms: self.started.elapsed().as_millis() as u64,
            text: r.text.clone(),
            outcome: r.outcome,
            error: r.error,
            finish_reason: r.finish_reason.clone(),
            first_text_ms: r.first_text_ms,
            total_ms: r.total_ms,
            audio_end_ms: r.audio_end_ms,
        });
        let v = serde_json::to_value(self.record.replies.last());
        self.journal("push", "replies", v);
    }

    pub fn barge_in(&mut self, b: &super::media::BargeInEvent) {
        use super::media::BargeInEvent::*;
        self.event(match *b {
            Interrupted { onset_ms, played_samples, dropped_samples } => EventKind::ResponseInterrupted {
                onset_ms,
                audio_end_ms: played_samples / 16,
                dropped_ms: dropped_samples / 16,
            },
            Resumed => EventKind::BargeInResumed,
        });
    }

    pub fn amd(&mut self, d: &crate::media::amd::AmdDecision) {
        self.record.amd =
            Some(RecordAmd { machine: d.is_machine(), reason: d.reason().to_string(), after_ms: d.after_ms() });
        let v = serde_json::to_value(&self.record.amd);
        self.journal("set", "amd", v);
    }

    pub fn dtmf(&mut self, digit: char) {
        self.event(EventKind::Dtmf { digit });
    }

    pub fn transcription(&mut self, ev: &TranscriberEvent) {
        match ev {
            TranscriberEvent::Transcript(t) if t.partial => {
                self.event(EventKind::PartialTranscript { turn: t.turn, text: t.text.clone() })
            }
            TranscriberEvent::Transcript(t) => {
                self.record.transcripts.push(final_transcript(t));
                let v = serde_json::to_value(self.record.transcripts.last());
                self.journal("push", "transcripts", v);
            }
            TranscriberEvent::Failed { turn, reason, .. } => {
                self.event(EventKind::TranscriptionFailed { turn: *turn, reason: reason.clone() })
            }
            // Speculative words are never the record's (CallMedia does not pass them on).
            TranscriberEvent::Tentative(_) => {}
        }
    }

    /// Close the record and write it; returns the file written.
    pub fn finish(mut self, end_reason: &str, media: Option<RecordMedia>) -> std::io::Result<PathBuf> {
        self.record.end_reason = end_reason.into();
        self.record.duration_ms = self.started.elapsed().as_millis() as u64;
        self.record.media = media;
        let stem = self.stem();
        let path = write_atomic(
            &self.dir,
            &format!("{stem}.json"),
            &serde_json::to_vec_pretty(&self.record).map_err(std::io::Error::other)?,
        )?;
        // The record is durable: the journal has served. (Should we die right here, recovery
        // finds the record beside it and only removes the journal.)
        self.journal = None;
        let _ = std::fs::remove_file(self.dir.join(ACTIVE_DIR).join(format!("{stem}.jsonl")));
        Ok(path)
    }
}

fn final_transcript(t: &TurnTranscript) -> RecordTranscript {
    RecordTranscript {
        turn: t.turn,
        audio_start_ms: t.audio_start_ms,
        audio_end_ms: t.audio_end_ms,
        text: t.text.clone(),
        language: t.language.clone(),
        no_speech_prob: t.no_speech_prob,
        latency_ms: (t.latency_ms * 10.0).round() / 10.0,
    }
}

/// A Call-ID as part of a file name: anything but [A-Za-z0-9._-] becomes `_`, at most 80 characters.
fn file_safe(s: &str) -> String {
    s.chars().take(80).map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    // The rename is durable once the directory is synced.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_safe("a/b@c d..x"), "a_b_c_d..x");
        assert_eq!(file_safe(&"x".repeat(300)).len(), 80);
    }

    #[test]
    fn record_is_written_whole() {
        let dir = std::env::temp_dir().join(format!("sb-record-{}", std::process::id()));
        let mut r = Recorder::new(dir.clone(), "abc/1", "sip:alice@x", "1000", "default");
        r.speech(crate::models::vad::VadEvent::SpeechStarted { audio_start_ms: 100 });
        r.transcription(&TranscriberEvent::Transcript(TurnTranscript {
            turn: 0,
            audio_start_ms: 100,
            audio_end_ms: 2000,
            partial: false,
            text: "hello there".into(),
            language: None,
            no_speech_prob: 0.01,
            latency_ms: 312.34,
        }));
        let path = r.finish("completed_remote_bye", None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["transcripts"][0]["text"], "hello there");
        assert_eq!(v["transcripts"][0]["latency_ms"], 312.3);
        assert_eq!(v["events"][0]["type"], "speech_started");
        assert_eq!(v["end_reason"], "completed_remote_bye");
        assert!(path.file_name().unwrap().to_str().unwrap().ends_with("-abc_1.json"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
