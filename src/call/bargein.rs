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
//! chunks that are the agent's own voice coming back (`echo_check`) do not
//! count as speech, and the probability threshold is higher than for turn
//! detection.

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
    /// Caller audio correlated at least this much with the agent's recent audio is echo…
    pub echo_ncc: f32,
    /// …if it is at least this much quieter than the agent (the echo path's least loss, dB).
    pub echo_return_loss_db: f32,
}

impl Default for BargeInConfig {
    fn default() -> Self {
        // Tuned on `switchboard bench-barge-in` (the README has the figures): one VAD chunk of
        // speech pauses (p50 ~100 ms on the wire); 640 ms keeps "mm-hmm" a back-channel; 400 ms of
        // quiet bridges the comma pause of "Sorry, can I stop you there?".
        BargeInConfig { threshold: 0.6, pause_ms: 32, commit_ms: 640, resume_ms: 400, echo_ncc: 0.55, echo_return_loss_db: 6.0 }
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

/// Barge-in for one call, between the media loop and the decision: each caller frame gets its echo
/// verdict as it arrives, each VAD chunk (which spans several frames and comes back later) a
/// decision, taking the chunk for echo when any of its frames was.
#[derive(Debug, Clone)]
pub struct BargeInTracker {
    decide: BargeIn,
    echo: super::echo_check::EchoCheck,
    /// Recent caller frames: (first sample, samples, echo).
    frames: std::collections::VecDeque<(u64, u64, bool)>,
}

impl BargeInTracker {
    pub fn new(cfg: BargeInConfig, echo_max_delay_ms: u64) -> BargeInTracker {
        let echo = super::echo_check::EchoCheck::new(echo_max_delay_ms, cfg.echo_ncc, cfg.echo_return_loss_db);
        BargeInTracker { decide: BargeIn::new(cfg), echo, frames: std::collections::VecDeque::new() }
    }

    /// An agent frame as it leaves on the wire (silence fill too: it keeps the echo timeline).
    pub fn agent_sent(&mut self, pcm: &[i16]) {
        self.echo.sent(pcm);
    }

    /// A caller frame (16 kHz) starting at caller sample `at`; `talking`: the agent has audio queued
    /// or held. Only then is there an echo to fear (and a correlation to pay for).
    pub fn caller_frame(&mut self, at: u64, pcm: &[i16], talking: bool) {
        let echo = talking && self.echo.check(pcm).echo;
        self.frames.push_back((at, pcm.len() as u64, echo));
        while self.frames.len() > 200 {
            self.frames.pop_front();
        }
    }

    /// The VAD's probability for caller audio [start_ms, end_ms).
    pub fn vad_chunk(&mut self, p: f32, start_ms: u64, end_ms: u64, talking: bool) -> Option<BargeAction> {
        let echo = self.echo_in(start_ms, end_ms);
        self.decide.push(p, start_ms, end_ms, talking, echo)
    }

    pub fn is_paused(&self) -> bool {
        self.decide.is_paused()
    }

    /// Was any caller frame under [start_ms, end_ms) the agent's echo?
    pub fn echo_in(&self, start_ms: u64, end_ms: u64) -> bool {
        let (s0, s1) = (start_ms * 16, end_ms * 16);
        self.frames.iter().any(|&(at, n, e)| e && at < s1 && at + n > s0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 32;

    /// Fixed numbers for these tests (the defaults are tuned by `bench-barge-in`).
    fn cfg() -> BargeInConfig {
        BargeInConfig { pause_ms: 64, commit_ms: 480, resume_ms: 320, ..Default::default() }
    }

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
        let mut b = BargeIn::new(cfg());
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
            let mut b = BargeIn::new(cfg());
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
        let mut b = BargeIn::new(cfg());
        let mut p = quiet(5);
        p.push((0.95, true, false)); // one 32 ms chunk: below pause_ms
        p.extend(quiet(5));
        p.extend(vec![(0.95, false, false); 40]); // the caller talks, the agent does not
        assert!(run(&mut b, &p).is_empty());
    }

    #[test]
    fn echo_and_weak_speech_do_not_count() {
        let mut b = BargeIn::new(cfg());
        let mut p = vec![(0.95, true, true); 40]; // the agent's own voice, recognised as echo
        p.extend(vec![(0.55, true, false); 40]); // below the barge-in threshold (turn detection's is 0.5)
        assert!(run(&mut b, &p).is_empty());
    }

    #[test]
    fn speech_through_short_gaps_still_commits() {
        let mut b = BargeIn::new(cfg());
        let mut p = speech(4);
        p.extend(quiet(3)); // 96 ms gap < resume_ms
        p.extend(speech(12));
        let got = run(&mut b, &p);
        assert_eq!(got.first().map(|g| g.1), Some(BargeAction::Pause { onset_ms: 0 }));
        assert_eq!(got.last().map(|g| g.1), Some(BargeAction::Commit { onset_ms: 0 }));
    }
}
