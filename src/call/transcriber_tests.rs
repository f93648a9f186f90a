//! The transcriber in virtual time, with a scripted recogniser.

use super::*;
use crate::call::turns::{CommitReason, TurnCommit};
use crate::models::asr::Transcript;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Script {
    /// (audio, partial) in submission order.
    submitted: Vec<(Vec<f32>, bool)>,
    /// The draft given with each submission.
    drafts: Vec<Vec<i64>>,
    /// Refuse finals / partials.
    refuse_final: bool,
    refuse_partial: bool,
    /// Answers to hand out on the next poll.
    answers: VecDeque<AsrResult>,
    /// Jobs cancelled, in order.
    cancelled: Vec<u64>,
}

struct Scripted(Arc<Mutex<Script>>);

impl Recognizer for Scripted {
    fn submit(&mut self, audio: Vec<f32>, partial: bool, draft: Vec<i64>) -> Option<u64> {
        let mut s = self.0.lock().unwrap();
        if (partial && s.refuse_partial) || (!partial && s.refuse_final) {
            return None;
        }
        s.submitted.push((audio, partial));
        s.drafts.push(draft);
        Some(s.submitted.len() as u64 - 1)
    }
    fn poll(&mut self) -> Option<AsrResult> {
        self.0.lock().unwrap().answers.pop_front()
    }
    fn cancel(&mut self, seq: u64) {
        self.0.lock().unwrap().cancelled.push(seq);
    }
}

fn answer(seq: u64, partial: bool, text: &str) -> AsrResult {
    AsrResult {
        seq,
        partial,
        transcript: Ok(Transcript {
            text: text.into(),
            // One token per byte: a draft can be traced back to the text it came from.
            tokens: text.bytes().map(i64::from).collect(),
            language: None,
            no_speech_prob: 0.01,
            avg_logprob: -0.2,
            audio_ms: 0,
            encode_ms: 0.0,
            decode_ms: 0.0,
            drafted: 0,
        }),
        latency_ms: 250.0,
    }
}

/// Sample n of the stream carries the value (n mod 30000): a cut can be located exactly.
fn ramp(from: u64, n: usize) -> Vec<i16> {
    (0..n as u64).map(|i| ((from + i) % 30000) as i16).collect()
}

fn value_of(sample: u64) -> f32 {
    (sample % 30000) as f32 / 32768.0
}

struct Rig {
    t: Transcriber,
    script: Arc<Mutex<Script>>,
    pos: u64,
    now: Instant,
    turns: u64,
}

impl Rig {
    fn new(partial_ms: Option<u64>) -> Rig {
        let script = Arc::new(Mutex::new(Script::default()));
        let t = Transcriber::new(Box::new(Scripted(script.clone())), 300, partial_ms.map(Duration::from_millis));
        Rig { t, script, pos: 0, now: Instant::now(), turns: 0 }
    }
    /// `ms` of audio in 20 ms packets, ticking like the media loop.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 20 {
            self.t.push_audio(&ramp(self.pos, 320));
            self.pos += 320;
            self.now += Duration::from_millis(20);
            self.t.tick(self.now);
        }
    }
    fn events(&mut self) -> Vec<TranscriberEvent> {
        std::iter::from_fn(|| self.t.poll_event()).collect()
    }
}

/// Turns open and close as the detector says (server_vad: a turn per speech run).
fn start(r: &mut Rig, audio_start_ms: u64) {
    r.t.on_turn(&TurnEvent::SpeechStarted { audio_start_ms, new_turn: true, turn: r.turns }, r.now);
}

fn stop(r: &mut Rig, audio_end_ms: u64) {
    let c = TurnCommit {
        turn: r.turns,
        audio_start_ms: 0,
        audio_end_ms,
        reason: CommitReason::Silence,
        p_complete: None,
        speculated: false,
    };
    r.t.on_turn(&TurnEvent::SpeechStopped { audio_end_ms }, r.now);
    r.t.on_turn(&TurnEvent::Committed(c), r.now);
    r.turns += 1;
}

