//! The campaign file: YAML, one `campaign:` section.
//!
//! Like the appliance config, every key is known (an unknown one is an
//! error) and every error names the file, the line and the dotted key
//! (`crate::config::ConfigError`). Whether `agent` and `account` exist in
//! switchboard.yaml is checked by the caller, which has that file.

use super::rules::RetryRules;
use super::window::Window;
use crate::config::ConfigError;
use chrono::{NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Validation bounds: beyond them a value is a typo, not a plan.
pub const MAX_CONCURRENT: u32 = 10_000;
pub const MAX_CALLS_PER_SECOND: f64 = 1_000.0;
/// One call every 1000 s is the slowest pace.
pub const MIN_CALLS_PER_SECOND: f64 = 0.001;
pub const MAX_RING_TIMEOUT_S: u32 = 600;
pub const MAX_ATTEMPTS: u32 = 100;
/// 30 days.
pub const MAX_RETRY_DELAY_S: u64 = 30 * 24 * 3600;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignFile {
    campaign: CampaignConfig,
}

/// The `campaign:` section as written. The store keeps it (as JSON) so a
/// restart applies the rules the attempts were made under.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    pub name: String,
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub contacts: PathBuf,
    #[serde(default = "one")]
    pub max_concurrent: u32,
    #[serde(default = "one_f")]
    pub calls_per_second: f64,
    #[serde(default = "thirty")]
    pub ring_timeout_s: u32,
    /// Required when the window has hours (see `validate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub window: WindowConfig,
    #[serde(default)]
    pub retry: RetryRules,
    #[serde(default)]
    pub answering_machine: MachineConfig,
}

