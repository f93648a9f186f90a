//! Send-side pacer: owns the outgoing playout clock.
//!
//! Frame slot `n` is due at `start + n * ptime` and carries RTP timestamp
//! `initial_timestamp + n * frame_samples`. Both are computed from `n`, never
//! accumulated from sleeps, so a long call does not drift however late the
//! driver wakes. The driver sleeps until [`Pacer::poll_timeout`], calls
//! [`Pacer::handle_timeout`] with the current instant and sends what it gets.
//!
//! A frame is sent every slot, speech or not: continuous RTP keeps NAT
//! bindings open and keeps peers' RTP inactivity timers quiet. When the driver
//! wakes so late that more than `max_catch_up` slots are due, the oldest
//! excess slots are skipped: their timestamps are consumed (the receiver sees
//! a gap in media time, as after silence suppression), no packet is sent, and
//! no agent audio is consumed, so nothing the agent says is lost.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::media::rtp::RtpHeader;

#[derive(Debug, Clone)]
pub struct PacerConfig {
    pub clock_rate: u32,
    /// Rate of the PCM queued with `push_audio` (the agent rate, 16 kHz). Frames
    /// hold `pcm_rate * ptime` samples while timestamps advance by
    /// `clock_rate * ptime` (Opus runs its RTP clock at 48 kHz whatever the audio).
    pub pcm_rate: u32,
    /// Clamped to 1 ms ..= 1 s.
    pub ptime: Duration,
    pub payload_type: u8,
    pub ssrc: u32,
    pub initial_sequence: u16,
    pub initial_timestamp: u32,
    /// frames sent at once when the driver wakes late, e.g. 3; beyond that
    /// frames are skipped: timestamp advances, no packet. At least 1.
    pub max_catch_up: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFrame {
    pub header: RtpHeader,
    /// exactly frame_samples
    pub pcm: Vec<i16>,
    /// false = silence fill
    pub speech: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacerStats {
    pub frames_sent: u64,
    /// Slots whose timestamp was consumed without a packet (late wake-ups).
    pub frames_skipped: u64,
    pub speech_frames: u64,
}

pub struct Pacer {
    cfg: PacerConfig,
    start: Instant,
    ptime_ns: u64,
    frame_samples: usize,
    /// RTP timestamp units per frame.
    ts_step: u32,
    /// Index of the next frame slot.
    slot: u64,
    next_sequence: u16,
    queue: VecDeque<i16>,
    sent_any: bool,
    /// The last frame sent carried speech (a talk spurt is in progress).
    in_talkspurt: bool,
    played_speech_samples: u64,
    /// Barge-in pending: frames carry silence and the queue waits.
    paused: bool,
    /// Samples of fade-out on a pause or clear (0: a hard cut).
    fade_samples: usize,
    /// The fade-out the next frame carries (the queue's next samples, ramped down; not consumed).
    fade: Vec<i16>,
    stats: PacerStats,
}

impl Pacer {
    pub fn new(mut cfg: PacerConfig, start: Instant) -> Self {
        // ptime may come from the peer's SDP: keep the arithmetic sane
        // (no division by zero, no gigantic frames) instead of panicking.
        cfg.clock_rate = cfg.clock_rate.max(1);
        cfg.ptime = cfg.ptime.clamp(Duration::from_millis(1), Duration::from_secs(1));
        cfg.max_catch_up = cfg.max_catch_up.max(1);
        let ptime_ns = cfg.ptime.as_nanos() as u64;
        // Whole samples per frame; rates where this is fractional (e.g.
        // 11025 Hz at 20 ms) would run the media clock slightly slow.
        cfg.pcm_rate = cfg.pcm_rate.max(1);
        let frame_samples = (u128::from(cfg.pcm_rate) * u128::from(ptime_ns) / 1_000_000_000).max(1) as usize;
        let ts_step = (u128::from(cfg.clock_rate) * u128::from(ptime_ns) / 1_000_000_000).max(1) as u32;
        Self {
            next_sequence: cfg.initial_sequence,
            cfg,
            start,
            ptime_ns,
            frame_samples,
            ts_step,
            slot: 0,
            queue: VecDeque::new(),
            sent_any: false,
            in_talkspurt: false,
            played_speech_samples: 0,
            paused: false,
            fade_samples: 0,
            fade: Vec::new(),
            stats: PacerStats::default(),
        }
    }

    /// Fade the audio out over `samples` (at pcm_rate) when it is paused or cleared, instead of
    /// cutting it on a frame boundary. The faded samples are not counted as played: a resumed pause
    /// plays them again, whole.
    pub fn set_fade(&mut self, samples: usize) {
        self.fade_samples = samples.min(self.frame_samples);
    }

    fn start_fade(&mut self) {
        if self.fade_samples == 0 || self.paused || !self.in_talkspurt {
            return;
        }
        let n = self.fade_samples.min(self.queue.len());
        self.fade = self
            .queue
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, &s)| (s as f32 * (1.0 - (i + 1) as f32 / (n + 1) as f32)) as i16)
            .collect();
    }