#[test]
fn a_turn_is_cut_where_the_vad_says_plus_a_short_tail() {
    let mut r = Rig::new(None);
    r.run(3000);
    // The VAD's start lies ~0.6 s back (prefix padding + minimum speech + its latency).
    start(&mut r, 2400);
    r.run(2000);
    stop(&mut r, 4000);
    let s = r.script.lock().unwrap();
    assert_eq!(s.submitted.len(), 1);
    let (audio, partial) = &s.submitted[0];
    assert!(!partial);
    assert_eq!(audio.len() as u64, (4000 + TAIL_MS - 2400) * 16);
    assert_eq!(audio[0], value_of(2400 * 16));
    assert_eq!(*audio.last().unwrap(), value_of((4000 + TAIL_MS) * 16 - 1));
}

#[test]
fn the_answer_names_its_turn_and_audio_span() {
    let mut r = Rig::new(None);
    r.run(1000);
    start(&mut r, 700);
    r.run(1000);
    stop(&mut r, 1800);
    r.run(1000);
    start(&mut r, 2900);
    r.run(600);
    stop(&mut r, 3500);
    r.script.lock().unwrap().answers.extend([answer(1, false, "second"), answer(0, false, "first")]);
    r.run(20);
    let ev = r.events();
    let TranscriberEvent::Transcript(a) = &ev[0] else { panic!("{ev:?}") };
    let TranscriberEvent::Transcript(b) = &ev[1] else { panic!("{ev:?}") };
    assert_eq!((a.turn, a.text.as_str(), a.audio_start_ms, a.audio_end_ms), (1, "second", 2900, 3600));
    assert_eq!((b.turn, b.text.as_str(), b.audio_start_ms, b.audio_end_ms), (0, "first", 700, 2000));
    assert!(!a.partial && a.latency_ms == 250.0);
}

#[test]
fn the_tape_stays_bounded_without_speech_and_in_a_long_turn() {
    let mut r = Rig::new(None);
    r.run(120_000);
    assert!(r.t.held_samples() <= (300 + 1000) * 16, "{}", r.t.held_samples());
    let at = r.pos / 16 - 200;
    start(&mut r, at);
    let started = r.pos / 16 - 200;
    r.run(70_000);
    // Two 30 s pieces went out while the caller kept talking; the rest waits for the end.
    {
        let s = r.script.lock().unwrap();
        assert_eq!(s.submitted.len(), 2);
        assert_eq!(s.submitted[0].0.len(), 30_000 * 16);
        assert_eq!(s.submitted[0].0[0], value_of(started * 16));
        assert_eq!(s.submitted[1].0[0], value_of((started + 30_000) * 16));
    }
    assert!(r.t.held_samples() <= 31_000 * 16, "{}", r.t.held_samples());
    let at = r.pos / 16 - 300;
    stop(&mut r, at);
    let s = r.script.lock().unwrap();
    assert_eq!(s.submitted.len(), 3);
    assert_eq!(s.submitted[2].0[0], value_of((started + 60_000) * 16));
}

#[test]
fn partials_come_while_speaking_and_stale_ones_are_dropped() {
    let mut r = Rig::new(Some(500));
    r.run(400);
    start(&mut r, 100);
    r.run(900); // 1.2 s of turn audio: the first partial is due once the turn has 1 s
    {
        let s = r.script.lock().unwrap();
        assert_eq!(s.submitted.len(), 1);
        assert!(s.submitted[0].1);
    }
    // Never two partials in flight: nothing new until the first answers.
    r.run(1000);
    assert_eq!(r.script.lock().unwrap().submitted.len(), 1);
    r.script.lock().unwrap().answers.push_back(answer(0, true, "hel"));
    r.run(20);
    let ev = r.events();
    assert!(matches!(&ev[..], [TranscriberEvent::Transcript(t)] if t.partial && t.text == "hel"), "{ev:?}");
    r.run(500);
    assert_eq!(r.script.lock().unwrap().submitted.len(), 2);
    // The turn ends before the second partial answers: the partial's job is cancelled, the final
    // goes out, and the partial's answer, if it comes all the same, is dropped.
    let at = r.pos / 16 - 100;
    stop(&mut r, at);
    assert_eq!(r.script.lock().unwrap().cancelled, vec![1]);
    r.script.lock().unwrap().answers.extend([answer(1, true, "hello th"), answer(2, false, "hello there")]);
    r.run(20);
    let ev = r.events();
    assert!(matches!(&ev[..], [TranscriberEvent::Transcript(t)] if !t.partial && t.text == "hello there"), "{ev:?}");
    // The answered partial's tokens went with the next partial and with the final (the second
    // partial never answered) as their draft.
    let hel: Vec<i64> = "hel".bytes().map(i64::from).collect();
    assert_eq!(r.script.lock().unwrap().drafts, vec![vec![], hel.clone(), hel]);
}

