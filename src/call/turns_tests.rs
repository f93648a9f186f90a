//! Turn detection in virtual time with a scripted end-of-turn model.

use super::*;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Script {
    asked: Vec<Vec<f32>>,
    refuse: bool,
    answers: VecDeque<(u64, Result<f32, String>)>,
}

struct Scripted(Arc<Mutex<Script>>);

impl TurnModel for Scripted {
    fn submit(&mut self, audio: Vec<f32>) -> Option<u64> {
        let mut s = self.0.lock().unwrap();
        if s.refuse {
            return None;
        }
        s.asked.push(audio);
        Some(s.asked.len() as u64 - 1)
    }
    fn poll(&mut self) -> Option<(u64, Result<f32, String>)> {
        self.0.lock().unwrap().answers.pop_front()
    }
}

struct Rig {
    d: TurnDetector,
    script: Arc<Mutex<Script>>,
}

impl Rig {
    fn semantic(max_wait_ms: u64) -> Rig {
        let script = Arc::new(Mutex::new(Script::default()));
        let d = TurnDetector::new(
            TurnMode::SemanticVad { threshold: 0.5, max_wait_ms },
            Some(Box::new(Scripted(script.clone()))),
        );
        Rig { d, script }
    }
    /// `ms` of caller audio in 20 ms packets, ticking like the media loop.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 20 {
            self.d.push_audio(&[100; 320]);
            self.d.tick();
        }
    }
    fn answer(&mut self, seq: u64, p: f32) {
        self.script.lock().unwrap().answers.push_back((seq, Ok(p)));
    }
    fn commits(&mut self) -> Vec<TurnCommit> {
        std::iter::from_fn(|| self.d.poll_event())
            .filter_map(|e| match e {
                TurnEvent::Committed(c) => Some(c),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn server_vad_commits_when_the_speech_stops() {
    let mut d = TurnDetector::server_vad();
    d.push_audio(&[0; 16000]);
    d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 200 });
    d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 900 });
    d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 1500 });
    d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 2100 });
    let ev: Vec<TurnEvent> = std::iter::from_fn(|| d.poll_event()).collect();
    assert_eq!(
        ev,
        vec![
            TurnEvent::SpeechStarted { audio_start_ms: 200, new_turn: true, turn: 0 },
            TurnEvent::SpeechStopped { audio_end_ms: 900 },
            TurnEvent::Committed(TurnCommit {
                turn: 0,
                audio_start_ms: 200,
                audio_end_ms: 900,
                reason: CommitReason::Silence,
                p_complete: None,
                speculated: false
            }),
            TurnEvent::SpeechStarted { audio_start_ms: 1500, new_turn: true, turn: 1 },
            TurnEvent::SpeechStopped { audio_end_ms: 2100 },
            TurnEvent::Committed(TurnCommit {
                turn: 1,
                audio_start_ms: 1500,
                audio_end_ms: 2100,
                reason: CommitReason::Silence,
                p_complete: None,
                speculated: false
            }),
        ]
    );
}

#[test]
fn semantic_vad_commits_at_once_when_the_model_says_complete() {
    let mut r = Rig::semantic(4000);
    r.run(10_000);
    r.d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 7000 });
    r.d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 9800 });
    // The model hears the last 8 s (the window), up to now.
    assert_eq!(r.script.lock().unwrap().asked[0].len(), 8 * 16000);
    r.run(100);
    assert!(r.commits().is_empty(), "nothing until the model answers");
    r.answer(0, 0.93);
    r.run(20);
    let c = r.commits();
    assert_eq!(
        c,
        vec![TurnCommit {
            turn: 0,
            audio_start_ms: 7000,
            audio_end_ms: 9800,
            reason: CommitReason::Model,
            p_complete: Some(0.93),
            speculated: false
        }]
    );
}

