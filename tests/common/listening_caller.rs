//! A caller that listens before it speaks: it sends its own RTP (PCMU, a 20 ms packet every 20 ms
//! on its own clock, silence between lines) and can wait for the agent's voice before its next
//! line. SIPp does the call's signalling (its SDP names this caller's port instead of SIPp's).
//!
//! A SIPp pcap fixes every line's time before the call. To interrupt a reply a given time after it
//! begins, the caller has to hear it begin: on a loaded two-core machine the same reply began 1.8 s
//! after the question in one call and 7.8 s in the next.

use super::audio::sox_encode_g711;
use super::fixtures::rtp_packet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A received packet is the agent talking above this RMS (decoded PCMU, full scale 1.0).
pub const LOUD_RMS: f64 = 0.02;

/// One step of the caller's script.
pub enum Step {
    /// Say these 8 kHz samples.
    Say(Vec<i16>),
    /// Send silence for this long (s).
    Silence(f64),
    /// Send silence until the agent's voice, first heard after this step began, has gone on for
    /// `played_s` and is loud in the latest packet (so the next line starts over the agent, not in
    /// a pause between its sentences). Gives up after `timeout_s`.
    WhenAgentHasSpoken { played_s: f64, timeout_s: f64 },
}

/// What happened, for the test's assertions and messages.
#[derive(Debug, Default, Clone)]
pub struct CallerReport {
    /// Each step's start and end, in seconds after the caller's first packet (the time of the
    /// first and after the last packet of a `Say`).
    pub step_starts: Vec<f64>,
    pub step_ends: Vec<f64>,
    /// `WhenAgentHasSpoken` steps that timed out (their index).
    pub timed_out: Vec<usize>,
    pub packets_sent: u64,
    pub packets_received: u64,
}

pub struct ListeningCaller {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<CallerReport>>,
}

impl ListeningCaller {
    /// Binds a loopback UDP port and starts the script's clock when the agent's first RTP packet
    /// arrives (its source is where this caller sends: symmetric RTP). After the script, silence
    /// until [`ListeningCaller::stop`].
    pub fn start(script: Vec<Step>, ssrc: u32) -> ListeningCaller {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the caller's RTP port");
        let port = socket.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // Encoded before the call (sox), so that the caller's clock waits for nothing.
        let script: Vec<Planned> = script
            .into_iter()
            .map(|s| match s {
                Step::Say(pcm) => Planned::Say(sox_encode_g711(&pcm, "u-law")),
                Step::Silence(s) => Planned::Silence(s),
                Step::WhenAgentHasSpoken { played_s, timeout_s } => Planned::WhenAgentHasSpoken { played_s, timeout_s },
            })
            .collect();
        let thread = std::thread::spawn(move || run(socket, script, ssrc, &flag));
        ListeningCaller { port, stop, thread: Some(thread) }
    }

    /// The RTP port for the SDP offer.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn stop(mut self) -> CallerReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("the caller's thread")
    }
}

impl Drop for ListeningCaller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// SIPp's `uac_pcmu_turn_pause.xml` as a caller whose media is `caller`: the SDP offers its port,
/// SIPp plays nothing, and hangs up `hold_ms` after the ACK.
pub fn sipp_scenario(caller: &ListeningCaller, hold_ms: u64) -> String {
    let xml = std::fs::read_to_string(super::scenario("uac_pcmu_turn_pause.xml")).unwrap();
    let play = "<nop><action><exec play_pcap_audio=\"pcap/turn_pause_pcmu.pcap\"/></action></nop>";
    assert!(
        xml.contains(play) && xml.contains("[auto_media_port]") && xml.contains("<pause milliseconds=\"9000\"/>"),
        "uac_pcmu_turn_pause.xml changed"
    );
    xml.replace(play, "")
        .replace("[auto_media_port]", &caller.port().to_string())
        .replace("<pause milliseconds=\"9000\"/>", &format!("<pause milliseconds=\"{hold_ms}\"/>"))
}

/// A step with its words in PCMU.
enum Planned {
    Say(Vec<u8>),
    Silence(f64),
    WhenAgentHasSpoken { played_s: f64, timeout_s: f64 },
}