    /// pcm_rate * ptime
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Queue agent audio (mono PCM at pcm_rate) for playout after what is queued.
    pub fn push_audio(&mut self, pcm: &[i16]) {
        self.queue.extend(pcm);
    }

    /// Drop all queued audio at once (barge-in); returns how many samples were
    /// dropped. Ends the talk spurt, so the next speech frame carries the marker.
    pub fn clear(&mut self) -> usize {
        self.start_fade();
        let dropped = self.queue.len();
        self.queue.clear();
        self.in_talkspurt = false;
        self.paused = false;
        dropped
    }

    /// Hold the queued audio (a possible barge-in): from the next frame on, silence goes out and
    /// nothing is taken from the queue, until `resume` (a false alarm) or `clear` (a real one).
    pub fn pause(&mut self) {
        self.start_fade();
        self.paused = true;
    }

    /// Go on from where `pause` stopped (the next speech frame starts a new talk spurt).
    pub fn resume(&mut self) {
        self.paused = false;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn queued_samples(&self) -> usize {
        self.queue.len()
    }

    /// Total agent samples that have left on the wire (speech only, not
    /// silence fill or the zero padding of a partial frame).
    pub fn played_speech_samples(&self) -> u64 {
        self.played_speech_samples
    }

    /// When the next frame is due: start + n * ptime.
    pub fn poll_timeout(&self) -> Instant {
        self.deadline(self.slot)
    }

    /// Emit every frame due at `now` (at most max_catch_up; further overdue
    /// frames are skipped but their timestamps are consumed).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<OutFrame> {
        let Some(elapsed) = now.checked_duration_since(self.start) else {
            return Vec::new();
        };
        // Slots 0..=elapsed/ptime are due by now.
        let due = u64::try_from(elapsed.as_nanos() / u128::from(self.ptime_ns)).unwrap_or(u64::MAX).saturating_add(1);
        let mut count = due.saturating_sub(self.slot);
        let max = u64::from(self.cfg.max_catch_up);
        if count > max {
            let skip = count - max;
            self.slot += skip;
            self.stats.frames_skipped += skip;
            // The receiver sees a jump in media time: start a new talk spurt.
            self.in_talkspurt = false;
            count = max;
        }
        (0..count).map(|_| self.next_frame()).collect()
    }

    pub fn stats(&self) -> PacerStats {
        self.stats
    }

    fn deadline(&self, slot: u64) -> Instant {
        // Exact integer nanoseconds; overflows only after ~584 years of call.
        let offset = Duration::from_nanos(self.ptime_ns.saturating_mul(slot));
        self.start.checked_add(offset).unwrap_or(self.start)
    }

