//! The tokio task that drives one call's `CallMedia`: its RTP socket, its
//! packet clock (the pacer's deadlines) and its maximum duration.

use super::media::{CallMedia, MediaParams, MediaStats};
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
    /// The call ended: stop at once.
    Stop,
}

/// Why a call task asks the SIP side to hang up.
#[derive(Debug)]
pub struct HangupRequest {
    pub key: crate::sip::endpoint::CallKey,
    pub reason: String,
}

pub struct CallTaskParams {
    pub key: crate::sip::endpoint::CallKey,
    pub call_id: String,
    pub socket: UdpSocket,
    pub media: CallMedia,
    pub metrics: Arc<Metrics>,
    pub hangup: mpsc::UnboundedSender<HangupRequest>,
    pub max_duration: Option<Duration>,
    /// Runs when the task ends (returns the RTP port to the pool).
    pub on_exit: Box<dyn FnOnce() + Send>,
}

pub fn spawn(p: CallTaskParams) -> mpsc::UnboundedSender<CallCtrl> {
    let (tx, rx) = mpsc::unbounded_channel();
    let span = tracing::info_span!("call", call_id = %p.call_id);
    tokio::spawn(run(p, rx).instrument(span));
    tx
}

async fn run(p: CallTaskParams, mut ctrl: mpsc::UnboundedReceiver<CallCtrl>) {
    let CallTaskParams { key, socket, mut media, metrics, hangup, max_duration, on_exit, .. } = p;
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::new();
    let mut reported = MediaStats::default();
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut end_at = max_duration.map(|d| Instant::now() + d).unwrap_or(far);
    // One timer for the packet clock, moved only when the pacer's deadline
    // changes (re-creating it on every received packet costs timer-wheel work).
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
                Some(CallCtrl::Stop) | None => break,
            },
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => { media.handle_rtp(&buf[..n], from, std::time::Instant::now()); }
                // ICMP port unreachable from a previous send surfaces here on Linux: not fatal.
                Err(e) => debug!(error = %e, "RTP receive error"),
            },
            _ = &mut tick => {
                media.handle_timeout(std::time::Instant::now(), &mut out);
                for (dst, pkt) in out.drain(..) {
                    if let Err(e) = socket.send_to(&pkt, dst).await {
                        debug!(error = %e, %dst, "RTP send error");
                    }
                }
                if let Some(reason) = media.take_hangup() {
                    let _ = hangup.send(HangupRequest { key, reason });
                }
                let s = media.stats();
                metrics.add_media(&s, &reported);
                reported = s;
            }
            _ = tokio::time::sleep_until(end_at) => {
                end_at = far;
                let _ = hangup.send(HangupRequest { key, reason: "maximum call duration reached".into() });
            }
        }
    }
    let s = media.stats();
    metrics.add_media(&s, &reported);
    tracing::info!(
        packets_in = s.packets_in, packets_out = s.packets_out, lost = s.lost, late = s.late,
        duplicate = s.duplicate, foreign = s.foreign_dropped, "media stopped"
    );
    on_exit();
}
