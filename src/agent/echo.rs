//! The line-test agent: speak the greeting, then play back what the caller
//! says after a fixed delay (the classic echo extension), or stay silent.

use super::{Agent, AgentOutput, PlayoutState};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub struct EchoAgent {
    greeting: Option<std::sync::Arc<Vec<i16>>>,
    /// None = silent mode (greeting only).
    delay: Option<Duration>,
    greeting_queued: bool,
    /// Caller audio waiting for its echo time: (when it may be played, samples).
    pending: VecDeque<(Instant, Vec<i16>)>,
}

impl EchoAgent {
    pub fn new(greeting: Option<std::sync::Arc<Vec<i16>>>, delay_ms: Option<u64>) -> EchoAgent {
        EchoAgent {
            greeting,
            delay: delay_ms.map(Duration::from_millis),
            greeting_queued: false,
            pending: VecDeque::new(),
        }
    }
}

impl Agent for EchoAgent {
    fn start(&mut self, _sample_rate: u32, _now: Instant) {}

    fn on_caller_audio(&mut self, pcm: &[i16], playout: PlayoutState, now: Instant) {
        let Some(delay) = self.delay else { return };
        // While the greeting is still playing, the caller is not echoed: the
        // echo is of what they say after it, as on a telco test line. The
        // pacer's count of samples on the wire says when the greeting is over.
        let greeting_len = self.greeting.as_ref().map_or(0, |g| g.len() as u64);
        if !self.greeting_queued || playout.played_samples < greeting_len {
            return;
        }
        // Bound the backlog at a few seconds: a stalled pacer must not grow memory.
        if self.pending.len() < 500 {
            self.pending.push_back((now + delay, pcm.to_vec()));
        }
    }

    fn poll_output(&mut self, _playout: PlayoutState, now: Instant) -> Option<AgentOutput> {
        if !self.greeting_queued {
            self.greeting_queued = true;
            if let Some(g) = &self.greeting {
                return Some(AgentOutput::Audio(g.to_vec()));
            }
        }
        if self.pending.front().is_some_and(|(at, _)| *at <= now) {
            return self.pending.pop_front().map(|(_, pcm)| AgentOutput::Audio(pcm));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_first_then_delayed_echo() {
        let t0 = Instant::now();
        let mut a = EchoAgent::new(Some(std::sync::Arc::new(vec![7; 800])), Some(300));
        let idle = PlayoutState::default();
        assert_eq!(a.poll_output(idle, t0), Some(AgentOutput::Audio(vec![7; 800])));
        // Caller speech during the greeting is not echoed.
        a.on_caller_audio(&[1; 160], PlayoutState { queued_samples: 640, played_samples: 160 }, t0);
        assert_eq!(a.poll_output(idle, t0 + Duration::from_secs(1)), None);
        // After it, speech comes back exactly `delay` later, also while earlier echo is still queued.
        let done = PlayoutState { queued_samples: 320, played_samples: 800 };
        let t1 = t0 + Duration::from_secs(2);
        a.on_caller_audio(&[5; 160], done, t1);
        a.on_caller_audio(&[6; 160], done, t1 + Duration::from_millis(20));
        assert_eq!(a.poll_output(done, t1 + Duration::from_millis(299)), None);
        assert_eq!(a.poll_output(done, t1 + Duration::from_millis(300)), Some(AgentOutput::Audio(vec![5; 160])));
        assert_eq!(a.poll_output(done, t1 + Duration::from_millis(320)), Some(AgentOutput::Audio(vec![6; 160])));
    }

    #[test]
    fn silent_mode_never_echoes() {
        let t0 = Instant::now();
        let mut a = EchoAgent::new(None, None);
        a.on_caller_audio(&[5; 160], PlayoutState::default(), t0);
        assert_eq!(a.poll_output(PlayoutState::default(), t0 + Duration::from_secs(5)), None);
    }
}