#[test]
fn semantic_vad_waits_for_the_eagerness_bound_when_the_model_says_incomplete() {
    let mut r = Rig::semantic(2000);
    r.run(3000);
    r.d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 500 });
    r.d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 3000 });
    r.answer(0, 0.2);
    r.run(1980);
    assert!(r.commits().is_empty(), "an unfinished sentence: the caller may go on");
    r.run(20);
    let c = r.commits();
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].reason, c[0].audio_end_ms, c[0].p_complete), (CommitReason::Timeout, 3000, Some(0.2)));
}

#[test]
fn speech_after_a_pause_continues_the_same_turn() {
    let mut r = Rig::semantic(4000);
    r.run(2000);
    r.d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 300 });
    r.d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 2000 });
    r.answer(0, 0.1);
    r.run(1200);
    r.d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 3000 });
    // A late, stale answer about the first pause says "complete": it must not end the turn.
    r.answer(0, 0.99);
    r.run(1000);
    r.d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 4200 });
    // Asked at the first pause, once more 200 ms into it (never answered), and now.
    assert_eq!(r.script.lock().unwrap().asked.len(), 3);
    r.answer(2, 0.8);
    r.run(20);
    let ev: Vec<TurnEvent> = std::iter::from_fn(|| r.d.poll_event()).collect();
    assert!(ev.contains(&TurnEvent::SpeechStarted { audio_start_ms: 3000, new_turn: false, turn: 0 }), "{ev:?}");
    let commits: Vec<&TurnEvent> = ev.iter().filter(|e| matches!(e, TurnEvent::Committed(_))).collect();
    assert_eq!(
        commits,
        vec![&TurnEvent::Committed(TurnCommit {
            turn: 0,
            audio_start_ms: 300,
            audio_end_ms: 4200,
            reason: CommitReason::Model,
            p_complete: Some(0.8),
            speculated: false
        })]
    );
}

#[test]
fn the_model_is_asked_again_as_the_silence_grows() {
    let mut r = Rig::semantic(4000);
    r.run(2000);
    r.d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 100 });
    r.d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 1700 });
    r.answer(0, 0.3);
    r.run(180);
    assert_eq!(r.script.lock().unwrap().asked.len(), 1, "not before 200 ms");
    r.run(40);
    assert_eq!(r.script.lock().unwrap().asked.len(), 2, "asked again with more trailing silence");
    {
        let s = r.script.lock().unwrap();
        assert_eq!(s.asked[1].len() - s.asked[0].len(), 200 * 16, "the new request holds the extra silence");
    }
    r.answer(1, 0.7);
    r.run(20);
    let c = r.commits();
    assert_eq!((c[0].reason, c[0].audio_end_ms, c[0].p_complete), (CommitReason::Model, 1700, Some(0.7)));
}

#[test]
fn a_busy_or_failing_model_leaves_the_bound_to_decide() {
    let mut r = Rig::semantic(4000);
    r.script.lock().unwrap().refuse = true;
    r.run(1000);
    r.d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 0 });
    r.d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 1000 });
    r.run(4000);
    assert_eq!(r.commits()[0].reason, CommitReason::Timeout);

    let mut r = Rig::semantic(4000);
    r.run(1000);
    r.d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 0 });
    r.d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 1000 });
    r.script.lock().unwrap().answers.push_back((0, Err("model error".into())));
    r.run(3900);
    assert!(r.commits().is_empty());
    r.run(100);
    let c = r.commits();
    assert_eq!((c[0].reason, c[0].p_complete), (CommitReason::Timeout, None));
}

#[test]
fn the_end_of_the_call_ends_an_open_turn() {
    let mut r = Rig::semantic(8000);
    r.run(1000);
    r.d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 100 });
    r.run(1500);
    assert!(r.d.in_turn());
    r.d.finish();
    let c = r.commits();
    assert_eq!((c[0].reason, c[0].audio_start_ms, c[0].audio_end_ms), (CommitReason::CallEnded, 100, 2500));
    assert!(!r.d.in_turn());
}

