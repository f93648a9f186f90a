//! Which of the language model's tasks computes next: the one whose caller will run out of words
//! first. One model on one thread serves every call; it computes in small steps (a chunk of a
//! prompt, or one token of every reply whose prompt is in, decoded as one batch), and between steps
//! it picks again. A new reply's prompt goes first: its caller is waiting, and once its prompt is in
//! it decodes in the same passes as the others at little extra cost (four replies in a pass cost
//! 1.6 times one on 2 cores), whereas decoding an earlier caller's first phrase before it would make
//! it wait for that whole phrase. Then a reply whose caller is waiting (no phrase yet) goes before
//! the tail of a long reply whose text is seconds ahead of its voice; a ringing call's warm-up goes
//! last.
//!
//! Only what the voice has been given counts as speech in hand: the reply's text is cut by the
//! agent's own `models::splitter` (first phrase, clauses, sentences, each given out once text
//! follows it), so the scheduler and the agent agree on when a caller has words on the way. A reply
//! halfway through its first phrase has nothing to say yet. (Counting a phrase at its full stop
//! would leave "Our phone number is 555-0100." unsaid until the reply's next step — its end — came,
//! behind every other caller's first phrase: seen as 3.4 s of silence with four callers.)
//!
//! While a voice synthesises, a reply with speech in hand waits (`yields_to_voice`): the voice
//! and the model share the cores, and the voice's work is what the caller hears next.
//!
//! Pure and clock-free: the worker passes `now` in.

use crate::models::splitter::SentenceSplitter;
use std::time::{Duration, Instant};

/// How fast the agent speaks what it is given (Piper's voices at length scale 1: ~150 words a
/// minute, ~14 characters a second). The text of a reply beyond what was spoken so far, in
/// seconds, is how long that reply can wait.
pub const CHARS_PER_SECOND: f64 = 14.0;

/// A warm-up (a call's instructions computed while it rings) waits until every reply has this
/// much text ahead of its voice.
pub const WARM_AHEAD_S: f64 = 2.0;

/// While a voice synthesises (`tts_worker::synthesising`), only tasks with less speech than this
/// in hand are stepped: the voice gets the cores, and a reply this far ahead loses nothing by
/// waiting (its text is spoken later than the voice's work ends). Callers waiting for their first
/// words are below it (negative), so the model goes on for them.
pub const YIELD_AHEAD_S: f64 = 0.5;

/// Whether `task` waits while a voice synthesises.
pub fn yields_to_voice(task: &Progress, now: Instant) -> bool {
    task.ahead_s(now) >= YIELD_AHEAD_S
}

/// What the scheduler knows of a task.
#[derive(Debug, Clone)]
pub struct Progress {
    /// When the request arrived.
    pub queued: Instant,
    /// When its first phrase was complete (a reply), if it is.
    pub first_text: Option<Instant>,
    /// Characters of the phrases given to the voice so far.
    pub chars: usize,
    /// A warm-up, not a reply.
    pub warm: bool,
    /// A reply whose prompt is computed: it decodes.
    pub prompt_in: bool,
    /// The agent's cut of the reply into what the voice speaks.
    splitter: SentenceSplitter,
}

impl Progress {
    pub fn reply(queued: Instant) -> Progress {
        Progress {
            queued,
            first_text: None,
            chars: 0,
            warm: false,
            prompt_in: false,
            splitter: SentenceSplitter::new(),
        }
    }

    pub fn warm(queued: Instant) -> Progress {
        Progress { queued, first_text: None, chars: 0, warm: true, prompt_in: false, splitter: SentenceSplitter::new() }
    }

    /// Text went out at `now`.
    pub fn sent(&mut self, text: &str, now: Instant) {
        self.prompt_in = true;
        for phrase in self.splitter.push(text) {
            self.chars += phrase.chars().count();
            self.first_text.get_or_insert(now);
        }
    }

