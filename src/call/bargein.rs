//! Barge-in, sans-IO: deciding from the caller's VAD probabilities, chunk by
//! chunk, when the agent must stop talking — fast, and without being fooled.
//!
//! Stopping within ~100 ms of the caller's onset and not stopping for an
//! "uh-huh", a cough or the agent's own echo pull in opposite directions, so
//! the decision has two stages:
//!
//! 1. **Pause** after `pause_ms` of caller speech while the agent talks: the
//!    pacer stops sending the agent's audio at once but keeps it queued.
//! 2. **Commit** once the speech has lasted `commit_ms`: a real interruption.
//!    The queued audio is dropped and the reply is cancelled and truncated to
//!    what was played. If the speech stops first (a back-channel, a cough),
//!    the pause ends after `resume_ms` of quiet and the agent **resumes**
//!    where it stopped — a false barge-in costs a short gap, not the reply.
//!
//! While the agent talks the caller must be louder than the line's echo:
//! chunks that match what the agent just sent (`EchoCheck`, a normalised
//! cross-correlation over the echo path's possible delays) do not count as
//! speech, and the probability threshold is higher than for turn detection.

/// How barge-in behaves (per agent).
#[derive(Debug, Clone, PartialEq)]
pub struct BargeInConfig {
    /// VAD probability that counts as caller speech while the agent talks.
    pub threshold: f32,
    /// Speech this long pauses the agent's audio.
    pub pause_ms: u64,
    /// Speech this long (from its onset) is a real interruption.
    pub commit_ms: u64,
    /// Quiet this long after a pause that was not committed resumes the agent.
    pub resume_ms: u64,
    /// Caller audio correlated at least this much with the agent's recent audio is echo.
    pub echo_ncc: f32,
}