    fn next_frame(&mut self) -> OutFrame {
        let take = if self.paused { 0 } else { self.frame_samples.min(self.queue.len()) };
        let mut pcm = Vec::with_capacity(self.frame_samples);
        // A fade-out ends the talk spurt: its few ms of audio, then silence (not counted as speech).
        pcm.append(&mut self.fade);
        pcm.extend(self.queue.drain(..take));
        pcm.resize(self.frame_samples, 0);
        let speech = take > 0;

        // RFC 3551 §4.1: marker on the first packet of a talk spurt; we also
        // set it on the very first packet so the receiver anchors cleanly.
        let marker = !self.sent_any || (speech && !self.in_talkspurt);
        let header = RtpHeader {
            marker,
            payload_type: self.cfg.payload_type,
            sequence: self.next_sequence,
            // (slot * frame_samples) mod 2^32, with slot reduced first.
            timestamp: self.cfg.initial_timestamp.wrapping_add((self.slot as u32).wrapping_mul(self.ts_step)),
            ssrc: self.cfg.ssrc,
        };

        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.slot += 1;
        self.sent_any = true;
        self.in_talkspurt = speech;
        self.played_speech_samples += take as u64;
        self.stats.frames_sent += 1;
        if speech {
            self.stats.speech_frames += 1;
        }
        OutFrame { header, pcm, speech }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_or_clear_fades_out_when_asked_and_a_resume_loses_nothing() {
        let t0 = Instant::now();
        let cfg = PacerConfig {
            clock_rate: 8000,
            pcm_rate: 16000,
            ptime: Duration::from_millis(20),
            payload_type: 0,
            ssrc: 1,
            initial_sequence: 0,
            initial_timestamp: 0,
            max_catch_up: 3,
        };
        let mut p = Pacer::new(cfg.clone(), t0);
        p.set_fade(80);
        p.push_audio(&vec![1000i16; 3200]);
        let at = |k: u64| t0 + Duration::from_millis(20 * k);
        assert!(p.handle_timeout(at(0))[0].speech);
        p.pause();
        let f = p.handle_timeout(at(1)).remove(0);
        assert!(!f.speech);
        assert!(
            f.pcm[0] > 900
                && f.pcm[40] > 400
                && f.pcm[40] < 600
                && f.pcm[79] < 30
                && f.pcm[80..].iter().all(|&s| s == 0),
            "{:?}",
            &f.pcm[..90]
        );
        assert!(p.handle_timeout(at(2))[0].pcm.iter().all(|&s| s == 0), "silence after the fade");
        assert_eq!(p.played_speech_samples(), 320, "the faded samples are not played");
        p.resume();
        assert_eq!(p.handle_timeout(at(3))[0].pcm, vec![1000i16; 320], "a resume plays them whole");
        p.clear();
        let f = p.handle_timeout(at(4)).remove(0);
        assert!(f.pcm[0] > 900 && f.pcm[80..].iter().all(|&s| s == 0));
        // Without a fade: a hard cut, as before.
        let mut q = Pacer::new(cfg, t0);
        q.push_audio(&vec![1000i16; 3200]);
        q.handle_timeout(at(0));
        q.pause();
        assert!(q.handle_timeout(at(1))[0].pcm.iter().all(|&s| s == 0));
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn cfg() -> PacerConfig {
        PacerConfig {
            clock_rate: 8000,
            pcm_rate: 8000,
            ptime: ms(20),
            payload_type: 0,
            ssrc: 0xABCD,
            initial_sequence: 100,
            initial_timestamp: 5000,
            max_catch_up: 3,
        }
    }

    fn markers(frames: &[OutFrame]) -> Vec<bool> {
        frames.iter().map(|f| f.header.marker).collect()
    }

    #[test]
    fn one_hour_at_exact_deadlines_has_no_drift() {
        let t0 = Instant::now();
        let initial_sequence = 65_000;
        let initial_timestamp = u32::MAX - 10_000;
        let mut p = Pacer::new(PacerConfig { initial_sequence, initial_timestamp, ..cfg() }, t0);
        assert_eq!(p.frame_samples(), 160);
        assert_eq!(p.poll_timeout(), t0);
        for n in 0..180_000u32 {
            let now = p.poll_timeout();
            assert_eq!(now, t0 + ms(20) * n);
            let frames = p.handle_timeout(now);
            assert_eq!(frames.len(), 1);
            let h = &frames[0].header;
            assert_eq!(h.sequence, initial_sequence.wrapping_add(n as u16));
            assert_eq!(h.timestamp, initial_timestamp.wrapping_add(n.wrapping_mul(160)));
            assert_eq!(h.marker, n == 0);
            assert_eq!((h.ssrc, h.payload_type), (0xABCD, 0));
            assert!(!frames[0].speech);
        }
        assert_eq!(p.poll_timeout(), t0 + ms(20) * 180_000);
        assert_eq!(p.poll_timeout(), t0 + Duration::from_secs(3600));
        let s = p.stats();
        assert_eq!((s.frames_sent, s.frames_skipped, s.speech_frames), (180_000, 0, 0));
    }

    #[test]
    fn late_wakeups_within_a_frame_do_not_drift() {
        let t0 = Instant::now();
        let mut p = Pacer::new(cfg(), t0);
        for n in 0..10_000u32 {
            // Wake up to 19 ms late every time; deadlines stay on the grid.
            let due = p.poll_timeout();
            assert_eq!(due, t0 + ms(20) * n);
            let frames = p.handle_timeout(due + ms(u64::from(n % 20)));
            assert_eq!(frames.len(), 1);
        }
        assert_eq!(p.poll_timeout(), t0 + ms(200_000));
    }

    #[test]
    fn nothing_before_the_deadline() {
        let t0 = Instant::now() + ms(1000);
        let mut p = Pacer::new(cfg(), t0);
        assert!(p.handle_timeout(t0 - ms(500)).is_empty());
        assert_eq!(p.handle_timeout(t0).len(), 1);
        assert!(p.handle_timeout(t0).is_empty());
        assert!(p.handle_timeout(t0 + ms(19)).is_empty());
        assert_eq!(p.handle_timeout(t0 + ms(20)).len(), 1);
    }

    #[test]
    fn late_wakeup_catches_up_bounded() {
        let t0 = Instant::now();
        let mut p = Pacer::new(cfg(), t0);
        // Three slots due (0, 20, 40 ms): all sent.
        let f = p.handle_timeout(t0 + ms(40));
        assert_eq!(f.len(), 3);
        assert_eq!(f.iter().map(|f| f.header.timestamp).collect::<Vec<_>>(), [5000, 5160, 5320]);
        // Next wake-up 100 ms late: slots 3..=8 due (6), 3 sent, 3 skipped.
        let f = p.handle_timeout(t0 + ms(160));
        assert_eq!(f.len(), 3);
        assert_eq!(f.iter().map(|f| f.header.sequence).collect::<Vec<_>>(), [103, 104, 105]);
        // The newest slots are sent; the skipped ones consumed timestamps.
        assert_eq!(
            f.iter().map(|f| f.header.timestamp).collect::<Vec<_>>(),
            [5000 + 6 * 160, 5000 + 7 * 160, 5000 + 8 * 160]
        );
        assert_eq!(p.poll_timeout(), t0 + ms(180));
        let s = p.stats();
        assert_eq!((s.frames_sent, s.frames_skipped), (6, 3));
        // A very long stall still sends only max_catch_up frames.
        assert_eq!(p.handle_timeout(t0 + Duration::from_secs(60)).len(), 3);
        assert_eq!(p.poll_timeout(), t0 + Duration::from_secs(60) + ms(20));
    }

    #[test]
    fn skipped_slots_keep_agent_audio() {
        let t0 = Instant::now();
        let mut p = Pacer::new(cfg(), t0);
        p.push_audio(&[1; 160 * 10]);
        assert_eq!(p.handle_timeout(t0).len(), 1);
        let f = p.handle_timeout(t0 + ms(200)); // 10 due, 3 sent, 7 skipped
        assert_eq!(f.len(), 3);
        assert!(f.iter().all(|f| f.speech));
        // After the skip the receiver sees a media-time jump: new talk spurt.
        assert_eq!(markers(&f), [true, false, false]);
        assert_eq!(p.played_speech_samples(), 4 * 160);
        assert_eq!(p.queued_samples(), 6 * 160);
    }

    #[test]
    fn marker_semantics() {
        let t0 = Instant::now();
        let mut p = Pacer::new(cfg(), t0);
        let mut tick = 0u32;
        let mut step = |p: &mut Pacer| {
            let f = p.handle_timeout(t0 + ms(20) * tick);
            tick += 1;
            assert_eq!(f.len(), 1);
            (f[0].header.marker, f[0].speech)
        };
        assert_eq!(step(&mut p), (true, false)); // very first packet, silence
        assert_eq!(step(&mut p), (false, false));
        p.push_audio(&[100; 400]); // 2.5 frames
        assert_eq!(step(&mut p), (true, true)); // talk spurt starts
        assert_eq!(step(&mut p), (false, true));
        assert_eq!(step(&mut p), (false, true)); // partial frame, padded
        assert_eq!(step(&mut p), (false, false)); // silence fill
        p.push_audio(&[100; 160]);
        assert_eq!(step(&mut p), (true, true)); // new spurt after silence
        p.push_audio(&[100; 160]);
        assert_eq!(step(&mut p), (false, true)); // queued in time: same spurt
    }

    #[test]
    fn first_packet_speech_has_marker_once() {
        let t0 = Instant::now();
        let mut p = Pacer::new(cfg(), t0);
        p.push_audio(&[5; 320]);
        let f = p.handle_timeout(t0 + ms(20));
        assert_eq!(markers(&f), [true, false]);
        assert!(f.iter().all(|f| f.speech));
        assert_eq!(p.stats().speech_frames, 2);
    }

    #[test]
    fn partial_frame_is_zero_padded() {
        let t0 = Instant::now();
        let mut p = Pacer::new(cfg(), t0);
        p.push_audio(&[7; 100]);
        let f = p.handle_timeout(t0);
        assert_eq!(f[0].pcm.len(), 160);
        assert!(f[0].speech);
        assert!(f[0].pcm[..100].iter().all(|&s| s == 7));
        assert!(f[0].pcm[100..].iter().all(|&s| s == 0));
        assert_eq!(p.played_speech_samples(), 100);
        let f = p.handle_timeout(t0 + ms(20));
        assert!(!f[0].speech);
        assert_eq!(f[0].pcm, vec![0; 160]);
    }

    #[test]
    fn audio_is_played_in_order() {
        let t0 = Instant::now();
        let mut p = Pacer::new(cfg(), t0);
        let audio: Vec<i16> = (0..480).map(|i| i as i16).collect();
        p.push_audio(&audio[..200]);
        p.push_audio(&audio[200..]);
        let f = p.handle_timeout(t0 + ms(40));
        let out: Vec<i16> = f.iter().flat_map(|f| f.pcm.iter().copied()).collect();
        assert_eq!(out, audio);
    }

    #[test]
    fn pause_holds_the_queue_and_resume_goes_on_from_there() {
        let t0 = Instant::now();
        let mut p = Pacer::new(cfg(), t0);
        let audio: Vec<i16> = (0..800).map(|i| i as i16 + 1).collect();
        p.push_audio(&audio);
        let a = p.handle_timeout(t0);
        p.pause();
        // Paused: silence, nothing taken, the same position.
        let f = p.handle_timeout(t0 + ms(40));
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|f| !f.speech && f.pcm.iter().all(|&x| x == 0)));
        assert_eq!((p.queued_samples(), p.played_speech_samples()), (640, 160));
        p.resume();
        let b = p.handle_timeout(t0 + ms(60));
        assert!(b[0].speech && b[0].header.marker, "a new talk spurt");
        let mut heard: Vec<i16> = a[0].pcm.clone();
        heard.extend(&b[0].pcm);
        assert_eq!(heard, audio[..320].to_vec(), "nothing lost, nothing repeated");
        // A real barge-in after a pause: clear drops the held audio and ends the pause.
        p.pause();
        assert_eq!(p.clear(), 480);
        assert!(!p.is_paused());
    }