    /// Seconds of speech this task's caller has in hand: negative while the caller waits for a
    /// first word (as long as it has waited), the text's speaking time beyond the time since the
    /// first text went out after that.
    pub fn ahead_s(&self, now: Instant) -> f64 {
        if self.warm {
            return WARM_AHEAD_S;
        }
        match self.first_text {
            None => -secs(now.saturating_duration_since(self.queued)),
            Some(first) => self.chars as f64 / CHARS_PER_SECOND - secs(now.saturating_duration_since(first)),
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The task to step next: a reply's prompt, the first asked; else least speech in hand, and of
/// equals the one that arrived first.
pub fn pick<'a>(tasks: impl IntoIterator<Item = &'a Progress>, now: Instant) -> Option<usize> {
    let tasks: Vec<&Progress> = tasks.into_iter().collect();
    let prompt = tasks.iter().enumerate().filter(|(_, t)| !t.warm && !t.prompt_in).min_by_key(|(_, t)| t.queued);
    if let Some((i, _)) = prompt {
        return Some(i);
    }
    tasks
        .into_iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| a.ahead_s(now).total_cmp(&b.ahead_s(now)).then(a.queued.cmp(&b.queued)))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A sentence of `n` characters, and the start of the next one that completes it (held by the
    /// splitter: it is not counted).
    fn phrases(n: usize) -> String {
        "a".repeat(n - 1) + ". A"
    }

    /// A reply decoding (its prompt in).
    fn decoding(queued: Instant) -> Progress {
        let mut p = Progress::reply(queued);
        p.prompt_in = true;
        p
    }

    #[test]
    fn a_new_prompt_goes_before_the_decoding_of_waiting_callers() {
        let t0 = Instant::now();
        let (a, b, c) = (decoding(t0), Progress::reply(t0 + ms(300)), Progress::reply(t0 + ms(200)));
        assert_eq!(pick([&a, &b, &c], t0 + ms(400)), Some(2), "c's prompt, the first asked of the two; then b's");
        assert_eq!(pick([&a, &b], t0 + ms(400)), Some(1));
        assert_eq!(pick([&a, &Progress::warm(t0)], t0 + ms(400)), Some(0), "a warm-up's prompt is no caller's");
    }

    #[test]
    fn half_a_phrase_is_no_speech_in_hand() {
        let t0 = Instant::now();
        let (mut a, b) = (decoding(t0), decoding(t0 + ms(10)));
        a.sent("Yes, we", t0 + ms(500));
        assert_eq!((a.chars, a.first_text), (4, Some(t0 + ms(500))), "a clause break with a word after it");
        let mut a = decoding(t0);
        a.sent("Saturday we open eight", t0 + ms(500));
        assert_eq!((a.chars, a.first_text), (0, None));
        assert_eq!(pick([&a, &b], t0 + ms(600)), Some(0), "a asked first and has nothing to say yet");
        a.sent(" to two.", t0 + ms(900));
        assert_eq!((a.chars, a.first_text), (0, None), "the splitter holds a phrase until text follows");
        assert_eq!(pick([&a, &b], t0 + ms(950)), Some(0));
        a.sent(" We", t0 + ms(1000));
        assert_eq!((a.chars, a.first_text), (30, Some(t0 + ms(1000))));
        assert_eq!(pick([&a, &b], t0 + ms(1050)), Some(1), "a's first phrase is out: b's turn");
    }

    #[test]
    fn a_waiting_caller_goes_before_a_reply_with_speech_in_hand() {
        let t0 = Instant::now();
        // A long reply: 140 characters (10 s of speech) out since 2 s; a new question at 3 s.
        let mut long = Progress::reply(t0);
        long.sent(&phrases(140), t0 + ms(2000));
        let new = Progress::reply(t0 + ms(3000));
        assert_eq!(pick([&long, &new], t0 + ms(3000)), Some(1));
        // The new reply's first phrase is out (30 characters, ~2 s): the long one, with 8.4 s in
        // hand, still waits. At 11 s the new one has sent all its 150 characters (3.2 s left to
        // say) and the long one's voice has 1 s left: the long one goes first.
        let mut new = new;
        new.sent(&phrases(30), t0 + ms(3500));
        assert_eq!(pick([&long, &new], t0 + ms(3600)), Some(1));
        new.sent(&phrases(120), t0 + ms(10_000));
        assert!((long.ahead_s(t0 + ms(11_000)) - 1.0).abs() < 1e-9);
        assert_eq!(pick([&long, &new], t0 + ms(11_000)), Some(0));
    }

    #[test]
    fn callers_waiting_for_a_first_word_go_in_order_of_arrival() {
        let t0 = Instant::now();
        let (a, b, c) = (decoding(t0 + ms(100)), decoding(t0), decoding(t0 + ms(50)));
        assert_eq!(pick([&a, &b, &c], t0 + ms(200)), Some(1));
        assert_eq!(pick([&a, &c], t0 + ms(200)), Some(1));
        // At the same instant (one clock reading for both): the earlier still.
        assert_eq!(pick([&a, &c], t0 + ms(50)), Some(1));
    }

    /// The first phrase counts once the agent would give it to the voice: cut before a
    /// phrase-starting word, without punctuation.
    #[test]
    fn a_first_phrase_cut_before_its_sentence_ends_is_speech_in_hand() {
        let t0 = Instant::now();
        let mut a = Progress::reply(t0);
        a.sent("Saturday is open", t0 + ms(300));
        assert_eq!((a.chars, a.first_text), (0, None));
        a.sent(" from ", t0 + ms(360));
        assert_eq!((a.chars, a.first_text), (16, Some(t0 + ms(360))));
        assert!((a.ahead_s(t0 + ms(460)) - (16.0 / CHARS_PER_SECOND - 0.1)).abs() < 1e-9);
        assert!(yields_to_voice(&a, t0 + ms(460)), "1 s in hand: the voice goes first");
        assert!(
            !yields_to_voice(&Progress::reply(t0), t0 + ms(460)),
            "a caller waiting for a first word does not wait for another's voice"
        );
        assert!(!yields_to_voice(&a, t0 + ms(1100)), "0.4 s left: the model goes on");
    }

    #[test]
    fn a_warm_up_waits_for_replies_short_of_speech_but_not_forever() {
        let t0 = Instant::now();
        let warm = Progress::warm(t0);
        let mut reply = Progress::reply(t0 + ms(10));
        assert_eq!(pick([&warm, &reply], t0 + ms(20)), Some(1), "a caller waits");
        reply.sent(&phrases(42), t0 + ms(500)); // 3 s of speech
        assert_eq!(pick([&warm, &reply], t0 + ms(600)), Some(0), "2.9 s in hand: the warm-up runs");
        assert_eq!(pick([&warm, &reply], t0 + ms(1600)), Some(1), "1.9 s in hand: the reply again");
        assert_eq!(pick(&[], t0), None);
    }
}