#[test]
fn a_refused_final_is_reported_and_a_refused_partial_is_not() {
    let mut r = Rig::new(Some(200));
    {
        let mut s = r.script.lock().unwrap();
        s.refuse_final = true;
        s.refuse_partial = true;
    }
    r.run(500);
    start(&mut r, 0);
    r.run(3000);
    assert!(r.events().is_empty());
    stop(&mut r, 3000);
    let ev = r.events();
    assert!(matches!(&ev[..], [TranscriberEvent::Failed { turn: 0, .. }]), "{ev:?}");
}

#[test]
fn a_recogniser_error_is_a_failed_turn() {
    let mut r = Rig::new(None);
    r.run(1000);
    start(&mut r, 100);
    stop(&mut r, 900);
    r.script.lock().unwrap().answers.push_back(AsrResult {
        seq: 0,
        partial: false,
        transcript: Err("boom".into()),
        latency_ms: 1.0,
    });
    r.run(20);
    let ev = r.events();
    assert!(matches!(&ev[..], [TranscriberEvent::Failed { reason, .. }] if reason == "boom"), "{ev:?}");
}

/// A partial that fails (a decode that ran away in the fitted window) is no failed turn: nothing
/// is reported, the next partial is asked for, and the turn's transcript comes as usual.
#[test]
fn a_failed_partial_is_not_a_failed_turn() {
    let mut r = Rig::new(Some(500));
    r.run(400);
    start(&mut r, 100);
    r.run(1300);
    r.script.lock().unwrap().answers.push_back(AsrResult {
        seq: 0,
        partial: true,
        transcript: Err("the decode ran away".into()),
        latency_ms: 1.0,
    });
    r.run(520);
    assert!(r.events().is_empty());
    assert_eq!(r.script.lock().unwrap().submitted.iter().map(|x| x.1).collect::<Vec<_>>(), vec![true, true]);
    let at = r.pos / 16;
    stop(&mut r, at);
    r.script.lock().unwrap().answers.push_back(answer(2, false, "hello"));
    r.run(20);
    assert!(matches!(&r.events()[..], [TranscriberEvent::Transcript(t)] if !t.partial && t.text == "hello"));
}

fn tentative(r: &mut Rig, audio_end_ms: u64) {
    r.t.on_turn(&TurnEvent::Tentative { turn: r.turns, audio_start_ms: 0, audio_end_ms }, r.now);
}

fn commit_speculated(r: &mut Rig, audio_end_ms: u64) {
    let c = TurnCommit {
        turn: r.turns,
        audio_start_ms: 0,
        audio_end_ms,
        reason: CommitReason::Silence,
        p_complete: None,
        speculated: true,
    };
    r.t.on_turn(&TurnEvent::SpeechStopped { audio_end_ms }, r.now);
    r.t.on_turn(&TurnEvent::Committed(c), r.now);
    r.turns += 1;
}

#[test]
fn a_tentative_cut_is_recognised_once_and_becomes_the_final_transcript() {
    let mut r = Rig::new(None);
    r.run(1000);
    start(&mut r, 700);
    r.run(1400);
    // The caller paused at 2000 ms; 200 ms later the turn may have ended there.
    tentative(&mut r, 2000);
    {
        let s = r.script.lock().unwrap();
        assert_eq!(s.submitted.len(), 1, "submitted at the pause, not at the commit");
        assert!(!s.submitted[0].1, "as urgent as a final one");
        assert_eq!(s.submitted[0].0.len() as u64, (2000 + TAIL_MS - 700) * 16);
    }
    r.script.lock().unwrap().answers.push_back(answer(0, false, "what time do you open"));
    r.run(20);
    let ev = r.events();
    assert!(matches!(&ev[..], [TranscriberEvent::Tentative(t)] if t.text == "what time do you open"), "{ev:?}");
    assert!(r.script.lock().unwrap().cancelled.is_empty(), "the tentative answer is kept");
    assert_eq!(r.t.pending_finals(), 0);
    // The commit at the same end: the answer already in is the final transcript, no new work.
    r.run(300);
    commit_speculated(&mut r, 2000);
    let ev = r.events();
    assert!(
        matches!(&ev[..], [TranscriberEvent::Transcript(t)] if !t.partial && t.turn == 0 && t.audio_end_ms == 2000 + TAIL_MS && t.text == "what time do you open"),
        "{ev:?}"
    );
    assert_eq!(r.script.lock().unwrap().submitted.len(), 1);
}

