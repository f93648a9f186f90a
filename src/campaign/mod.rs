//! Outbound campaigns: contacts, the dialer that paces them, and the store that keeps every attempt.
//!
//! The pieces, none doing network I/O:
//! * `spec` — the campaign file (YAML), validated like the appliance config;
//! * `contacts` — the contact list (CSV): numbers, zones, `{name}` variables;
//! * `window` — calling windows in the contact's local time;
//! * `rules` — outcomes, and whether and when to try again;
//! * `pacer` — how fast calls may start (sans-IO, explicit `now`);
//! * `dialer` — which due contacts to dial now (deferring those outside their window);
//! * `store` — SQLite: campaigns, contacts, attempts, exports;
//! * `attempt` — what the driver reports when a call ends.
//!
//! # The restart guarantee
//!
//! Nobody is dialled twice by accident, and no result is lost, whatever
//! moment the process dies at:
//! 1. `Store::begin_attempt` commits, in one transaction, the contact's move
//!    to `dialing` and the attempt's row — *before* the INVITE is sent. A
//!    contact that is `dialing` is never returned by `due`, and
//!    `begin_attempt` refuses it.
//! 2. `Store::finish_attempt` commits, in one transaction, the outcome (with
//!    transcript and tool results) and the contact's next state from the
//!    retry rules. A crash before it leaves the attempt open; after it, the
//!    result is on disk (`synchronous=FULL`).
//! 3. At start, `Store::recover` turns every open attempt into
//!    `interrupted`, which follows the `failed` retry rule: we cannot know
//!    whether the callee heard us, so it counts as an attempt, never as a
//!    completed call, and it is retried only if the operator's rules allow a
//!    second failed attempt, after their delay.
//! 4. Only one process runs a campaign: `recover` needs the campaign's
//!    `RunLock`, which the OS releases when its holder dies. Without it, a
//!    second runner's recovery could take the first one's live calls for
//!    dead ones.
//! 5. Re-importing a contact list never resets a stored contact, and a
//!    number twice in one list is refused.
//!
//! # The driver's loop
//!
//! ```text
//! spec = spec::load(file)?; list = contacts::load(&spec.contacts)?;
//! store = Store::open(path)?; store.import(&spec, &list, now)?;
//! lock = store.lock_campaign(&spec.name)?; store.recover(&lock, now)?;
//! pacer = DialPacer::new(spec.max_concurrent, spec.calls_per_second);
//! loop {
//!     n = pacer.allowance(instant, active);
//!     for c in dialer::next_to_dial(&mut store, &spec, now, n)? {
//!         id = store.begin_attempt(c.id, now, &call_id)?;   // committed …
//!         pacer.started(instant); send INVITE;                // … then dial
//!     }
//!     on each call's end: store.finish_attempt(id, &result, now)?;
//!     sleep until the first of: pacer.next_wake, store.next_due_at, a call ending;
//!     stop when store.status(..).is_done().
//! }
//! ```

pub mod attempt;
pub mod contacts;
pub mod dialer;
pub mod pacer;
pub mod rules;
pub mod spec;
pub mod store;
#[cfg(test)]
mod test_util;
pub mod window;

pub use attempt::AttemptResult;
pub use contacts::{Contact, ContactList, ContactsError};
pub use dialer::next_to_dial;
pub use pacer::DialPacer;
pub use rules::{decide, FinalState, Next, Outcome, RetryRule, RetryRules};
pub use spec::{CampaignSpec, MachinePolicy};
pub use store::{
    AttemptId, AttemptRecord, CampaignStatus, ContactId, ContactRecord, ContactState, ImportCounts, RunLock, Store,
    StoreError, StoreErrorKind,
};
pub use window::{next_open, Window};