#[test]
fn the_tape_holds_only_the_models_window() {
    let mut r = Rig::semantic(4000);
    r.run(60_000);
    assert_eq!(r.d.tape.len(), WINDOW);
    // server_vad keeps no audio at all.
    let mut d = TurnDetector::server_vad();
    d.push_audio(&[1; 32000]);
    assert!(d.tape.is_empty());
}

#[test]
fn manual_turns_end_only_on_commit_and_keep_words_up_to_it() {
    let mut d = TurnDetector::new(TurnMode::Manual { key: '#' }, None);
    assert_eq!(d.commit_key(), Some('#'));
    assert!(!d.commit_now(), "no speech yet: nothing to commit");
    d.push_audio(&[0; 16000]);
    d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 300 });
    d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 900 });
    // Ten seconds of silence do not end a manual turn…
    for _ in 0..500 {
        d.push_audio(&[0; 320]);
        d.tick();
    }
    // …and more speech after the pause belongs to the same turn.
    d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 11_200 });
    d.push_audio(&[0; 16000]);
    let ev: Vec<TurnEvent> = std::iter::from_fn(|| d.poll_event()).collect();
    assert!(!ev.iter().any(|e| matches!(e, TurnEvent::Committed(_))), "{ev:?}");
    assert!(ev.contains(&TurnEvent::SpeechStarted { audio_start_ms: 11_200, new_turn: false, turn: 0 }), "{ev:?}");
    assert!(d.in_turn());
    // The key, 12 s into the call while the caller may still be talking: the turn ends there.
    assert!(d.commit_now());
    let ev: Vec<TurnEvent> = std::iter::from_fn(|| d.poll_event()).collect();
    assert_eq!(
        ev,
        vec![TurnEvent::Committed(TurnCommit {
            turn: 0,
            audio_start_ms: 300,
            audio_end_ms: 12_000,
            reason: CommitReason::Manual,
            p_complete: None,
            speculated: false
        })]
    );
    assert!(!d.in_turn());
    assert!(!d.commit_now(), "a second key press with no new speech commits nothing");
    assert_eq!(TurnDetector::server_vad().commit_key(), None);
}

#[test]
fn a_pause_announces_a_tentative_end_that_the_commit_confirms() {
    let mut d = TurnDetector::server_vad().with_speculation(200);
    d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 100 });
    d.on_caller_state(CallerState::Speaking, 1000);
    // Quiet since 1200: nothing before 200 ms of it, then one tentative end (not repeated).
    d.on_caller_state(CallerState::Quiet { since_ms: 1200 }, 1376);
    d.on_caller_state(CallerState::Quiet { since_ms: 1200 }, 1408);
    d.on_caller_state(CallerState::Quiet { since_ms: 1200 }, 1440);
    d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 1200 });
    let ev: Vec<TurnEvent> = std::iter::from_fn(|| d.poll_event()).collect();
    assert_eq!(
        ev,
        vec![
            TurnEvent::SpeechStarted { audio_start_ms: 100, new_turn: true, turn: 0 },
            TurnEvent::Tentative { turn: 0, audio_start_ms: 100, audio_end_ms: 1200 },
            TurnEvent::SpeechStopped { audio_end_ms: 1200 },
            TurnEvent::Committed(TurnCommit {
                turn: 0,
                audio_start_ms: 100,
                audio_end_ms: 1200,
                reason: CommitReason::Silence,
                p_complete: None,
                speculated: true
            }),
        ]
    );
}