fn one() -> u32 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn thirty() -> u32 {
    30
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// `HH:MM`; with `end`, or both absent for all day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Absent: every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<Day>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl From<Day> for Weekday {
    fn from(d: Day) -> Weekday {
        match d {
            Day::Mon => Weekday::Mon,
            Day::Tue => Weekday::Tue,
            Day::Wed => Weekday::Wed,
            Day::Thu => Weekday::Thu,
            Day::Fri => Weekday::Fri,
            Day::Sat => Weekday::Sat,
            Day::Sun => Weekday::Sun,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    #[serde(default)]
    pub policy: MachinePolicyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MachinePolicyKind {
    #[default]
    Hangup,
    LeaveMessage,
    Ignore,
}

/// What to do when an answering machine picks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachinePolicy {
    /// Hang up at once (outcome `machine`).
    Hangup,
    /// Speak this text after the beep, then hang up (outcome `machine`).
    LeaveMessage(String),
    /// Let the agent talk as if a person answered (the outcome is then `answered`).
    Ignore,
}

/// A validated campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignSpec {
    /// The campaign file.
    pub file: PathBuf,
    pub name: String,
    pub agent: String,
    pub account: Option<String>,
    /// The contact list, resolved against the campaign file's folder.
    pub contacts: PathBuf,
    pub max_concurrent: usize,
    pub calls_per_second: f64,
    pub ring_timeout: Duration,
    /// For contacts whose row names no zone.
    pub timezone: Tz,
    pub window: Window,
    pub retry: RetryRules,
    pub answering_machine: MachinePolicy,
    /// The section as written (what the store keeps).
    pub source: CampaignConfig,
}

impl CampaignSpec {
    /// The zone of a contact: its own, else the campaign's.
    pub fn zone_of(&self, contact_zone: Option<Tz>) -> Tz {
        contact_zone.unwrap_or(self.timezone)
    }
}

/// Read and validate a campaign file.
pub fn load(path: &Path) -> Result<CampaignSpec, ConfigError> {
    parse(path, &crate::config::read_text(path)?)
}

/// Parse and validate campaign text; `path` is used in messages and to resolve `contacts`.
pub fn parse(path: &Path, text: &str) -> Result<CampaignSpec, ConfigError> {
    let file: CampaignFile = crate::config::from_yaml(path, text)?;
    validate(path, text, file.campaign)
}

fn validate(path: &Path, text: &str, c: CampaignConfig) -> Result<CampaignSpec, ConfigError> {
    let err = |key: &str, message: String| {
        let key = format!("campaign.{key}");
        ConfigError {
            file: path.to_path_buf(),
            line: crate::config::locate::line_of(text, &key),
            column: None,
            key,
            message,
        }
    };
    if c.name.is_empty() || !c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-')) {
        return Err(err("name", format!("`{}` is not a campaign name: use letters, digits, `_`, `.` and `-`", c.name)));
    }
    if c.agent.is_empty() {
        return Err(err("agent", "name the agent (one of switchboard.yaml's `agents`)".into()));
    }
    if c.contacts.as_os_str().is_empty() {
        return Err(err("contacts", "name the contact list (a CSV file)".into()));
    }
    if !(1..=MAX_CONCURRENT).contains(&c.max_concurrent) {
        return Err(err("max_concurrent", format!("{} is out of range 1..={MAX_CONCURRENT}", c.max_concurrent)));
    }
    if !(MIN_CALLS_PER_SECOND..=MAX_CALLS_PER_SECOND).contains(&c.calls_per_second) {
        return Err(err(
            "calls_per_second",
            format!(
                "{} is out of range {MIN_CALLS_PER_SECOND}..={MAX_CALLS_PER_SECOND} (0.5 is one call every 2 s)",
                c.calls_per_second
            ),
        ));
    }
    if !(1..=MAX_RING_TIMEOUT_S).contains(&c.ring_timeout_s) {
        return Err(err("ring_timeout_s", format!("{} is out of range 1..={MAX_RING_TIMEOUT_S}", c.ring_timeout_s)));
    }
    let timezone = match &c.timezone {
        Some(z) => z
            .parse::<Tz>()
            .map_err(|_| err("timezone", format!("unknown time zone `{z}` (an IANA name like Europe/London)")))?,
        None => chrono_tz::UTC,
    };
    let w = &c.window;
    let hours = match (&w.start, &w.end) {
        (None, None) => None,
        (Some(s), Some(e)) => {
            Some((parse_hhmm(s).map_err(|m| err("window.start", m))?, parse_hhmm(e).map_err(|m| err("window.end", m))?))
        }
        (Some(_), None) => return Err(err("window", "`start` needs an `end` (leave both out for all day)".into())),
        (None, Some(_)) => return Err(err("window", "`end` needs a `start` (leave both out for all day)".into())),
    };
    // Calling hours in an unstated zone would silently mean UTC: people would be called at night.
    if hours.is_some() && c.timezone.is_none() {
        return Err(err(
            "window",
            "a window with hours needs `timezone`: the zone of contacts whose row names none".into(),
        ));
    }
    let days: Vec<Weekday> = match &w.days {
        Some(d) => d.iter().map(|&d| d.into()).collect(),
        None => vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun],
    };
    let window = Window::new(hours, &days)
        .map_err(|m| err(if w.days.as_ref().is_some_and(Vec::is_empty) { "window.days" } else { "window" }, m))?;
    for (key, rule) in [("busy", c.retry.busy), ("no_answer", c.retry.no_answer), ("failed", c.retry.failed)] {
        if !(1..=MAX_ATTEMPTS).contains(&rule.max_attempts) {
            return Err(err(
                &format!("retry.{key}.max_attempts"),
                format!("{} is out of range 1..={MAX_ATTEMPTS} (1: no retry)", rule.max_attempts),
            ));
        }
        if rule.delay_s > MAX_RETRY_DELAY_S {
            return Err(err(
                &format!("retry.{key}.delay_s"),
                format!("{} is more than {MAX_RETRY_DELAY_S} (30 days)", rule.delay_s),
            ));
        }
    }
    let am = &c.answering_machine;
    let answering_machine = match (am.policy, &am.message) {
        (MachinePolicyKind::LeaveMessage, Some(m)) if !m.trim().is_empty() => MachinePolicy::LeaveMessage(m.clone()),
        (MachinePolicyKind::LeaveMessage, _) => {
            return Err(err("answering_machine", "policy leave_message needs `message:` (the text to speak)".into()))
        }
        (_, Some(_)) => {
            return Err(err("answering_machine.message", "`message` only applies to policy leave_message".into()))
        }
        (MachinePolicyKind::Hangup, None) => MachinePolicy::Hangup,
        (MachinePolicyKind::Ignore, None) => MachinePolicy::Ignore,
    };
    let contacts = if c.contacts.is_absolute() {
        c.contacts.clone()
    } else {
        path.parent().unwrap_or(Path::new(".")).join(&c.contacts)
    };
    Ok(CampaignSpec {
        file: path.to_path_buf(),
        name: c.name.clone(),
        agent: c.agent.clone(),
        account: c.account.clone(),
        contacts,
        max_concurrent: c.max_concurrent as usize,
        calls_per_second: c.calls_per_second,
        ring_timeout: Duration::from_secs(u64::from(c.ring_timeout_s)),
        timezone,
        window,
        retry: c.retry,
        answering_machine,
        source: c,
    })
}

