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
//!
//! The VAD hears the caller late: after the jitter buffer's playout delay, the
//! rest of its 32 ms chunk, and the chunk or two Silero takes to rise over the
//! threshold (`switchboard bench-barge-in` breaks the time down). So there is
//! a stage 0, the **onset gate**: each caller packet as it arrives, before the
//! jitter buffer, gets its echo verdict there, and a packet at least
//! `onset_dbfs` loud that is not echo, after one that was quiet or echo, pauses
//! the agent at once (`Pause`). The VAD then confirms it (speech: the pause
//! goes on to the commit as above) or not (`resume_ms` of no speech resumes,
//! and the gate rests for `GATE_REST_MS`, so a clicking line cannot hold the
//! agent). The gate only pauses: stopping for good still takes the VAD's
//! `commit_ms` of speech.

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
    /// A caller packet this loud (RMS, dBFS) that is not echo pauses the agent as it arrives,
    /// before the VAD hears it (the onset gate); 0 turns the gate off.
    pub onset_dbfs: f32,
}

impl Default for BargeInConfig {
    /// The config's defaults (`config::BargeInSettings`, where their tuning is written down).
    fn default() -> Self {
        crate::config::BargeInSettings::default().decision()
    }
}

/// After a gate pause the VAD did not confirm, the gate rests this long (caller audio time).
pub const GATE_REST_MS: u64 = 2000;

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
    Onset {
        start: u64,
    },
    /// The onset gate paused the agent at caller time `since`; the VAD has not confirmed speech yet.
    Gated {
        since: u64,
    },
    /// The agent's audio is held.
    Paused {
        start: u64,
        last_speech: u64,
    },
    /// Committed: the rest of this caller utterance is the caller's turn, not another barge-in.
    Committed {
        last_speech: u64,
    },
}

#[derive(Debug, Clone)]
pub struct BargeIn {
    cfg: BargeInConfig,
    state: State,
    /// The onset gate rests until this caller time (after a pause the VAD did not confirm).
    gate_rest_until: u64,
}

impl BargeIn {
    pub fn new(cfg: BargeInConfig) -> BargeIn {
        BargeIn { cfg, state: State::Idle, gate_rest_until: 0 }
    }

    pub fn is_paused(&self) -> bool {
        matches!(self.state, State::Paused { .. } | State::Gated { .. })
    }