impl Default for BargeInConfig {
    fn default() -> Self {
        BargeInConfig { threshold: 0.6, pause_ms: 64, commit_ms: 480, resume_ms: 320, echo_ncc: 0.55 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BargeAction {
    /// Stop sending the agent's audio now; keep it.
    Pause { onset_ms: u64 },
    /// It was not an interruption: go on from where the audio stopped.
    Resume,
    /// A real interruption that began at `onset_ms` (caller audio time).
    Commit { onset_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// Caller speech began while the agent talked; not yet long enough to pause.
    Onset { start: u64 },
    /// The agent's audio is held.
    Paused { start: u64, last_speech: u64 },
    /// Committed: the rest of this caller utterance is the caller's turn, not another barge-in.
    Committed { last_speech: u64 },
}

#[derive(Debug, Clone)]
pub struct BargeIn {
    cfg: BargeInConfig,
    state: State,
}

impl BargeIn {
    pub fn new(cfg: BargeInConfig) -> BargeIn {
        BargeIn { cfg, state: State::Idle }
    }

    pub fn is_paused(&self) -> bool {
        matches!(self.state, State::Paused { .. })
    }

    /// One VAD chunk [start_ms, end_ms) of caller audio with its speech probability.
    /// `agent_talking`: agent audio is queued or being sent; `echo`: the chunk matches the agent's
    /// own recent audio.
    pub fn push(&mut self, p: f32, start_ms: u64, end_ms: u64, agent_talking: bool, echo: bool) -> Option<BargeAction> {
        let speech = p >= self.cfg.threshold && !echo;
        match self.state {
            State::Idle => {
                if agent_talking && speech {
                    self.state = State::Onset { start: start_ms };
                    return self.push_onset(start_ms, end_ms);
                }
                None
            }
            State::Onset { start } => {
                if !agent_talking || !speech {
                    self.state = State::Idle;
                    return None;
                }
                self.push_onset(start, end_ms)
            }
            State::Paused { start, last_speech } => {
                if speech {
                    if end_ms - start >= self.cfg.commit_ms {
                        self.state = State::Committed { last_speech: end_ms };
                        return Some(BargeAction::Commit { onset_ms: start });
                    }
                    self.state = State::Paused { start, last_speech: end_ms };
                } else if end_ms - last_speech >= self.cfg.resume_ms {
                    self.state = State::Idle;
                    return Some(BargeAction::Resume);
                }
                None
            }
            State::Committed { last_speech } => {
                if speech {
                    self.state = State::Committed { last_speech: end_ms };
                } else if end_ms - last_speech >= self.cfg.resume_ms {
                    self.state = State::Idle;
                }
                None
            }
        }
    }

    fn push_onset(&mut self, start: u64, end_ms: u64) -> Option<BargeAction> {
        if end_ms - start >= self.cfg.pause_ms {
            self.state = State::Paused { start, last_speech: end_ms };
            return Some(BargeAction::Pause { onset_ms: start });
        }
        None
    }

    /// The agent's reply ended or was dropped elsewhere: forget any pending decision.
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }
}

/// Is the caller's audio the agent's own voice coming back? The agent's recent audio (what the
/// pacer sent) and the caller's chunk are both reduced to 4 kHz, and the chunk is compared with
/// every delay of the echo path up to `max_delay_ms`: a normalised cross-correlation this high at
/// some delay means echo. At 4 kHz a 32 ms chunk over 400 ms of delays is ~60 k multiply-adds.
#[derive(Debug, Clone)]
pub struct EchoCheck {
    /// The agent's audio at 4 kHz, oldest first, up to max_delay + a chunk.
    reference: std::collections::VecDeque<f32>,
    capacity: usize,
    max_delay: usize,
}

const DECIMATE: usize = 4; // 16 kHz → 4 kHz

fn decimate(pcm: &[i16]) -> Vec<f32> {
    // Average of 4 (a crude low-pass; enough for an envelope-level match of speech).
    pcm.chunks(DECIMATE).map(|c| c.iter().map(|&s| s as f32).sum::<f32>() / c.len() as f32).collect()
}

impl EchoCheck {
    pub fn new(max_delay_ms: u64) -> EchoCheck {
        let max_delay = (max_delay_ms as usize) * 16 / DECIMATE;
        let capacity = max_delay + 4000 / DECIMATE; // + 250 ms of chunk
        EchoCheck { reference: std::collections::VecDeque::with_capacity(capacity), capacity, max_delay }
    }

    /// Agent audio (16 kHz) as it leaves on the wire; silence fill too, to keep the timeline.
    pub fn sent(&mut self, pcm: &[i16]) {
        for x in decimate(pcm) {
            if self.reference.len() == self.capacity {
                self.reference.pop_front();
            }
            self.reference.push_back(x);
        }
    }

    /// The best normalised correlation of the caller's latest chunk (16 kHz) with the agent's audio
    /// at any delay up to the maximum; 0 when the agent said nothing lately.
    pub fn similarity(&mut self, caller: &[i16]) -> f32 {
        let c = decimate(caller);
        let n = c.len();
        if n == 0 || self.reference.len() < n {
            return 0.0;
        }
        let ce: f32 = c.iter().map(|x| x * x).sum();
        if ce <= 1e-3 {
            return 0.0;
        }
        // In place, not copied: this runs for every caller frame while the agent talks.
        let r = self.reference.make_contiguous();
        let last = r.len() - n; // delay 0: the newest reference aligned with the chunk
        let mut best = 0.0f32;
        for d in 0..=self.max_delay.min(last) {
            let seg = &r[last - d..last - d + n];
            let re: f32 = seg.iter().map(|x| x * x).sum();
            if re <= 1e-3 {
                continue;
            }
            let dot: f32 = seg.iter().zip(&c).map(|(a, b)| a * b).sum();
            best = best.max(dot / (re * ce).sqrt());
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 32;

    /// Feed probabilities chunk by chunk from t = 0; returns (chunk end time, action).
    fn run(b: &mut BargeIn, probs: &[(f32, bool, bool)]) -> Vec<(u64, BargeAction)> {
        probs
            .iter()
            .enumerate()
            .filter_map(|(i, &(p, talking, echo))| {
                let (s, e) = (i as u64 * CHUNK, (i as u64 + 1) * CHUNK);
                b.push(p, s, e, talking, echo).map(|a| (e, a))
            })
            .collect()
    }

    fn speech(n: usize) -> Vec<(f32, bool, bool)> {
        vec![(0.95, true, false); n]
    }
    fn quiet(n: usize) -> Vec<(f32, bool, bool)> {
        vec![(0.02, true, false); n]
    }

    #[test]
    fn a_real_interruption_pauses_fast_then_commits() {
        let mut b = BargeIn::new(BargeInConfig::default());
        let mut p = quiet(10);
        p.extend(speech(30));
        let got = run(&mut b, &p);
        // Onset at chunk 10 (320 ms): paused after 64 ms of speech, committed at 480 ms.
        assert_eq!(got, vec![(384, BargeAction::Pause { onset_ms: 320 }), (800, BargeAction::Commit { onset_ms: 320 })]);
    }

    #[test]
    fn a_back_channel_or_a_cough_pauses_then_resumes() {
        for burst in [3usize, 8] {
            // "uh-huh" ~250 ms (8 chunks), a cough ~100 ms (3 chunks).
            let mut b = BargeIn::new(BargeInConfig::default());
            let mut p = quiet(5);
            p.extend(speech(burst));
            p.extend(quiet(20));
            let got = run(&mut b, &p);
            let end_of_burst = (5 + burst as u64) * CHUNK;
            assert_eq!(got.len(), 2, "{got:?}");
            assert_eq!(got[0].1, BargeAction::Pause { onset_ms: 160 });
            assert_eq!(got[1], (end_of_burst + 320, BargeAction::Resume), "resumes after 320 ms of quiet");
        }
    }

    #[test]
    fn a_click_never_pauses_and_nothing_happens_while_the_agent_is_silent() {
        let mut b = BargeIn::new(BargeInConfig::default());
        let mut p = quiet(5);
        p.push((0.95, true, false)); // one 32 ms chunk: below pause_ms
        p.extend(quiet(5));
        p.extend(vec![(0.95, false, false); 40]); // the caller talks, the agent does not
        assert!(run(&mut b, &p).is_empty());
    }

    #[test]
    fn echo_and_weak_speech_do_not_count() {
        let mut b = BargeIn::new(BargeInConfig::default());
        let mut p = vec![(0.95, true, true); 40]; // the agent's own voice, recognised as echo
        p.extend(vec![(0.55, true, false); 40]); // below the barge-in threshold (turn detection's is 0.5)
        assert!(run(&mut b, &p).is_empty());
    }

    #[test]
    fn speech_through_short_gaps_still_commits() {
        let mut b = BargeIn::new(BargeInConfig::default());
        let mut p = speech(4);
        p.extend(quiet(3)); // 96 ms gap < resume_ms
        p.extend(speech(12));
        let got = run(&mut b, &p);
        assert_eq!(got.first().map(|g| g.1), Some(BargeAction::Pause { onset_ms: 0 }));
        assert_eq!(got.last().map(|g| g.1), Some(BargeAction::Commit { onset_ms: 0 }));
    }

    /// A speech-like test signal: low-passed noise under a syllable-rate envelope, distinct per seed.
    fn voice(n: usize, seed: u64) -> Vec<i16> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut lp = 0.0f32;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let white = ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5;
                lp = 0.7 * lp + 0.3 * white;
                let t = i as f32 / 16000.0;
                let env = 0.3 + 0.7 * (t * 4.0 * std::f32::consts::PI + seed as f32).sin().abs();
                (lp * env * 40000.0) as i16
            })
            .collect()
    }

    #[test]
    fn the_agents_echo_is_recognised_and_the_caller_is_not() {
        let mut e = EchoCheck::new(400);
        let agent = voice(16000, 1);
        let caller = voice(16000, 7);
        // 60 ms echo path at −10 dB (amplitude ×0.316), plus line noise.
        let delay = 960;
        e.sent(&agent[..8000]);
        let echo: Vec<i16> = (0..512).map(|i| (agent[8000 - delay - 512 + i] as f32 * 0.316) as i16 + ((i * 7919) % 61) as i16 - 30).collect();
        let sim_echo = e.similarity(&echo);
        let sim_caller = e.similarity(&caller[4000..4512]);
        assert!(sim_echo > 0.9, "echo: {sim_echo}");
        assert!(sim_caller < 0.55, "the caller's own voice: {sim_caller}");
        // The caller talking over the echo (double talk) is not echo either.
        let both: Vec<i16> = echo.iter().zip(&caller[4000..4512]).map(|(a, b)| a.saturating_add(*b)).collect();
        assert!(e.similarity(&both) < 0.55, "double talk: {}", e.similarity(&both));
        assert_eq!(EchoCheck::new(400).similarity(&echo), 0.0, "nothing sent, nothing to match");
    }
}