const FRAME: usize = 160;
const TICK: Duration = Duration::from_millis(20);

fn run(socket: UdpSocket, script: Vec<Planned>, ssrc: u32, stop: &AtomicBool) -> CallerReport {
    let mut report = CallerReport::default();
    let mut buf = [0u8; 2048];
    // The agent sends from the call's start (silence included): its first packet says where to send.
    socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let remote: SocketAddr = loop {
        if stop.load(Ordering::SeqCst) {
            return report;
        }
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            break from;
        }
    };
    let silence = sox_encode_g711(&[0i16; FRAME], "u-law");
    let mut steps = script.into_iter().enumerate();
    let (mut seq, mut ts) = (1u16, 0u32);
    let t0 = Instant::now();
    let mut next_send = t0;
    let mut listen = Listener::default();
    let mut current: Option<(usize, Planned, Instant)> = None;
    let mut said = 0usize;
    loop {
        if stop.load(Ordering::SeqCst) {
            return report;
        }
        // Hear everything that arrives before the next packet is due.
        loop {
            let now = Instant::now();
            if now >= next_send {
                break;
            }
            socket.set_read_timeout(Some(next_send - now)).unwrap();
            match socket.recv_from(&mut buf) {
                Ok((n, _)) => {
                    report.packets_received += 1;
                    listen.hear(&buf[..n], Instant::now());
                }
                Err(_) => break,
            }
        }
        // The step this packet belongs to.
        let now = Instant::now();
        if current.is_none() {
            if let Some((i, step)) = steps.next() {
                report.step_starts.push((next_send - t0).as_secs_f64());
                listen.reset();
                said = 0;
                current = Some((i, step, now));
            }
        }
        let mut payload = &silence[..];
        let mut done = false;
        if let Some((i, step, since)) = &current {
            match step {
                Planned::Say(ulaw) => {
                    let end = (said + FRAME).min(ulaw.len());
                    if end - said == FRAME {
                        payload = &ulaw[said..end];
                    }
                    said = end;
                    done = said >= ulaw.len();
                }
                Planned::Silence(s) => done = (now - *since).as_secs_f64() >= *s,
                Planned::WhenAgentHasSpoken { played_s, timeout_s } => {
                    if listen.talking_for(now).is_some_and(|p| p >= *played_s) {
                        done = true;
                    } else if (now - *since).as_secs_f64() >= *timeout_s {
                        report.timed_out.push(*i);
                        done = true;
                    }
                }
            }
        }
        let pkt = rtp_packet(0, seq, ts, ssrc, payload, seq == 1);
        let _ = socket.send_to(&pkt, remote);
        report.packets_sent += 1;
        (seq, ts) = (seq.wrapping_add(1), ts.wrapping_add(FRAME as u32));
        next_send += TICK;
        if done {
            current = None;
            report.step_ends.push((next_send - t0).as_secs_f64());
        }
    }
}

/// The agent's voice as this caller hears it, packet by packet.
#[derive(Default)]
struct Listener {
    /// When the agent's current stretch of speech began (heard since the last reset).
    began: Option<Instant>,
    /// When the latest loud packet arrived.
    last_loud: Option<Instant>,
}

impl Listener {
    fn reset(&mut self) {
        *self = Listener::default();
    }

    fn hear(&mut self, packet: &[u8], at: Instant) {
        let Some(p) = super::audio::parse_rtp(0.0, ([0, 0, 0, 0], 0).into(), ([0, 0, 0, 0], 0).into(), packet) else {
            return;
        };
        if p.pt != 0 {
            return;
        }
        let mut pcm = Vec::new();
        switchboard::media::g711::decode_ulaw(&p.payload, &mut pcm);
        if super::rms(&pcm) > LOUD_RMS {
            self.began.get_or_insert(at);
            self.last_loud = Some(at);
        }
    }

    /// How long the agent has been talking, if its latest packet (≤ 60 ms ago) was loud.
    fn talking_for(&self, now: Instant) -> Option<f64> {
        let (began, last) = (self.began?, self.last_loud?);
        (now - last <= Duration::from_millis(60)).then(|| (now - began).as_secs_f64())
    }
}