    /// The onset gate saw a loud caller packet that is not echo arrive while the agent talks; `at_ms`
    /// is the caller audio time played out so far (the packet plays after it). Pauses unless already
    /// paused or committed, or the gate is resting.
    pub fn gate(&mut self, at_ms: u64) -> Option<BargeAction> {
        match self.state {
            State::Idle | State::Onset { .. } if at_ms >= self.gate_rest_until => {
                self.state = State::Gated { since: at_ms };
                Some(BargeAction::Pause { onset_ms: at_ms })
            }
            _ => None,
        }
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
            State::Gated { since } => {
                if speech {
                    // Confirmed: from here on it is a pause like any other (already in effect).
                    self.state = State::Paused { start: start_ms, last_speech: end_ms };
                    if end_ms - start_ms >= self.cfg.commit_ms {
                        self.state = State::Committed { last_speech: end_ms };
                        return Some(BargeAction::Commit { onset_ms: start_ms });
                    }
                } else if end_ms >= since + self.cfg.resume_ms {
                    self.state = State::Idle;
                    self.gate_rest_until = end_ms + GATE_REST_MS;
                    return Some(BargeAction::Resume);
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

/// Barge-in for one call, between the media loop and the decision. Each caller packet gets its
/// echo verdict as it arrives (before the jitter buffer), where the onset gate also looks at it;
/// each played-out caller frame takes its packet's verdict; each VAD chunk (which spans several
/// frames and comes back later) gets a decision, taking the chunk for echo when any of its frames
/// was.
#[derive(Debug, Clone)]
pub struct BargeInTracker {
    decide: BargeIn,
    echo: super::echo_check::EchoCheck,
    /// Echo verdicts of the packets that arrived, by RTP timestamp, newest last.
    arrived: std::collections::VecDeque<(u32, bool)>,
    /// Recent caller frames played out: (first sample, samples, echo).
    frames: std::collections::VecDeque<(u64, u64, bool)>,
    /// The last packet that arrived was at least the gate's level and not echo.
    loud: bool,
    /// The gate's level as a 16-bit RMS (None: no gate).
    gate_rms: Option<f32>,
}

impl BargeInTracker {
    pub fn new(cfg: BargeInConfig, echo_max_delay_ms: u64) -> BargeInTracker {
        let echo = super::echo_check::EchoCheck::new(echo_max_delay_ms, cfg.echo_ncc, cfg.echo_return_loss_db);
        let gate_rms = (cfg.onset_dbfs < 0.0).then(|| 32768.0 * 10f32.powf(cfg.onset_dbfs / 20.0));
        BargeInTracker {
            decide: BargeIn::new(cfg),
            echo,
            arrived: std::collections::VecDeque::new(),
            frames: std::collections::VecDeque::new(),
            loud: false,
            gate_rms,
        }
    }

    /// An agent frame as it leaves on the wire (silence fill too: it keeps the echo timeline).
    pub fn agent_sent(&mut self, pcm: &[i16]) {
        self.echo.sent(pcm);
    }

    /// A caller packet as it arrives, decoded (16 kHz), in arrival order, before the jitter buffer:
    /// its echo verdict (kept for when it plays out), and the onset gate. `talking`: the agent has
    /// audio queued or held (only then is there an echo to fear and a correlation to pay for);
    /// `played_ms`: the caller audio played out so far. A `Pause` must stop the agent's next frame.
    pub fn caller_arrived(
        &mut self,
        timestamp: u32,
        pcm: &[i16],
        talking: bool,
        played_ms: u64,
    ) -> Option<BargeAction> {
        let echo = talking && self.echo.check(pcm).echo;
        self.arrived.push_back((timestamp, echo));
        while self.arrived.len() > 64 {
            self.arrived.pop_front();
        }
        let loud = self.gate_rms.is_some_and(|g| rms(pcm) >= g) && !echo;
        let rise = loud && !self.loud;
        self.loud = loud;
        if rise && talking {
            return self.decide.gate(played_ms);
        }
        None
    }

    /// A caller frame of `samples` (16 kHz) played out at caller sample `at`: the packet with RTP
    /// `timestamp`, or concealment (None), which takes the verdict of the frame before it.
    pub fn caller_frame(&mut self, at: u64, samples: u64, timestamp: Option<u32>) {
        let last = self.frames.back().is_some_and(|f| f.2);
        let echo = match timestamp {
            Some(ts) => self.arrived.iter().rev().find(|a| a.0 == ts).is_some_and(|a| a.1),
            None => last,
        };
        self.frames.push_back((at, samples, echo));
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

fn rms(pcm: &[i16]) -> f32 {
    (pcm.iter().map(|&s| (s as f32) * (s as f32)).sum::<f32>() / pcm.len().max(1) as f32).sqrt()
}

/// The barge-in settings of an agent as the decision's.
impl crate::config::BargeInSettings {
    pub fn decision(&self) -> BargeInConfig {
        BargeInConfig {
            threshold: self.threshold,
            pause_ms: self.pause_ms.get(),
            commit_ms: self.commit_ms.get(),
            resume_ms: self.resume_ms.get(),
            echo_ncc: self.echo_ncc,
            echo_return_loss_db: self.echo_return_loss_db,
            onset_dbfs: self.onset_dbfs,
        }
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
        assert_eq!(
            got,
            vec![(384, BargeAction::Pause { onset_ms: 320 }), (800, BargeAction::Commit { onset_ms: 320 })]
        );
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
    fn the_onset_gate_pauses_at_once_and_the_vad_confirms_it_or_resumes() {
        // Confirmed: the gate's pause at 300 ms (caller time) holds; VAD speech from the chunk at 320
        // commits after commit_ms of it, from the VAD's onset, with no second pause.
        let mut b = BargeIn::new(cfg());
        assert_eq!(b.gate(300), Some(BargeAction::Pause { onset_ms: 300 }));
        assert!(b.is_paused());
        assert_eq!(b.gate(310), None, "already paused");
        let mut p = quiet(10);
        p.extend(speech(20));
        assert_eq!(run(&mut b, &p), vec![(800, BargeAction::Commit { onset_ms: 320 })]);
        assert_eq!(b.gate(900), None, "committed: the caller's turn");

        // Not confirmed (a cough the VAD does not call speech): resumes resume_ms after the gate…
        let mut b = BargeIn::new(cfg());
        assert!(b.gate(100).is_some());
        let got = run(&mut b, &quiet(20));
        assert_eq!(got, vec![(448, BargeAction::Resume)], "the chunk ending at >= 100 + 320 ms");
        // …and the gate rests GATE_REST_MS: a clicking line cannot keep the agent quiet.
        assert_eq!(b.gate(1000), None);
        assert_eq!(b.gate(448 + GATE_REST_MS), Some(BargeAction::Pause { onset_ms: 448 + GATE_REST_MS }));
        // The VAD's own pause still works while the gate rests.
        let mut b = BargeIn::new(cfg());
        b.gate(0);
        run(&mut b, &quiet(20));
        let mut p = quiet(20);
        p.extend(speech(3));
        assert_eq!(run(&mut b, &p), vec![(704, BargeAction::Pause { onset_ms: 640 })]);
    }

    #[test]
    fn the_tracker_gates_on_arrival_but_not_on_echo_and_plays_out_the_arrival_verdicts() {
        use crate::call::echo_check::tests::voice;
        let agent = voice(48000, 1);
        let caller = voice(48000, 7);
        let mut t = BargeInTracker::new(BargeInConfig::default(), 400);
        let echo = |i: usize| -> Vec<i16> {
            (0..320).map(|k| (i * 320 + k).checked_sub(960).map_or(0, |a| (agent[a] as f32 * 0.316) as i16)).collect()
        };
        // 1.5 s of the agent's echo at −10 dB after 60 ms: loud enough for the gate, but echo.
        for i in 0..75 {
            t.agent_sent(&agent[i * 320..(i + 1) * 320]);
            assert_eq!(t.caller_arrived(i as u32 * 160, &echo(i), true, i as u64 * 20), None, "frame {i}");
        }
        // Played out 40 ms later, the frames take the verdicts they got on arrival.
        for i in 0..73 {
            t.caller_frame(i * 320, 320, Some(i as u32 * 160));
        }
        let echo_ms = (100..1400).step_by(32).filter(|&ms| t.echo_in(ms, ms + 32)).count();
        assert!(echo_ms >= 38, "{echo_ms} of 41 chunks are echo");
        // The caller starts talking over it: the first loud frame pauses at once, once.
        let mut actions = Vec::new();
        for i in 75..100 {
            t.agent_sent(&agent[i * 320..(i + 1) * 320]);
            let frame: Vec<i16> = echo(i).iter().zip(&caller[i * 320..]).map(|(&e, &c)| e.saturating_add(c)).collect();
            actions.extend(t.caller_arrived(i as u32 * 160, &frame, true, 1460).map(|a| (i, a)));
        }
        assert_eq!(actions, vec![(75, BargeAction::Pause { onset_ms: 1460 })]);
        assert!(t.is_paused());
        // Nothing is gated while the agent is silent, nor with the gate off.
        let mut quiet = BargeInTracker::new(BargeInConfig::default(), 400);
        assert_eq!(quiet.caller_arrived(0, &caller[..320], false, 0), None);
        let mut off = BargeInTracker::new(BargeInConfig { onset_dbfs: 0.0, ..Default::default() }, 400);
        off.agent_sent(&agent[..320]);
        assert_eq!(off.caller_arrived(0, &caller[..320], true, 0), None);
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
