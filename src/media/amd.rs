//! Answering-machine detection (AMD) for outbound calls.
//!
//! After the callee answers, [`Amd`] listens to their decoded audio (mono
//! PCM, normally 16 kHz, any frame length) and decides once whether a person
//! or a voicemail system picked up; it also reports every beep it hears, so
//! that after a `Machine` decision the agent can wait for the tone and then
//! leave its message. Sans-IO: time is the number of samples pushed, there is
//! no clock, and the same audio always gives the same events.
//!
//! # Rules
//!
//! The pattern is the one of Asterisk's `AMD()` application (app_amd.c): a
//! person answers with a short greeting ("Hello?") and then waits for us, a
//! machine plays a long greeting without waiting. In order of precedence:
//!
//! 1. a **beep** heard before any decision → `Machine`, reason `"beep"`
//!    (decided when the tone ends, see below);
//! 2. the **greeting** (from the first word's start, bridging every gap
//!    shorter than `after_greeting_silence_ms`; a burst under
//!    `min_word_ms`, a click, starts none) is still going on past
//!    `greeting_max_ms` → `Machine`, reason `"long greeting"`;
//! 3. a greeting of at most `greeting_max_ms` followed by
//!    `after_greeting_silence_ms` of silence → `Human`, reason
//!    `"short greeting"`;
//! 4. nothing but silence for `initial_silence_ms` → `Human`, reason
//!    `"silence"`. Asterisk says MACHINE here; we do not, because a person
//!    answering a robocall often waits silently for the caller to speak,
//!    and a silent voicemail still gets its beep reported (rule 1, or a
//!    [`AmdEvent::Beep`] after the decision);
//! 5. nothing decided after `total_analysis_ms` → `Human`, reason
//!    `"timeout"`.
//!
//! `Human` is the safe side everywhere: it means "talk", and talking to a
//! voicemail costs a message, while hanging up on a person costs the call.
//!
//! Unlike Asterisk we do not count words (a fixed "three words = machine"
//! cuts off people who answer "Hello, this is Anna speaking"); the length of
//! the greeting decides. A voicemail whose first sentence is short and
//! followed by a pause longer than `after_greeting_silence_ms` reads as a
//! person: that is the known blind spot of this pattern, here as in Asterisk.
//!
//! # Speech and silence
//!
//! Each 10 ms block's energy (after a DC/hum high-pass) is compared with an
//! adaptive noise floor: the floor falls at once to a quieter block, rises by
//! [`FLOOR_RISE_DB_PER_S`] otherwise, and jumps to the level of a stationary
//! background (400 ms whose block energies stay within 6 dB: noise, hum —
//! speech always varies more than that). A block is speech when it is
//! `speech_snr_db` above the floor and above `speech_threshold_dbfs`. A tonal
//! block (see below) is not speech: a beep must not read as a greeting.
//!
//! # Beeps
//!
//! A beep is a steady pure tone of `beep_min_hz..=beep_max_hz` lasting
//! `beep_min_ms..=beep_max_ms`. Every 10 ms, the last 20 ms are analysed:
//!
//! * the frequency comes from the upward zero crossings (each armed by a dip
//!   below −0.3 RMS, so that noise around zero adds none), their
//!   interpolated times fitted to a line: weak harmonics and noise move the
//!   crossings a little but not their rhythm. (A two-tap linear predictor or
//!   short-lag autocorrelation fit is cheaper still, but a harmonic 20 dB
//!   down pulls it tens of Hz off, and the purity test then misses the
//!   tone). Crossings that stray from a steady rhythm by more than 5 % of a
//!   period reject the window at once: that spares most windows of speech
//!   the next step;
//! * the purity is the share of the window's energy at that frequency (a
//!   Goertzel filter at ω): a pure tone scores about 1, voiced speech — a
//!   comb of harmonics under moving formants — spreads its energy over
//!   several harmonics and scores well below `beep_min_purity`;
//! * consecutive pure windows form one tone only while their frequency stays
//!   within `beep_freq_tolerance_hz` of the tone's mean: a pitch glide or a
//!   vowel's moving harmonic breaks the tone long before `beep_min_ms`.
//!
//! The tone may drop out for up to [`TONE_MAX_MISSES`] windows (a lost
//! packet) and continue. It is reported when it ends — that is when leaving a
//! message should start — about 50 ms after its last tonal window, with
//! `at_ms` the end of the tone itself. Its measured duration is within
//! 20 ms of the real one (a window counts when ≥ 95 % of it is tone).
//!
//! A call-progress tone played in-band after the answer (a forwarded call's
//! 425 Hz European ringback, 1 s on) is a pure steady tone too and reads as
//! a beep; nothing in one tone tells them apart.
//!
//! Cost: a few operations per sample (energy, zero crossings, and one
//! Goertzel pass over each 20 ms window, so each sample twice); no FFT, no
//! model.