/// At a pause the partial still computing is cancelled (the pause's own transcript needs the
/// core), no partial is asked for while the caller is quiet, and they go on when the caller does.
#[test]
fn a_pause_cancels_the_partial_in_flight_and_partials_wait_until_the_caller_goes_on() {
    let mut r = Rig::new(Some(500));
    r.run(400);
    start(&mut r, 100);
    r.run(1400);
    assert_eq!(r.script.lock().unwrap().submitted.iter().map(|x| x.1).collect::<Vec<_>>(), vec![true]);
    tentative(&mut r, 1700);
    {
        let s = r.script.lock().unwrap();
        assert_eq!(s.cancelled, vec![0], "the partial is not wanted any more");
        assert_eq!(
            s.submitted.iter().map(|x| x.1).collect::<Vec<_>>(),
            vec![true, false],
            "the pause's cut, as urgent as a final one"
        );
    }
    // Its answer, come all the same, is nothing; 1 s of pause asks for no partial.
    r.script.lock().unwrap().answers.push_back(answer(0, true, "what time"));
    r.run(1000);
    assert!(matches!(&r.events()[..], []), "no partial transcript after the pause began");
    assert_eq!(r.script.lock().unwrap().submitted.len(), 2);
    // The caller goes on: the tentative cut is void, partials come again.
    r.t.on_turn(&TurnEvent::Resumed { turn: 0 }, r.now);
    r.run(600);
    let s = r.script.lock().unwrap();
    assert_eq!(s.cancelled, vec![0, 1]);
    assert_eq!(s.submitted.iter().map(|x| x.1).collect::<Vec<_>>(), vec![true, false, true]);
}

#[test]
fn a_commit_before_the_tentative_answer_waits_for_it_as_the_final_one() {
    let mut r = Rig::new(None);
    r.run(1000);
    start(&mut r, 700);
    r.run(1400);
    tentative(&mut r, 2000);
    r.run(300);
    commit_speculated(&mut r, 2000);
    assert_eq!(r.t.pending_finals(), 1, "the call's end waits for it like any final transcript");
    r.script.lock().unwrap().answers.push_back(answer(0, false, "hello"));
    r.run(20);
    let ev = r.events();
    assert!(matches!(&ev[..], [TranscriberEvent::Transcript(t)] if !t.partial && t.text == "hello"), "{ev:?}");
    assert_eq!(r.script.lock().unwrap().submitted.len(), 1);
}

#[test]
fn a_caller_who_goes_on_gets_the_whole_turn_recognised_and_the_tentative_words_vanish() {
    let mut r = Rig::new(None);
    r.run(1000);
    start(&mut r, 700);
    r.run(1400);
    tentative(&mut r, 2000);
    r.run(100);
    r.t.on_turn(&TurnEvent::Resumed { turn: 0 }, r.now);
    assert_eq!(r.script.lock().unwrap().cancelled, vec![0], "the void cut's job is not wanted");
    // The void cut's answer arrives late all the same (it was running): nothing comes of it.
    r.script.lock().unwrap().answers.push_back(answer(0, false, "I would like"));
    r.run(1500);
    assert!(r.events().is_empty());
    stop(&mut r, 3400);
    let s = r.script.lock().unwrap();
    assert_eq!(s.submitted.len(), 2, "the whole turn again");
    assert_eq!(s.submitted[1].0.len() as u64, (3400 + TAIL_MS - 700) * 16);
}
