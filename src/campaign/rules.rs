//! What an attempt's outcome means for its contact: done, or try again later.
//!
//! `max_attempts` counts every attempt made on the contact, whatever their
//! outcomes: with `busy: 3` and `no_answer: 2`, a contact that was busy twice
//! and then did not answer has made 3 attempts, which is over the no-answer
//! limit, so it is exhausted. The rule of the *latest* outcome decides.
//!
//! `Interrupted` (the appliance died while the call was in flight, found at
//! restart) follows the `failed` rule: we cannot know whether the callee's
//! phone rang or whether they heard us, so it counts as an attempt and is
//! never taken for a completed call.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A person answered and the agent had its conversation.
    Answered,
    /// An answering machine answered and was handled per the campaign's policy.
    Machine,
    /// 486/600 Busy (Here/Everywhere).
    Busy,
    /// Nobody answered before the ring timeout (or 480/408/487 after our CANCEL).
    NoAnswer,
    /// Any other failure: SIP error, network, no route.
    Failed,
    /// The appliance stopped while the attempt was in flight (found at restart).
    Interrupted,
}

impl Outcome {
    pub const ALL: [Outcome; 6] =
        [Outcome::Answered, Outcome::Machine, Outcome::Busy, Outcome::NoAnswer, Outcome::Failed, Outcome::Interrupted];

    /// The name in the store, in exports and in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Machine => "machine",
            Outcome::Busy => "busy",
            Outcome::NoAnswer => "no_answer",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a contact ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FinalState {
    /// A person answered.
    Completed,
    /// A machine answered (message left, or hung up, per policy).
    Voicemail,
    /// The retry rules ran out.
    Exhausted,
}

impl FinalState {
    pub const ALL: [FinalState; 3] = [FinalState::Completed, FinalState::Voicemail, FinalState::Exhausted];

    pub fn as_str(self) -> &'static str {
        match self {
            FinalState::Completed => "completed",
            FinalState::Voicemail => "voicemail",
            FinalState::Exhausted => "exhausted",
        }
    }

    pub fn parse(s: &str) -> Option<FinalState> {
        FinalState::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl std::fmt::Display for FinalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decision after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Final(FinalState),
    RetryAt(DateTime<Utc>),
}

/// One outcome's rule: attempts in total at most, and the wait before the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    pub max_attempts: u32,
    #[serde(default = "default_delay_s")]
    pub delay_s: u64,
}

fn default_delay_s() -> u64 {
    600
}

/// No retry unless the campaign asks for one: calling someone again is a
/// choice the operator makes, not a default.
impl Default for RetryRule {
    fn default() -> Self {
        RetryRule { max_attempts: 1, delay_s: default_delay_s() }
    }
}

/// The campaign's `retry:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRules {
    #[serde(default)]
    pub busy: RetryRule,
    #[serde(default)]
    pub no_answer: RetryRule,
    #[serde(default)]
    pub failed: RetryRule,
}

/// Decide a contact's fate after its `attempts_made`-th attempt ended with `outcome`.
pub fn decide(outcome: Outcome, attempts_made: u32, rules: &RetryRules, now: DateTime<Utc>) -> Next {
    let rule = match outcome {
        Outcome::Answered => return Next::Final(FinalState::Completed),
        Outcome::Machine => return Next::Final(FinalState::Voicemail),
        Outcome::Busy => rules.busy,
        Outcome::NoAnswer => rules.no_answer,
        Outcome::Failed | Outcome::Interrupted => rules.failed,
    };
    if attempts_made >= rule.max_attempts {
        return Next::Final(FinalState::Exhausted);
    }
    // Saturate rather than fail: a delay beyond chrono's range (validation caps it far below) means "never".
    let delay =
        chrono::Duration::try_seconds(i64::try_from(rule.delay_s).unwrap_or(i64::MAX)).unwrap_or(chrono::Duration::MAX);
    Next::RetryAt(now.checked_add_signed(delay).unwrap_or(DateTime::<Utc>::MAX_UTC))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RetryRules {
        RetryRules {
            busy: RetryRule { max_attempts: 3, delay_s: 300 },
            no_answer: RetryRule { max_attempts: 2, delay_s: 3600 },
            failed: RetryRule { max_attempts: 2, delay_s: 600 },
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn answered_and_machine_are_final_even_on_the_first_attempt() {
        assert_eq!(decide(Outcome::Answered, 1, &rules(), t0()), Next::Final(FinalState::Completed));
        assert_eq!(decide(Outcome::Machine, 1, &rules(), t0()), Next::Final(FinalState::Voicemail));
    }

    #[test]
    fn busy_retries_after_its_delay_until_max_attempts() {
        let t = t0();
        assert_eq!(decide(Outcome::Busy, 1, &rules(), t), Next::RetryAt(t + chrono::Duration::seconds(300)));
        assert_eq!(decide(Outcome::Busy, 2, &rules(), t), Next::RetryAt(t + chrono::Duration::seconds(300)));
        assert_eq!(decide(Outcome::Busy, 3, &rules(), t), Next::Final(FinalState::Exhausted));
    }

    #[test]
    fn the_latest_outcome_rule_counts_all_attempts() {
        // busy, busy, then no answer: 3 attempts > no_answer's 2.
        assert_eq!(decide(Outcome::NoAnswer, 3, &rules(), t0()), Next::Final(FinalState::Exhausted));
        assert_eq!(decide(Outcome::NoAnswer, 1, &rules(), t0()), Next::RetryAt(t0() + chrono::Duration::seconds(3600)));
    }

    #[test]
    fn interrupted_follows_the_failed_rule_and_is_never_completed() {
        assert_eq!(decide(Outcome::Interrupted, 1, &rules(), t0()), decide(Outcome::Failed, 1, &rules(), t0()));
        assert_eq!(decide(Outcome::Interrupted, 2, &rules(), t0()), Next::Final(FinalState::Exhausted));
    }

    #[test]
    fn default_rules_never_retry() {
        for o in [Outcome::Busy, Outcome::NoAnswer, Outcome::Failed, Outcome::Interrupted] {
            assert_eq!(decide(o, 1, &RetryRules::default(), t0()), Next::Final(FinalState::Exhausted));
        }
    }

    #[test]
    fn huge_delays_saturate_instead_of_panicking() {
        let r = RetryRules { failed: RetryRule { max_attempts: 5, delay_s: u64::MAX }, ..rules() };
        assert_eq!(decide(Outcome::Failed, 1, &r, t0()), Next::RetryAt(DateTime::<Utc>::MAX_UTC));
    }

    #[test]
    fn names_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        for f in FinalState::ALL {
            assert_eq!(FinalState::parse(f.as_str()), Some(f));
        }
        assert_eq!(Outcome::parse("nope"), None);
    }
}