/// The reasons [`AmdDecision`] carries.
pub mod reason {
    /// A greeting no longer than `greeting_max_ms`, then silence.
    pub const SHORT_GREETING: &str = "short greeting";
    /// Nothing heard for `initial_silence_ms`.
    pub const SILENCE: &str = "silence";
    /// Nothing decided within `total_analysis_ms`.
    pub const TIMEOUT: &str = "timeout";
    /// A greeting longer than `greeting_max_ms`.
    pub const LONG_GREETING: &str = "long greeting";
    /// A beep before any other decision.
    pub const BEEP: &str = "beep";
}

/// Thresholds of the detector. All times are in milliseconds of audio.
#[derive(Debug, Clone, PartialEq)]
pub struct AmdConfig {
    /// Silence before any speech after which we stop waiting and decide
    /// `Human` ("silence"): a person who answers without a word is waiting
    /// for us.
    pub initial_silence_ms: u32,
    /// The longest greeting a person gives. Longer speech without a pause of
    /// `after_greeting_silence_ms` is a machine.
    pub greeting_max_ms: u32,
    /// Silence after a short greeting that means a person waiting for us.
    pub after_greeting_silence_ms: u32,
    /// Give up analysing and decide `Human` ("timeout") at this time.
    pub total_analysis_ms: u32,
    /// Speech shorter than this (a click, a breath) does not start a
    /// greeting, unless more speech follows within [`WORD_GAP_MS`].
    pub min_word_ms: u32,
    /// Absolute energy gate (dBFS: RMS relative to a full-scale square
    /// wave, so a full-scale sine is −3 dBFS): quieter audio is never speech
    /// nor tone, whatever the noise floor.
    pub speech_threshold_dbfs: f32,
    /// How far above the adaptive noise floor a block must be to be speech.
    pub speech_snr_db: f32,
    /// Shortest tone reported as a beep.
    pub beep_min_ms: u32,
    /// Longest tone reported as a beep (a longer one is a dial tone, hum, a
    /// fax answer tone…).
    pub beep_max_ms: u32,
    /// Frequency band of beeps.
    pub beep_min_hz: f32,
    pub beep_max_hz: f32,
    /// Share of a 20 ms window's energy that must sit at the tone's frequency.
    pub beep_min_purity: f32,
    /// How far a window's frequency may be from the tone's mean.
    pub beep_freq_tolerance_hz: f32,
}

impl Default for AmdConfig {
    /// * 800 ms after-greeting silence and 100 ms minimum word: Asterisk's
    ///   defaults, long enough to bridge the pauses between words and at a
    ///   comma, short enough that a person's "Hello?" is answered in time.
    /// * 2500 ms greeting: a person's "Hello?" or "Hi, this is Anna
    ///   speaking." takes 0.5–2 s; voicemail greetings run 4–10 s. The margin
    ///   goes to the human side (Asterisk's 1500 ms hangs up on people who
    ///   say their name).
    /// * 3500 ms initial silence, 5000 ms total: a person who answers
    ///   silently hears us within a few seconds; a silent voicemail usually
    ///   beeps before (and is reported when it does, decision or not).
    /// * −45 dBFS and 10 dB above the floor: telephone speech sits around
    ///   −20 to −30 dBFS, and a line's background below −50 dBFS.
    /// * Beeps: 120 ms to 4 s, 300–3000 Hz, ≥ 95 % pure, ±5 Hz: voicemail
    ///   beeps are 0.2–1 s sine tones of 400–2000 Hz. Over 12 minutes of
    ///   Piper's and people's speech (tests/amd.rs, through G.711, noise and
    ///   loss) nothing passed these tests for longer than 20 ms; at 90 % and
    ///   ±10 Hz a low voice's vowel passed for 100 ms. A tone passes from
    ///   about 11 dB above white noise.
    fn default() -> Self {
        AmdConfig {
            initial_silence_ms: 3500,
            greeting_max_ms: 2500,
            after_greeting_silence_ms: 800,
            total_analysis_ms: 5000,
            min_word_ms: 100,
            speech_threshold_dbfs: -45.0,
            speech_snr_db: 10.0,
            beep_min_ms: 120,
            beep_max_ms: 4000,
            beep_min_hz: 300.0,
            beep_max_hz: 3000.0,
            beep_min_purity: 0.95,
            beep_freq_tolerance_hz: 5.0,
        }
    }
}