#[test]
fn a_caller_who_goes_on_voids_the_tentative_end() {
    let mut d = TurnDetector::server_vad().with_speculation(200);
    d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 100 });
    d.on_caller_state(CallerState::Quiet { since_ms: 1200 }, 1408);
    // Thinking aloud: speech again before the silence ends the turn.
    d.on_caller_state(CallerState::Speaking, 1600);
    d.on_caller_state(CallerState::Speaking, 1632);
    d.on_caller_state(CallerState::Quiet { since_ms: 2400 }, 2500);
    d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 2400 });
    let ev: Vec<TurnEvent> = std::iter::from_fn(|| d.poll_event()).collect();
    assert_eq!(
        ev,
        vec![
            TurnEvent::SpeechStarted { audio_start_ms: 100, new_turn: true, turn: 0 },
            TurnEvent::Tentative { turn: 0, audio_start_ms: 100, audio_end_ms: 1200 },
            TurnEvent::Resumed { turn: 0 },
            TurnEvent::SpeechStopped { audio_end_ms: 2400 },
            // The final pause was too short for a tentative end: the commit is not speculated.
            TurnEvent::Committed(TurnCommit {
                turn: 0,
                audio_start_ms: 100,
                audio_end_ms: 2400,
                reason: CommitReason::Silence,
                p_complete: None,
                speculated: false
            }),
        ]
    );
}

#[test]
fn semantic_vad_speculates_and_a_new_utterance_in_the_turn_voids_it() {
    let mut r = Rig::semantic(4000);
    r.d = std::mem::replace(&mut r.d, TurnDetector::server_vad()).with_speculation(200);
    r.run(3000);
    r.d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 300 });
    r.d.on_caller_state(CallerState::Quiet { since_ms: 2000 }, 2208);
    r.d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 2000 });
    r.d.on_caller_state(CallerState::Idle, 2272);
    // The model says "not finished"; the caller speaks again: the same turn, the tentative end void.
    r.answer(0, 0.1);
    r.run(20);
    r.d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 2600 });
    let ev: Vec<TurnEvent> = std::iter::from_fn(|| r.d.poll_event()).collect();
    assert!(ev.contains(&TurnEvent::Tentative { turn: 0, audio_start_ms: 300, audio_end_ms: 2000 }), "{ev:?}");
    assert_eq!(
        ev[ev.len() - 2..],
        [TurnEvent::Resumed { turn: 0 }, TurnEvent::SpeechStarted { audio_start_ms: 2600, new_turn: false, turn: 0 }],
        "the void comes first"
    );
    assert!(!ev.iter().any(|e| matches!(e, TurnEvent::Committed(_))));
    // Its next pause is announced again, and the model's "complete" confirms that one.
    r.d.on_caller_state(CallerState::Quiet { since_ms: 3500 }, 3710);
    r.d.on_vad(VadEvent::SpeechStopped { audio_end_ms: 3500 });
    r.answer(1, 0.9);
    r.run(20);
    let c = r.commits();
    assert_eq!(c.len(), 1);
    assert!(c[0].speculated && c[0].audio_end_ms == 3500, "{c:?}");
}

#[test]
fn manual_turns_never_speculate() {
    let mut d = TurnDetector::new(TurnMode::Manual { key: '#' }, None).with_speculation(200);
    d.on_vad(VadEvent::SpeechStarted { audio_start_ms: 100 });
    d.on_caller_state(CallerState::Quiet { since_ms: 1200 }, 2000);
    let ev: Vec<TurnEvent> = std::iter::from_fn(|| d.poll_event()).collect();
    assert!(!ev.iter().any(|e| matches!(e, TurnEvent::Tentative { .. })), "{ev:?}");
}

#[test]
fn turn_detection_settings_map_to_the_mode() {
    let td = |yaml: &str| -> crate::config::TurnDetection { serde_yaml_ng::from_str(yaml).unwrap() };
    assert_eq!(td("type: server_vad").turn_mode(), TurnMode::ServerVad);
    assert_eq!(
        td("type: semantic_vad\neagerness: high").turn_mode(),
        TurnMode::SemanticVad { threshold: 0.5, max_wait_ms: 2000 }
    );
    assert_eq!(td("type: manual").turn_mode(), TurnMode::Manual { key: '#' }, "# by default");
    assert_eq!(td("type: manual\ncommit_key: \"*\"").turn_mode(), TurnMode::Manual { key: '*' });
}
