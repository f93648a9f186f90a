//! The tokio task that drives one call's `CallMedia`: its RTP and RTCP
//! sockets, its packet clock (the pacer's deadlines) and its maximum duration.

use super::media::{CallMedia, MediaEvent, MediaParams, MediaStats, Outgoing};
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, Instrument};

#[derive(Debug)]
pub enum CallCtrl {
    /// ACK arrived: start the agent.
    Confirmed,
    /// The session was renegotiated.
    Update(MediaParams),
    /// An in-dialog INFO body (DTMF relay).
    Info { content_type: String, body: Vec<u8> },
    /// How the transfer the agent asked for is going.
    Transfer(crate::sip::endpoint::TransferProgress),
    /// The call ended (the calls metric's status label): stop at once.
    Stop { reason: String },
}

/// What a call task asks of the SIP side.
#[derive(Debug)]
pub struct SipRequest {
    pub key: crate::sip::endpoint::CallKey,
    pub action: SipAction,
}

#[derive(Debug)]
pub enum SipAction {
    /// End the call (BYE), for this reason.
    Hangup(String),
    /// Transfer the caller to this SIP URI (REFER).
    Transfer(String),
}

pub struct CallTaskParams {
    pub key: crate::sip::endpoint::CallKey,
    pub call_id: String,
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub media: CallMedia,
    pub metrics: Arc<Metrics>,
    pub sip: mpsc::UnboundedSender<SipRequest>,
    pub max_duration: Option<Duration>,
    /// Builds the call record, written when the call ends (`calls.record_dir`).
    pub record: Option<super::record::Recorder>,
    /// Runs when the task ends (returns the RTP port to the pool), with the call record's path
    /// when one was written (an outbound call's dialer reads the transcript from it).
    pub on_exit: Box<dyn FnOnce(Option<std::path::PathBuf>) + Send>,
}

pub fn spawn(p: CallTaskParams) -> (mpsc::UnboundedSender<CallCtrl>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let span = tracing::info_span!("call", call_id = %p.call_id);
    let task = tokio::spawn(run(p, rx).instrument(span));
    (tx, task)
}

async fn send(rtp: &UdpSocket, rtcp: &UdpSocket, o: Outgoing) {
    let (sock, dst, data) = match &o {
        Outgoing::Rtp(d, b) => (rtp, d, b),
        Outgoing::Rtcp(d, b) => (rtcp, d, b),
    };
    if let Err(e) = sock.send_to(data, *dst).await {
        debug!(error = %e, %dst, "media send error");
    }
}

async fn run(p: CallTaskParams, mut ctrl: mpsc::UnboundedReceiver<CallCtrl>) {
    let CallTaskParams { key, rtp, rtcp, mut media, metrics, sip, max_duration, mut record, on_exit, .. } = p;
    let mut end_reason = "task_stopped".to_string();
    let mut buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 2048];
    let mut out = Vec::new();
    let mut reported = MediaStats::default();
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut end_at = max_duration.map(|d| Instant::now() + d).unwrap_or(far);
    // One timer for the media clock, moved only when the deadline changes
    // (re-creating it on every received packet costs timer-wheel work).
    let mut deadline = media.poll_timeout();
    let tick = tokio::time::sleep_until(Instant::from_std(deadline));
    tokio::pin!(tick);
    loop {
        if media.poll_timeout() != deadline {
            deadline = media.poll_timeout();
            tick.as_mut().reset(Instant::from_std(deadline));
        }
        tokio::select! {
            biased;
            c = ctrl.recv() => match c {
                Some(CallCtrl::Confirmed) => media.start_agent(std::time::Instant::now()),
                Some(CallCtrl::Update(params)) => media.update(params, std::time::Instant::now()),
                Some(CallCtrl::Info { content_type, body }) => media.handle_info(&content_type, &body, std::time::Instant::now()),
                Some(CallCtrl::Transfer(p)) => media.transfer_progress(p, std::time::Instant::now()),
                Some(CallCtrl::Stop { reason }) => {
                    end_reason = reason;
                    break;
                }
                None => break,
            },
            r = rtp.recv_from(&mut buf) => match r {
                Ok((n, from)) => { media.handle_rtp(&buf[..n], from, std::time::Instant::now()); }
                // ICMP port unreachable from a previous send surfaces here on Linux: not fatal.
                Err(e) => debug!(error = %e, "RTP receive error"),
            },
            r = rtcp.recv_from(&mut rtcp_buf) => match r {
                Ok((n, from)) => media.handle_rtcp_port(&rtcp_buf[..n], from, std::time::Instant::now()),
                Err(e) => debug!(error = %e, "RTCP receive error"),
            },
            _ = &mut tick => {
                media.handle_timeout(std::time::Instant::now(), &mut out);
                for o in out.drain(..) {
                    send(&rtp, &rtcp, o).await;
                }
                let s = media.stats();
                metrics.add_media(&s, &reported);
                reported = s;
            }
            _ = tokio::time::sleep_until(end_at) => {
                end_at = far;
                let _ = sip.send(SipRequest { key, action: SipAction::Hangup("maximum call duration reached".into()) });
            }
        }
        handle_events(&mut media, &metrics, &sip, key, &mut record);
    }
    media.finish_agent(std::time::Instant::now());
    handle_events(&mut media, &metrics, &sip, key, &mut record);
    // Transcripts of the last turn (the caller often hangs up right after speaking) still
    // belong in the record: wait for them, within bounds.
    if media.finish_transcription(std::time::Instant::now()) {
        let until = Instant::now() + TRANSCRIPT_GRACE;
        while media.transcription_pending() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
            media.poll_transcription(std::time::Instant::now());
            handle_events(&mut media, &metrics, &sip, key, &mut record);
        }
    }
    if let Some(bye) = media.goodbye(std::time::Instant::now()) {
        send(&rtp, &rtcp, bye).await;
    }
    let s = media.stats();
    metrics.add_media(&s, &reported);
    metrics.observe_call_quality(&s);
    let r = &s.rtcp;
    tracing::info!(
        packets_in = s.packets_in, packets_out = s.packets_out, lost = s.lost, late = s.late,
        duplicate = s.duplicate, foreign = s.foreign_dropped, concealed_ms = s.concealed_samples / 16,
        stretched_ms = s.stretched_samples / 16, shrunk = s.shrunk,
        dtmf_digits = s.dtmf_digits, jitter_ms = format!("{:.1}", r.jitter_ms), loss_pct = format!("{:.2}", r.fraction_lost * 100.0),
        remote_loss_pct = ?r.remote_fraction_lost.map(|f| format!("{:.2}", f * 100.0)),
        rtt_ms = ?r.rtt.map(|d| d.as_millis()), "media stopped"
    );
    let mut record_path = None;
    if let Some(rec) = record {
        let media = super::record::RecordMedia {
            packets_in: s.packets_in,
            packets_out: s.packets_out,
            lost: s.lost,
            concealed_ms: s.concealed_samples / 16,
            jitter_ms: (r.jitter_ms * 10.0).round() / 10.0,
        };
        // Writing (and fsyncing) blocks: off the runtime's worker threads.
        match tokio::task::spawn_blocking(move || rec.finish(&end_reason, Some(media))).await {
            Ok(Ok(path)) => {
                debug!(path = %path.display(), "call record written");
                record_path = Some(path);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write the call record"),
            Err(e) => tracing::error!(error = %e, "call record writer failed"),
        }
    }
    on_exit(record_path);
}