/// Who answered, decided once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmdDecision {
    /// Talk: a person (or nothing we could tell from one).
    Human { after_ms: u32, reason: &'static str },
    /// A voicemail system: wait for the beep, or hang up.
    Machine { after_ms: u32, reason: &'static str },
}

impl AmdDecision {
    pub fn is_machine(&self) -> bool {
        matches!(self, AmdDecision::Machine { .. })
    }
    /// When it was decided, in ms of audio since the first sample pushed.
    pub fn after_ms(&self) -> u32 {
        match *self {
            AmdDecision::Human { after_ms, .. } | AmdDecision::Machine { after_ms, .. } => after_ms,
        }
    }
    /// One of the [`reason`] constants.
    pub fn reason(&self) -> &'static str {
        match *self {
            AmdDecision::Human { reason, .. } | AmdDecision::Machine { reason, .. } => reason,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AmdEvent {
    /// The decision, emitted once.
    Decided(AmdDecision),
    /// A beep that has just ended at `at_ms` (before or after the decision).
    Beep { at_ms: u32, freq_hz: f32, duration_ms: u32 },
}

/// Analysis block: 10 ms. Decisions and tone edges fall on its boundaries.
const BLOCK_MS: u32 = 10;
/// The tone analysis window: the last two blocks.
const WINDOW_BLOCKS: usize = 2;
/// Zero crossings count after a dip below this share of the window's RMS
/// (a tone dips to −1.41 RMS; noise at 20 dB below it rarely to −0.3).
const ZC_HYSTERESIS: f64 = 0.3;
/// The most the crossings of a tone stray from a steady rhythm (RMS, share of
/// a period): noise 20 dB below a tone moves them by about 1 %.
const ZC_MAX_JITTER: f64 = 0.05;
/// Speech bursts of less than `min_word_ms` followed by this much silence
/// were a click, not the start of a greeting.
pub const WORD_GAP_MS: u32 = 300;
/// Non-tonal windows bridged inside a tone (a lost packet, a click).
pub const TONE_MAX_MISSES: u32 = 4;
/// The noise floor's slow rise while the signal stays above it.
pub const FLOOR_RISE_DB_PER_S: f32 = 1.0;
/// Blocks (400 ms) and spread (dB) of a stationary background.
const STATIONARY_BLOCKS: usize = 40;
const STATIONARY_SPREAD_DB: f32 = 6.0;
/// Energy of digital silence, so that logs and the floor stay finite.
const MIN_DBFS: f32 = -100.0;
/// The DC/hum blocker's corner: below every beep and the voice's fundamental.
const HIGH_PASS_HZ: f64 = 60.0;

/// A greeting in progress (or a burst that may become one).
#[derive(Debug, Clone, Copy)]
struct Greeting {
    onset_ms: u32,
    /// Speech time in it (gaps excluded).
    voiced_ms: u32,
    /// End of its last speech block.
    last_speech_ms: u32,
    /// It has `min_word_ms` of speech: a real greeting, not a click.
    confirmed: bool,
}

/// A tone being followed.
#[derive(Debug, Clone, Copy)]
struct Tone {
    start_ms: u32,
    end_ms: u32,
    freq_sum: f64,
    windows: u32,
    misses: u32,
}

impl Tone {
    fn mean_hz(&self) -> f64 {
        self.freq_sum / f64::from(self.windows)
    }
}

/// The detector for one call. See the module documentation.
#[derive(Debug, Clone)]
pub struct Amd {
    cfg: AmdConfig,
    rate: u32,
    block: usize,
    /// Samples of an incomplete block.
    pending: Vec<i16>,
    /// Samples analysed (whole blocks).
    samples: u64,
    blocks: u64,
    /// High-pass filter state.
    hp_r: f64,
    hp_x1: f64,
    hp_y1: f64,
    /// Σx² of the previous block: the window (`WINDOW_BLOCKS` = 2) holds it
    /// and the current one.
    last_energy: f64,
    /// The last `WINDOW_BLOCKS` blocks, high-passed and scaled to ±1.
    window: Vec<f64>,
    floor_db: f32,
    /// Recent non-tonal block energies (ring) for the stationarity test.
    recent: [f32; STATIONARY_BLOCKS],
    recent_len: usize,
    recent_at: usize,
    greeting: Option<Greeting>,
    tone: Option<Tone>,
    decision: Option<AmdDecision>,
}

impl Amd {
    /// A detector for mono PCM at `sample_rate` (16 kHz on calls; 8 kHz
    /// works the same).
    ///
    /// # Panics
    /// If `sample_rate` is below 1000 Hz.
    pub fn new(cfg: AmdConfig, sample_rate: u32) -> Amd {
        assert!(sample_rate >= 1000, "AMD sample rate {sample_rate} Hz is too low");
        let block = (sample_rate / (1000 / BLOCK_MS)) as usize;
        Amd {
            cfg,
            rate: sample_rate,
            block,
            pending: Vec::with_capacity(block),
            samples: 0,
            blocks: 0,
            hp_r: (-2.0 * std::f64::consts::PI * HIGH_PASS_HZ / f64::from(sample_rate)).exp(),
            hp_x1: 0.0,
            hp_y1: 0.0,
            last_energy: 0.0,
            window: vec![0.0; WINDOW_BLOCKS * block],
            floor_db: MIN_DBFS,
            recent: [0.0; STATIONARY_BLOCKS],
            recent_len: 0,
            recent_at: 0,
            greeting: None,
            tone: None,
            decision: None,
        }
    }

    /// Feeds the callee's audio (any length; an incomplete 10 ms block
    /// waits for the next call); returns what it completed, in order: the
    /// decision (once) and beeps (each when it ends). When a beep decides,
    /// `Decided` comes first.
    pub fn push(&mut self, pcm: &[i16]) -> Vec<AmdEvent> {
        let mut events = Vec::new();
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = (self.block - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == self.block {
                self.process_block(&mut events);
                self.pending.clear();
            }
        }
        events
    }

    /// The decision, once made.
    pub fn decision(&self) -> Option<AmdDecision> {
        self.decision
    }

    /// Audio analysed so far (whole 10 ms blocks), in ms.
    pub fn elapsed_ms(&self) -> u32 {
        self.ms(self.samples)
    }

    /// The adaptive noise floor, dBFS (for logs and tuning).
    pub fn noise_floor_dbfs(&self) -> f32 {
        self.floor_db
    }

    pub fn config(&self) -> &AmdConfig {
        &self.cfg
    }

    fn ms(&self, samples: u64) -> u32 {
        u32::try_from(samples * 1000 / u64::from(self.rate)).unwrap_or(u32::MAX)
    }

    fn process_block(&mut self, events: &mut Vec<AmdEvent>) {
        let start_ms = self.ms(self.samples);
        self.samples += self.block as u64;
        self.blocks += 1;
        let end_ms = self.ms(self.samples);

        // High-pass the block into the end of the window.
        let n = self.window.len();
        self.window.copy_within(self.block.., 0);
        let mut energy = 0.0;
        // The filter state in locals: through `self` every sample would wait
        // on a store and a reload.
        let (r, mut x1, mut y1) = (self.hp_r, self.hp_x1, self.hp_y1);
        for (out, &s) in self.window[n - self.block..].iter_mut().zip(&self.pending) {
            let x = f64::from(s) / 32768.0;
            let y = x - x1 + r * y1;
            x1 = x;
            y1 = y;
            *out = y;
            energy += y * y;
        }
        (self.hp_x1, self.hp_y1) = (x1, y1);
        let e_db = to_db(energy / self.block as f64);
        let window_energy = energy + std::mem::replace(&mut self.last_energy, energy);

        let tonal = self.follow_tone(window_energy, end_ms, events);
        if !tonal && self.track_floor(e_db) {
            // A "greeting" that began inside the stationary stretch was the
            // background itself (a noisy line heard before the floor rose).
            let stretch_start = end_ms.saturating_sub(BLOCK_MS * (STATIONARY_BLOCKS as u32 + 1));
            if self.greeting.is_some_and(|g| g.onset_ms >= stretch_start) {
                self.greeting = None;
            }
        }
        if self.decision.is_some() {
            return;
        }
        let speech = !tonal && e_db > self.cfg.speech_threshold_dbfs && e_db > self.floor_db + self.cfg.speech_snr_db;
        self.follow_greeting(speech, start_ms, end_ms, events);
        if self.decision.is_none() {
            let quiet = self.greeting.is_none() && self.tone.is_none();
            if quiet && end_ms >= self.cfg.initial_silence_ms {
                self.decide(AmdDecision::Human { after_ms: end_ms, reason: reason::SILENCE }, events);
            } else if end_ms >= self.cfg.total_analysis_ms {
                self.decide(AmdDecision::Human { after_ms: end_ms, reason: reason::TIMEOUT }, events);
            }
        }
    }

    fn decide(&mut self, d: AmdDecision, events: &mut Vec<AmdEvent>) {
        if self.decision.is_none() {
            self.decision = Some(d);
            events.push(AmdEvent::Decided(d));
        }
    }

    /// The noise floor: down at once, up slowly, or to a stationary
    /// background's level. True when the last 400 ms were stationary.
    fn track_floor(&mut self, e_db: f32) -> bool {
        let block_s = self.block as f32 / self.rate as f32;
        if e_db < self.floor_db {
            self.floor_db += 0.5 * (e_db - self.floor_db);
        } else {
            self.floor_db += FLOOR_RISE_DB_PER_S * block_s;
        }
        self.recent[self.recent_at] = e_db;
        self.recent_at = (self.recent_at + 1) % STATIONARY_BLOCKS;
        self.recent_len = (self.recent_len + 1).min(STATIONARY_BLOCKS);
        if self.recent_len == STATIONARY_BLOCKS {
            let (lo, hi, sum) =
                self.recent.iter().fold((f32::MAX, f32::MIN, 0.0), |(lo, hi, sum), &e| (lo.min(e), hi.max(e), sum + e));
            // 3 dB under the mean: a stationary background's blocks spread
            // a few dB around it, and the floor is its quiet side.
            let level = sum / STATIONARY_BLOCKS as f32 - 3.0;
            if hi - lo <= STATIONARY_SPREAD_DB {
                if level > self.floor_db {
                    self.floor_db += 0.2 * (level - self.floor_db);
                }
                return true;
            }
        }
        false
    }

    fn follow_greeting(&mut self, speech: bool, start_ms: u32, end_ms: u32, events: &mut Vec<AmdEvent>) {
        let cfg = &self.cfg;
        if speech {
            let g = self.greeting.get_or_insert(Greeting {
                onset_ms: start_ms,
                voiced_ms: 0,
                last_speech_ms: start_ms,
                confirmed: false,
            });
            g.voiced_ms += end_ms - start_ms;
            g.last_speech_ms = end_ms;
            g.confirmed |= g.voiced_ms >= cfg.min_word_ms;
            if g.confirmed && end_ms - g.onset_ms > cfg.greeting_max_ms {
                let d = AmdDecision::Machine { after_ms: end_ms, reason: reason::LONG_GREETING };
                self.decide(d, events);
            }
        } else if let Some(g) = self.greeting {
            let gap = end_ms - g.last_speech_ms;
            if !g.confirmed && gap >= WORD_GAP_MS {
                self.greeting = None;
            } else if g.confirmed && gap >= cfg.after_greeting_silence_ms {
                // Rule 2 would have fired on a longer greeting.
                self.decide(AmdDecision::Human { after_ms: end_ms, reason: reason::SHORT_GREETING }, events);
            }
        }
    }

    /// Analyses the last window, extends or ends the current tone (reporting
    /// a beep, and deciding `Machine` on it), and says whether this block
    /// belongs to a tone.
    fn follow_tone(&mut self, energy: f64, end_ms: u32, events: &mut Vec<AmdEvent>) -> bool {
        if self.blocks < WINDOW_BLOCKS as u64 {
            return false;
        }
        let found = self.pure_tone(energy);
        let window_ms = self.ms((WINDOW_BLOCKS * self.block) as u64);
        let tol = f64::from(self.cfg.beep_freq_tolerance_hz);
        match (self.tone.as_mut(), found) {
            (Some(t), Some(f)) if (f - t.mean_hz()).abs() <= tol => {
                t.end_ms = end_ms;
                t.freq_sum += f;
                t.windows += 1;
                t.misses = 0;
                return true;
            }
            (Some(t), None) if t.misses < TONE_MAX_MISSES => {
                t.misses += 1;
                return false;
            }
            _ => {}
        }
        // The tone (if any) is over; a pure window of another frequency
        // starts the next one.
        if let Some(t) = self.tone.take() {
            let duration_ms = t.end_ms - t.start_ms;
            if (self.cfg.beep_min_ms..=self.cfg.beep_max_ms).contains(&duration_ms) {
                self.decide(AmdDecision::Machine { after_ms: end_ms, reason: reason::BEEP }, events);
                events.push(AmdEvent::Beep { at_ms: t.end_ms, freq_hz: t.mean_hz() as f32, duration_ms });
            }
        }
        if let Some(f) = found {
            self.tone =
                Some(Tone { start_ms: end_ms.saturating_sub(window_ms), end_ms, freq_sum: f, windows: 1, misses: 0 });
            return true;
        }
        false
    }

    /// The frequency of the current window if it is a pure tone in the beep
    /// band and above the energy gate; `energy` is the window's Σx².
    fn pure_tone(&self, energy: f64) -> Option<f64> {
        let w = &self.window;
        let n = w.len() as f64;
        if to_db(energy / n) <= self.cfg.speech_threshold_dbfs {
            return None;
        }
        // Upward zero crossings, each armed by a dip below −h so that noise
        // around zero does not add crossings; their times (interpolated
        // between samples) are fitted to t = t0 + j·period.
        let h = ZC_HYSTERESIS * (energy / n).sqrt();
        let (mut armed, mut count) = (false, 0.0f64);
        let (mut sj, mut st, mut sjj, mut sjt, mut stt) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for i in 1..w.len() {
            let x = w[i];
            if x < -h {
                armed = true;
            } else if armed && x >= 0.0 {
                let prev = w[i - 1];
                let t = (i - 1) as f64 + -prev / (x - prev);
                sj += count;
                st += t;
                sjj += count * count;
                sjt += count * t;
                stt += t * t;
                count += 1.0;
                armed = false;
            }
        }
        if count < 3.0 {
            return None;
        }
        let var_j = sjj - sj * sj / count;
        let cov = sjt - sj * st / count;
        let period = cov / var_j;
        let freq = f64::from(self.rate) / period;
        if !(f64::from(self.cfg.beep_min_hz)..=f64::from(self.cfg.beep_max_hz)).contains(&freq) {
            return None;
        }
        // A tone's crossings keep time; speech's do not. This cheap test
        // spares the Goertzel pass on nearly every window of speech.
        let jitter = ((stt - st * st / count - cov * period).max(0.0) / count).sqrt();
        if jitter > ZC_MAX_JITTER * period {
            return None;
        }
        // Goertzel at that frequency: |X(ω)|², whose share of the energy is
        // 2|X|²/(N·E) for a real tone.
        let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / f64::from(self.rate)).cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in w {
            let s = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        let purity = 2.0 * power / (n * energy);
        (purity >= f64::from(self.cfg.beep_min_purity)).then_some(freq)
    }
}

fn to_db(mean_square: f64) -> f32 {
    if mean_square <= 1e-10 {
        MIN_DBFS
    } else {
        ((10.0 * mean_square.log10()) as f32).max(MIN_DBFS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16_000;

    fn silence(ms: u32, rate: u32) -> Vec<i16> {
        vec![0; (rate * ms / 1000) as usize]
    }

    fn tone(hz: f64, ms: u32, amp: f64, rate: u32) -> Vec<i16> {
        let n = (rate * ms / 1000) as usize;
        (0..n).map(|i| (amp * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()) as i16).collect()
    }

    /// Deterministic white noise (xorshift), uniform in ±amp.
    fn noise(ms: u32, amp: f64, rate: u32, seed: u64) -> Vec<i16> {
        let mut s = seed | 1;
        (0..(rate * ms / 1000) as usize)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp) as i16
            })
            .collect()
    }

    /// A crude voiced "syllable": a 120–140 Hz gliding pulse train shaped by
    /// a rising-falling envelope — harmonics with a moving pitch, like speech.
    fn syllables(count: usize, syl_ms: u32, gap_ms: u32, rate: u32) -> Vec<i16> {
        let mut out = Vec::new();
        for k in 0..count {
            let n = (rate * syl_ms / 1000) as usize;
            let mut phase = 0.0f64;
            for i in 0..n {
                let t = i as f64 / n as f64;
                let f0 = 120.0 + 20.0 * t + 5.0 * k as f64;
                phase += f0 / f64::from(rate);
                // Sum of harmonics with a formant-ish tilt.
                let mut v = 0.0;
                for h in 1..=20 {
                    let hz = f0 * h as f64;
                    let gain =
                        1.0 / (1.0 + ((hz - 700.0) / 400.0).powi(2)) + 0.3 / (1.0 + ((hz - 1500.0) / 300.0).powi(2));
                    v += gain * (2.0 * std::f64::consts::PI * phase * h as f64).sin();
                }
                let env = (std::f64::consts::PI * t).sin();
                out.push((6000.0 * env * v) as i16);
            }
            out.extend(silence(gap_ms, rate));
        }
        out
    }

    fn run(pcm: &[i16], rate: u32, chunk: usize) -> (Vec<AmdEvent>, Amd) {
        let mut amd = Amd::new(AmdConfig::default(), rate);
        let events = pcm.chunks(chunk).flat_map(|c| amd.push(c)).collect();
        (events, amd)
    }

    fn beeps(events: &[AmdEvent]) -> Vec<(u32, f32, u32)> {
        events
            .iter()
            .filter_map(|e| match *e {
                AmdEvent::Beep { at_ms, freq_hz, duration_ms } => Some((at_ms, freq_hz, duration_ms)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_pure_tone_after_silence_is_a_beep_reported_when_it_ends_and_decides_machine() {
        for rate in [8000, 16_000] {
            for hz in [350.0, 425.0, 850.0, 1000.0, 1400.0, 2900.0] {
                let mut pcm = silence(1000, rate);
                pcm.extend(tone(hz, 500, 8000.0, rate));
                pcm.extend(silence(1000, rate));
                let (events, amd) = run(&pcm, rate, (rate / 50) as usize);
                let b = beeps(&events);
                assert_eq!(b.len(), 1, "{rate} Hz, {hz} Hz tone: {events:?}");
                let (at, f, dur) = b[0];
                assert!((f64::from(f) - hz).abs() < 2.0, "{rate}/{hz}: measured {f} Hz");
                assert!((480..=500).contains(&dur), "{rate}/{hz}: duration {dur}");
                assert!((1480..=1500).contains(&at), "{rate}/{hz}: at {at}");
                let d = amd.decision().unwrap();
                assert_eq!((d.is_machine(), d.reason()), (true, reason::BEEP), "{rate}/{hz}");
                assert!(d.after_ms() <= at + 60, "{d:?}");
            }
        }
    }

    #[test]
    fn a_tone_with_weak_harmonics_and_noise_is_still_a_beep_at_its_frequency() {
        for rate in [8000, 16_000] {
            let n = (rate / 2) as usize;
            let mut pcm = silence(500, rate);
            let hum = noise(500, 300.0, rate, 3);
            pcm.extend((0..n).map(|i| {
                let t = i as f64 / f64::from(rate);
                let w = 2.0 * std::f64::consts::PI * 785.0 * t;
                // 2nd harmonic 20 dB down, 3rd 26 dB down, noise 30 dB down.
                (8000.0 * (w.sin() + 0.1 * (2.0 * w + 0.3).sin() + 0.05 * (3.0 * w).sin())) as i16 + hum[i]
            }));
            pcm.extend(silence(500, rate));
            let (events, _) = run(&pcm, rate, 160);
            let b = beeps(&events);
            assert_eq!(b.len(), 1, "{rate}: {events:?}");
            assert!((b[0].1 - 785.0).abs() < 2.0 && b[0].2 >= 480, "{rate}: {b:?}");
        }
    }

    #[test]
    fn the_events_do_not_depend_on_how_the_audio_is_cut() {
        let mut pcm = syllables(3, 250, 120, RATE);
        pcm.extend(silence(900, RATE));
        pcm.extend(tone(1000.0, 300, 6000.0, RATE));
        pcm.extend(silence(300, RATE));
        let (reference, _) = run(&pcm, RATE, 320);
        assert!(!reference.is_empty());
        for chunk in [1, 7, 160, 333, 1000, pcm.len()] {
            assert_eq!(run(&pcm, RATE, chunk).0, reference, "chunk {chunk}");
        }
    }

    #[test]
    fn short_tones_glides_and_harmonic_sounds_are_not_beeps() {
        // 100 ms: too short.
        let mut pcm = silence(500, RATE);
        pcm.extend(tone(1000.0, 100, 8000.0, RATE));
        // A sweep 500 → 1500 Hz over 400 ms.
        let mut phase = 0.0f64;
        let n = (RATE * 400 / 1000) as usize;
        pcm.extend(silence(300, RATE));
        for i in 0..n {
            phase += (500.0 + 1000.0 * i as f64 / n as f64) / f64::from(RATE);
            pcm.push((8000.0 * (2.0 * std::f64::consts::PI * phase).sin()) as i16);
        }
        // A steady 200 Hz sawtooth-like buzz (harmonics, constant pitch).
        pcm.extend(silence(300, RATE));
        pcm.extend((0..RATE as usize / 2).map(|i| {
            let v: f64 = (1..=10)
                .map(|h| (2.0 * std::f64::consts::PI * 200.0 * h as f64 * i as f64 / f64::from(RATE)).sin() / h as f64)
                .sum();
            (5000.0 * v) as i16
        }));
        pcm.extend(silence(500, RATE));
        pcm.extend(syllables(6, 300, 80, RATE));
        let (events, _) = run(&pcm, RATE, 320);
        assert!(beeps(&events).is_empty(), "{events:?}");
    }

    #[test]
    fn a_tone_through_a_lost_packet_is_one_beep() {
        let mut pcm = silence(300, RATE);
        let mut t = tone(1000.0, 600, 8000.0, RATE);
        // 10 ms dropped to zero in the middle (a concealment gap).
        t[4800..4960].iter_mut().for_each(|s| *s = 0);
        pcm.extend(t);
        pcm.extend(silence(300, RATE));
        let (events, _) = run(&pcm, RATE, 320);
        let b = beeps(&events);
        assert_eq!(b.len(), 1, "{events:?}");
        assert!(b[0].2 >= 580, "{b:?}");
    }

    #[test]
    fn a_short_greeting_then_silence_is_human() {
        let mut pcm = silence(300, RATE);
        pcm.extend(syllables(2, 250, 100, RATE)); // ~0.7 s "Hel-lo?"
        let end = pcm.len() as u32 * 1000 / RATE;
        pcm.extend(silence(3000, RATE));
        let (events, amd) = run(&pcm, RATE, 320);
        let d = amd.decision().unwrap();
        assert_eq!(d.reason(), reason::SHORT_GREETING, "{events:?}");
        assert!(!d.is_machine());
        assert!(d.after_ms() >= end + 700 && d.after_ms() <= end + 1000, "{d:?}, greeting ended at {end}");
        assert_eq!(events.iter().filter(|e| matches!(e, AmdEvent::Decided(_))).count(), 1);
    }

    #[test]
    fn a_long_greeting_with_word_gaps_is_machine_before_it_ends() {
        let mut pcm = silence(200, RATE);
        pcm.extend(syllables(20, 250, 150, RATE)); // 8 s, 150 ms gaps
        let (_, amd) = run(&pcm, RATE, 320);
        let d = amd.decision().unwrap();
        assert_eq!((d.is_machine(), d.reason()), (true, reason::LONG_GREETING));
        let max = AmdConfig::default().greeting_max_ms;
        assert!(d.after_ms() > 200 + max && d.after_ms() <= 200 + max + 300, "{d:?}");
    }

    #[test]
    fn silence_is_human_after_the_initial_silence_and_clicks_do_not_start_a_greeting() {
        let mut pcm = silence(1000, RATE);
        pcm.extend(tone(300.0, 30, 20000.0, RATE).iter().zip(noise(30, 20000.0, RATE, 7)).map(|(a, b)| a / 2 + b / 2));
        pcm.extend(silence(6000, RATE));
        let (events, amd) = run(&pcm, RATE, 320);
        let d = amd.decision().unwrap();
        assert_eq!(
            d,
            AmdDecision::Human { after_ms: AmdConfig::default().initial_silence_ms, reason: reason::SILENCE },
            "{events:?}"
        );
    }

    #[test]
    fn speech_that_never_settles_is_human_at_the_timeout() {
        // Silence, then a greeting starting at 3.4 s: neither short nor
        // long by 5 s.
        let mut pcm = silence(3400, RATE);
        pcm.extend(syllables(4, 250, 100, RATE));
        pcm.extend(silence(2000, RATE));
        let (_, amd) = run(&pcm, RATE, 320);
        assert_eq!(amd.decision(), Some(AmdDecision::Human { after_ms: 5000, reason: reason::TIMEOUT }));
    }

    #[test]
    fn a_stationary_background_raises_the_floor_and_is_not_speech() {
        // White noise at about −35 dBFS: above the absolute gate.
        let pcm = noise(6000, 1000.0, RATE, 42);
        let (events, amd) = run(&pcm, RATE, 320);
        assert_eq!(amd.decision().map(|d| d.reason()), Some(reason::SILENCE), "{events:?}");
        assert!(amd.noise_floor_dbfs() > -45.0, "floor {}", amd.noise_floor_dbfs());
        // Speech over it is still heard.
        let mut pcm = noise(1000, 1000.0, RATE, 43);
        let voice = syllables(20, 250, 150, RATE);
        let bed = noise(voice.len() as u32 * 1000 / RATE + 10, 1000.0, RATE, 44);
        pcm.extend(voice.iter().zip(&bed).map(|(a, b)| a.saturating_add(*b)));
        let (_, amd) = run(&pcm, RATE, 320);
        assert_eq!(amd.decision().map(|d| d.reason()), Some(reason::LONG_GREETING));
    }

    #[test]
    fn beeps_are_reported_after_the_decision_too() {
        let mut pcm = syllables(20, 250, 150, RATE);
        pcm.extend(tone(1000.0, 400, 8000.0, RATE));
        pcm.extend(silence(200, RATE));
        pcm.extend(tone(1000.0, 400, 8000.0, RATE));
        pcm.extend(silence(200, RATE));
        let (events, amd) = run(&pcm, RATE, 320);
        assert_eq!(amd.decision().map(|d| d.reason()), Some(reason::LONG_GREETING));
        assert_eq!(beeps(&events).len(), 2, "{events:?}");
    }
}