    #[test]
    fn clear_drops_queue_immediately() {
        let t0 = Instant::now();
        let mut p = Pacer::new(cfg(), t0);
        p.push_audio(&[3; 1000]);
        assert_eq!(p.handle_timeout(t0).len(), 1);
        assert_eq!(p.played_speech_samples(), 160);
        assert_eq!(p.clear(), 840);
        assert_eq!(p.queued_samples(), 0);
        assert_eq!(p.clear(), 0);
        let f = p.handle_timeout(t0 + ms(20));
        assert!(!f[0].speech);
        assert_eq!(p.played_speech_samples(), 160);
        // Barge-in, then a new answer queued before the next tick: new spurt.
        p.push_audio(&[3; 160]);
        let f = p.handle_timeout(t0 + ms(40));
        assert!(f[0].speech && f[0].header.marker);
        p.push_audio(&[3; 500]);
        p.clear();
        p.push_audio(&[4; 160]);
        let f = p.handle_timeout(t0 + ms(60));
        assert!(f[0].speech && f[0].header.marker);
        assert_eq!(p.played_speech_samples(), 480);
        assert_eq!(p.stats().speech_frames, 3);
    }

    #[test]
    fn other_rates_and_degenerate_config() {
        let t0 = Instant::now();
        let p = Pacer::new(PacerConfig { clock_rate: 16_000, pcm_rate: 16_000, ptime: ms(30), ..cfg() }, t0);
        assert_eq!(p.frame_samples(), 480);
        let p = Pacer::new(PacerConfig { clock_rate: 48_000, pcm_rate: 48_000, ptime: ms(20), ..cfg() }, t0);
        assert_eq!(p.frame_samples(), 960);
        let mut p =
            Pacer::new(PacerConfig { clock_rate: 0, pcm_rate: 0, ptime: Duration::ZERO, max_catch_up: 0, ..cfg() }, t0);
        assert_eq!(p.frame_samples(), 1);
        assert_eq!(p.handle_timeout(t0 + ms(5)).len(), 1);
        assert_eq!(p.poll_timeout(), t0 + ms(6));
        let mut p = Pacer::new(PacerConfig { ptime: Duration::from_secs(3600), ..cfg() }, t0);
        assert_eq!(p.frame_samples(), 8000); // ptime clamped to 1 s
        assert_eq!(p.handle_timeout(t0 + Duration::from_secs(10)).len(), 3);
    }

    #[test]
    fn opus_frames_hold_16k_pcm_but_stamp_48k_time() {
        let t0 = Instant::now();
        let mut p = Pacer::new(
            PacerConfig {
                clock_rate: 48_000,
                pcm_rate: 16_000,
                ptime: Duration::from_millis(20),
                payload_type: 111,
                ssrc: 1,
                initial_sequence: 0,
                initial_timestamp: u32::MAX - 959,
                max_catch_up: 3,
            },
            t0,
        );
        assert_eq!(p.frame_samples(), 320);
        let f = p.handle_timeout(t0);
        assert_eq!(f[0].pcm.len(), 320);
        let f2 = p.handle_timeout(t0 + Duration::from_millis(20));
        assert_eq!(f2[0].header.timestamp, f[0].header.timestamp.wrapping_add(960));
        assert_eq!(f2[0].header.timestamp, 0, "wraps at 2^32");
    }
}