/// `HH:MM`, 24-hour; `24:00` is accepted for the end of the day.
fn parse_hhmm(s: &str) -> Result<NaiveTime, String> {
    let bad = || format!("`{s}` is not a time of day: write HH:MM, 24-hour (\"09:00\", \"20:30\")");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if (h, m) == (24, 0) {
        return Ok(NaiveTime::MIN);
    }
    NaiveTime::from_hms_opt(h, m, 0).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"campaign:
  name: spring-reminders        # identity in the store
  agent: reminders
  account: pbx
  contacts: contacts.csv
  max_concurrent: 5
  calls_per_second: 2.0
  ring_timeout_s: 30
  timezone: Europe/London
  window: { start: "09:00", end: "20:00", days: [mon, tue, wed, thu, fri, sat, sun] }
  retry:
    busy: { max_attempts: 3, delay_s: 300 }
    no_answer: { max_attempts: 2, delay_s: 3600 }
    failed: { max_attempts: 2, delay_s: 600 }
  answering_machine: { policy: hangup }
"#;

    fn p(text: &str) -> Result<CampaignSpec, ConfigError> {
        parse(Path::new("/srv/campaigns/c.yaml"), text)
    }

    #[test]
    fn the_documented_example_parses() {
        let s = p(FULL).unwrap();
        assert_eq!(s.name, "spring-reminders");
        assert_eq!(s.account.as_deref(), Some("pbx"));
        assert_eq!(s.contacts, Path::new("/srv/campaigns/contacts.csv"));
        assert_eq!((s.max_concurrent, s.calls_per_second, s.ring_timeout), (5, 2.0, Duration::from_secs(30)));
        assert_eq!(s.timezone, chrono_tz::Europe::London);
        assert_eq!(
            s.window.hours().map(|(a, b)| (a.to_string(), b.to_string())),
            Some(("09:00:00".into(), "20:00:00".into()))
        );
        assert_eq!(s.window.days().count(), 7);
        assert_eq!(s.retry.no_answer.delay_s, 3600);
        assert_eq!(s.answering_machine, MachinePolicy::Hangup);
    }

    #[test]
    fn defaults_are_one_call_at_a_time_all_day_no_retry() {
        let s = p("campaign:\n  name: a\n  agent: b\n  contacts: /abs/c.csv\n").unwrap();
        assert_eq!(s.contacts, Path::new("/abs/c.csv"));
        assert_eq!((s.max_concurrent, s.calls_per_second), (1, 1.0));
        assert_eq!(s.window, Window::default());
        assert_eq!(s.retry, RetryRules::default());
        assert_eq!(s.timezone, chrono_tz::UTC);
    }

    #[test]
    fn unquoted_times_and_block_style_work() {
        let s = p("campaign:\n  name: a\n  agent: b\n  contacts: c.csv\n  timezone: UTC\n  window:\n    start: 20:00\n    end: 02:00\n").unwrap();
        assert!(s.window.hours().is_some());
    }

    fn err(text: &str) -> String {
        p(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_and_types_are_located() {
        assert_eq!(
            err("campaign:\n  name: a\n  agent: b\n  contacts: c.csv\n  max_concurrency: 3\n"),
            "/srv/campaigns/c.yaml:5:3: key `campaign.max_concurrency`: unknown field `max_concurrency`, expected one of `name`, `agent`, `account`, `contacts`, `max_concurrent`, `calls_per_second`, `ring_timeout_s`, `timezone`, `window`, `retry`, `answering_machine`"
        );
        let e = err("campaign:\n  name: a\n  agent: b\n  contacts: c.csv\n  max_concurrent: many\n");
        assert!(e.starts_with("/srv/campaigns/c.yaml:5:") && e.contains("key `campaign.max_concurrent`"), "{e}");
        let e = err("campaign:\n  name: a\n  agent: b\n  contacts: c.csv\n  window: { days: [mon, funday] }\n");
        assert!(e.contains("campaign.window.days") && e.contains("funday"), "{e}");
    }

    #[test]
    fn semantic_errors_name_line_and_key() {
        let base = "campaign:\n  name: a\n  agent: b\n  contacts: c.csv\n";
        let cases = [
            ("  max_concurrent: 0\n", 5, "campaign.max_concurrent", "out of range"),
            ("  calls_per_second: 0\n", 5, "campaign.calls_per_second", "out of range"),
            ("  calls_per_second: .nan\n", 5, "campaign.calls_per_second", "out of range"),
            ("  timezone: Mars/Base\n", 5, "campaign.timezone", "unknown time zone `Mars/Base`"),
            (
                "  timezone: UTC\n  window:\n    start: \"9am\"\n    end: \"17:00\"\n",
                7,
                "campaign.window.start",
                "not a time of day",
            ),
            (
                "  timezone: UTC\n  window:\n    start: \"09:00\"\n    end: \"25:00\"\n",
                8,
                "campaign.window.end",
                "not a time of day",
            ),
            (
                "  timezone: UTC\n  window: { start: \"09:00\", end: \"09:00\" }\n",
                6,
                "campaign.window",
                "start and end are both 09:00",
            ),
            ("  timezone: UTC\n  window: { start: \"09:00\" }\n", 6, "campaign.window", "needs an `end`"),
            ("  window:\n    start: \"09:00\"\n    end: \"17:00\"\n", 5, "campaign.window", "needs `timezone`"),
            ("  window:\n    days: []\n", 6, "campaign.window.days", "no days"),
            ("  retry:\n    busy:\n      max_attempts: 0\n", 7, "campaign.retry.busy.max_attempts", "out of range"),
            (
                "  retry:\n    failed: { max_attempts: 2, delay_s: 99999999 }\n",
                6,
                "campaign.retry.failed.delay_s",
                "30 days",
            ),
            ("  answering_machine: { policy: leave_message }\n", 5, "campaign.answering_machine", "needs `message:`"),
            (
                "  answering_machine:\n    policy: hangup\n    message: hi\n",
                7,
                "campaign.answering_machine.message",
                "only applies",
            ),
        ];
        for (extra, line, key, msg) in cases {
            let e = p(&format!("{base}{extra}")).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{extra}: {e}");
            assert!(e.message.contains(msg), "{extra}: {e}");
        }
        let e = p("campaign:\n  name: \"spring reminders\"\n  agent: b\n  contacts: c.csv\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(2), "campaign.name"));
    }

    #[test]
    fn leave_message_keeps_its_text() {
        let s = p("campaign:\n  name: a\n  agent: b\n  contacts: c.csv\n  answering_machine: { policy: leave_message, message: \"Please call us back.\" }\n").unwrap();
        assert_eq!(s.answering_machine, MachinePolicy::LeaveMessage("Please call us back.".into()));
    }

    #[test]
    fn garbage_never_panics() {
        for t in [
            "",
            "campaign:",
            "- a\n- b",
            "campaign: [1, 2]",
            "campaign:\n  name: [",
            "\u{0}\u{1}",
            "campaign: { name: a, agent: b, contacts: c, max_concurrent: -1 }",
        ] {
            assert!(p(t).is_err(), "{t:?}");
        }
    }

    #[test]
    fn missing_file_names_it() {
        let e = load(Path::new("/nonexistent/c.yaml")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/c.yaml: cannot read file"), "{e}");
    }
}