/// How long a call that has ended waits for the transcripts of its last turn. On a loaded machine
/// the recognisers' queue holds many calls' turns: 20 calls hanging up within 2 s on 2 cores had
/// their last transcripts 10.5 s after submitting them (tests/lifecycle.rs). A stop waits for
/// them too, within `calls.shutdown_grace_s`.
const TRANSCRIPT_GRACE: Duration = Duration::from_secs(30);

fn handle_events(
    media: &mut CallMedia,
    metrics: &Metrics,
    sip: &mpsc::UnboundedSender<SipRequest>,
    key: crate::sip::endpoint::CallKey,
    record: &mut Option<super::record::Recorder>,
) {
    while let Some(ev) = media.poll_event() {
        match ev {
            MediaEvent::Dtmf(d) => {
                metrics.dtmf_digit(d.source);
                if let Some(r) = record {
                    r.dtmf(d.digit);
                }
            }
            MediaEvent::Amd(d) => {
                if let Some(r) = record {
                    r.amd(&d);
                }
            }
            MediaEvent::Speech(ev) => {
                metrics.speech_event(ev);
                if let Some(r) = record {
                    r.speech(ev);
                }
            }
            MediaEvent::Transcription(ev) => {
                transcription_log(&ev);
                metrics.transcription(&ev);
                if let Some(r) = record {
                    r.transcription(&ev);
                }
            }
            MediaEvent::Speculation { used } => {
                metrics.speculations.with_label_values(&[if used { "used" } else { "dropped" }]).inc()
            }
            MediaEvent::TurnCommitted(c) => {
                metrics.turns.with_label_values(&[c.reason.label()]).inc();
                if let Some(r) = record {
                    r.turn_committed(&c);
                }
            }
            MediaEvent::Hangup(reason) => {
                let _ = sip.send(SipRequest { key, action: SipAction::Hangup(reason) });
            }
            MediaEvent::Transfer(target) => {
                tracing::info!(%target, "agent transfers the call");
                let _ = sip.send(SipRequest { key, action: SipAction::Transfer(target) });
            }
            MediaEvent::BargeIn(b) => {
                metrics.barge_in(&b);
                if let Some(rec) = record {
                    rec.barge_in(&b);
                }
            }
            MediaEvent::Tool(t) => {
                tracing::info!(response = t.response, tool = %t.name, arguments = %t.arguments, outcome = t.outcome, duration_ms = t.duration_ms, "agent tool call");
                metrics.tool(&t);
                if let Some(rec) = record {
                    rec.tool(&t);
                }
            }
            MediaEvent::ReplyStarted(n) => {
                debug!(response = n, "reply started");
                if let Some(rec) = record {
                    rec.response_started(n);
                }
            }
            MediaEvent::Reply(r) => {
                tracing::info!(response = r.response, outcome = r.outcome, error = ?r.error, finish_reason = ?r.finish_reason, first_text_ms = ?r.first_text_ms, total_ms = r.total_ms, text = %r.text, "agent reply");
                metrics.reply(&r);
                if let Some(rec) = record {
                    rec.reply(&r);
                }
            }
        }
    }
}

fn transcription_log(ev: &super::transcriber::TranscriberEvent) {
    use super::transcriber::TranscriberEvent::*;
    match ev {
        Transcript(t) if t.partial => debug!(turn = t.turn, text = %t.text, "partial transcript"),
        Transcript(t) => tracing::info!(
            turn = t.turn, audio_start_ms = t.audio_start_ms, audio_end_ms = t.audio_end_ms,
            latency_ms = format!("{:.0}", t.latency_ms), no_speech_prob = format!("{:.2}", t.no_speech_prob),
            text = %t.text, "transcript"
        ),
        Failed { turn, reason, .. } => tracing::warn!(turn, %reason, "turn not transcribed"),
        Tentative(_) => {} // logged by CallMedia, which keeps it from the record
    }
}
