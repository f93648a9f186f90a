//! Calling windows in the contact's local time.
//!
//! A window is a daily span of wall-clock time (`09:00`–`20:00`) on chosen
//! days of the week. It may wrap past midnight (`20:00`–`02:00`): the day
//! named in `days` is the day the span *starts*, so a Friday 20:00–02:00
//! window includes Saturday 00:00–02:00.
//!
//! Daylight-saving time. A span is turned into an interval of real instants:
//! it opens the first instant the local clock reads `start` and closes the
//! first instant it reads `end`, both reached from before. This one rule
//! settles both kinds of transition:
//! * a gap (spring forward, 01:30 does not exist in London): the boundary is
//!   the transition itself, the first instant whose reading is past it — a
//!   window starting at 01:30 opens at 02:00 BST that day;
//! * an overlap (fall back, 01:30 happens twice): the boundary is the first
//!   occurrence. A window ending at 01:30 closes at the first 01:30 and stays
//!   closed when the clock goes back: we err on the side of not calling.
//!
//! The day's span can therefore be an hour longer or shorter on transition
//! days, which is what a person looking at their clock expects.

use chrono::{DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

/// A validated calling window (see the module note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `None`: all day.
    hours: Option<(NaiveTime, NaiveTime)>,
    /// Indexed by `Weekday::num_days_from_monday`; at least one is set.
    days: [bool; 7],
}

impl Default for Window {
    /// All day, every day.
    fn default() -> Self {
        Window { hours: None, days: [true; 7] }
    }
}

impl Window {
    /// `hours`: `(start, end)`, which must differ; `days`: at least one.
    pub fn new(hours: Option<(NaiveTime, NaiveTime)>, days: &[Weekday]) -> Result<Window, String> {
        if let Some((s, e)) = hours {
            if s == e {
                return Err(format!("start and end are both {} (leave both out for all day)", s.format("%H:%M")));
            }
        }
        if days.is_empty() {
            return Err("no days: name at least one (mon … sun), or leave `days` out for every day".into());
        }
        let mut set = [false; 7];
        for d in days {
            set[d.num_days_from_monday() as usize] = true;
        }
        Ok(Window { hours, days: set })
    }

    pub fn hours(&self) -> Option<(NaiveTime, NaiveTime)> {
        self.hours
    }

    pub fn days(&self) -> impl Iterator<Item = Weekday> + '_ {
        (0..7u8).filter(|&i| self.days[i as usize]).filter_map(|i| Weekday::try_from(i).ok())
    }

    pub fn is_open(&self, tz: Tz, now: DateTime<Utc>) -> bool {
        next_open(self, tz, now) == now
    }

    /// `None` when open now; else when it opens (for `Store::defer`).
    pub fn defer_until(&self, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let at = next_open(self, tz, now);
        (at != now).then_some(at)
    }

    /// The span that starts on local date `d`, as instants (possibly empty on a DST day).
    fn span(&self, tz: Tz, d: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.days[d.weekday().num_days_from_monday() as usize] {
            return None;
        }
        let (start, end) = self.hours.unwrap_or((NaiveTime::MIN, NaiveTime::MIN));
        let end_day = if end <= start { d.checked_add_days(Days::new(1))? } else { d };
        Some((first_reading(tz, d.and_time(start))?, first_reading(tz, end_day.and_time(end))?))
    }
}

/// When the window is next open for a contact in `tz`: `now` itself if it is open now.
pub fn next_open(window: &Window, tz: Tz, now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.with_timezone(&tz).date_naive();
    let mut best: Option<DateTime<Utc>> = None;
    // Yesterday's span may still be open (it wraps, or DST stretched it); two
    // weeks ahead cover every enabled weekday even if a day's span vanished
    // in a DST gap or the day itself did (Samoa skipped 2011-12-30).
    for offset in -1i64..=15 {
        let Some(d) = shift(today, offset) else { continue };
        let Some((open, close)) = window.span(tz, d) else { continue };
        if open <= now && now < close {
            return now;
        }
        if open > now && open < close && best.is_none_or(|b| open < b) {
            best = Some(open);
        }
    }
    // Unreachable for a validated window (some day is enabled); never panic on it.
    best.unwrap_or_else(|| now + chrono::Duration::days(1))
}

fn shift(d: NaiveDate, days: i64) -> Option<NaiveDate> {
    if days >= 0 {
        d.checked_add_days(Days::new(days as u64))
    } else {
        d.checked_sub_days(Days::new(days.unsigned_abs()))
    }
}

/// The first instant at which the clock in `tz` reads `local` or later (see the module note).
fn first_reading(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => {
            // In a gap: binary search the transition. Offsets lie within
            // ±15 h, so the instant is within that of `local` read as UTC,
            // and the reading only moves forward across a gap.
            let mut lo = local.and_utc().checked_sub_signed(chrono::Duration::hours(16))?;
            let mut hi = local.and_utc().checked_add_signed(chrono::Duration::hours(16))?;
            while hi - lo > chrono::Duration::seconds(1) {
                let mid = lo + (hi - lo) / 2;
                if mid.with_timezone(&tz).naive_local() >= local {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            // Transitions fall on whole seconds: `hi` is the transition.
            Some(hi)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Europe::London};

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }
    const ALL: [Weekday; 7] =
        [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];

    #[test]
    fn all_day_is_always_open() {
        let w = Window::default();
        let now = utc(2025, 3, 30, 1, 30);
        assert_eq!(next_open(&w, London, now), now);
    }

    #[test]
    fn office_hours_in_the_contacts_zone() {
        let w = Window::new(Some((hm(9, 0), hm(20, 0))), &ALL).unwrap();
        // 2025-06-02 is a Monday; London is UTC+1 in June.
        assert_eq!(next_open(&w, London, utc(2025, 6, 2, 7, 59)), utc(2025, 6, 2, 8, 0));
        assert_eq!(next_open(&w, London, utc(2025, 6, 2, 8, 0)), utc(2025, 6, 2, 8, 0));
        assert_eq!(next_open(&w, London, utc(2025, 6, 2, 18, 59)), utc(2025, 6, 2, 18, 59));
        // 20:00 local is closed: opens tomorrow 09:00 local.
        assert_eq!(next_open(&w, London, utc(2025, 6, 2, 19, 0)), utc(2025, 6, 3, 8, 0));
        // The same instant in New York (UTC-4) is 15:00: open.
        assert!(w.is_open(New_York, utc(2025, 6, 2, 19, 0)));
    }

    #[test]
    fn weekdays_only_skip_the_weekend() {
        let w = Window::new(Some((hm(9, 0), hm(17, 0))), &ALL[..5]).unwrap();
        // Friday 2025-06-06 18:00 BST → Monday 09:00 BST.
        assert_eq!(next_open(&w, London, utc(2025, 6, 6, 17, 0)), utc(2025, 6, 9, 8, 0));
        assert_eq!(w.defer_until(London, utc(2025, 6, 7, 12, 0)), Some(utc(2025, 6, 9, 8, 0)));
    }

    #[test]
    fn a_window_wrapping_past_midnight_belongs_to_its_start_day() {
        // Friday only, 20:00–02:00 UTC zone for clarity.
        let w = Window::new(Some((hm(20, 0), hm(2, 0))), &[Weekday::Fri]).unwrap();
        let tz = chrono_tz::UTC;
        // Friday 2025-06-06 19:00 → opens 20:00.
        assert_eq!(next_open(&w, tz, utc(2025, 6, 6, 19, 0)), utc(2025, 6, 6, 20, 0));
        // Saturday 01:00 is inside Friday's span.
        assert_eq!(next_open(&w, tz, utc(2025, 6, 7, 1, 0)), utc(2025, 6, 7, 1, 0));
        // Saturday 02:00 closed; Saturday 21:00 is not a window (Saturday not enabled) → next Friday.
        assert_eq!(next_open(&w, tz, utc(2025, 6, 7, 2, 0)), utc(2025, 6, 13, 20, 0));
        assert_eq!(next_open(&w, tz, utc(2025, 6, 7, 21, 0)), utc(2025, 6, 13, 20, 0));
        // Friday 01:00 belongs to Thursday's span, which is off.
        assert_eq!(next_open(&w, tz, utc(2025, 6, 6, 1, 0)), utc(2025, 6, 6, 20, 0));
    }

    #[test]
    fn spring_forward_gap_opens_at_the_transition() {
        // London 2025-03-30: 01:00 GMT → 02:00 BST (01:00 UTC). 01:30 does not exist.
        let w = Window::new(Some((hm(1, 30), hm(9, 0))), &ALL).unwrap();
        assert_eq!(next_open(&w, London, utc(2025, 3, 30, 0, 10)), utc(2025, 3, 30, 1, 0));
        // Open right after the jump (02:00 BST).
        assert!(w.is_open(London, utc(2025, 3, 30, 1, 0)));
        // Closes at 09:00 BST = 08:00 UTC.
        assert_eq!(next_open(&w, London, utc(2025, 3, 30, 8, 0)), utc(2025, 3, 31, 0, 30));
    }

    #[test]
    fn fall_back_overlap_uses_the_first_occurrence() {
        // London 2025-10-26: 02:00 BST → 01:00 GMT (01:00 UTC). 01:30 happens at 00:30 and 01:30 UTC.
        let w = Window::new(Some((hm(1, 30), hm(9, 0))), &ALL).unwrap();
        assert_eq!(next_open(&w, London, utc(2025, 10, 26, 0, 0)), utc(2025, 10, 26, 0, 30));
        // An end at 01:30 closes at the first 01:30 and does not reopen when the clock goes back.
        let w = Window::new(Some((hm(20, 0), hm(1, 30))), &ALL).unwrap();
        assert!(w.is_open(London, utc(2025, 10, 26, 0, 29)));
        assert!(!w.is_open(London, utc(2025, 10, 26, 0, 30)));
        assert!(!w.is_open(London, utc(2025, 10, 26, 1, 15)));
        // The span that night was 20:00 BST (19:00 UTC) to the first 01:30 (00:30 UTC).
        assert!(w.is_open(London, utc(2025, 10, 25, 19, 0)));
    }

    #[test]
    fn a_span_swallowed_by_a_gap_is_skipped() {
        // 01:10–01:50 lies wholly in London's spring gap: that day has no window.
        let w = Window::new(Some((hm(1, 10), hm(1, 50))), &ALL).unwrap();
        assert_eq!(next_open(&w, London, utc(2025, 3, 30, 0, 0)), utc(2025, 3, 31, 0, 10));
    }

    #[test]
    fn invalid_windows_are_refused() {
        assert!(Window::new(Some((hm(9, 0), hm(9, 0))), &ALL).is_err());
        assert!(Window::new(None, &[]).is_err());
    }

    #[test]
    fn a_day_lost_to_a_date_line_move_does_not_break_the_search() {
        // Samoa skipped 2011-12-30 entirely.
        let w = Window::new(Some((hm(9, 0), hm(17, 0))), &[Weekday::Fri]).unwrap();
        let tz = chrono_tz::Pacific::Apia;
        let at = next_open(&w, tz, utc(2011, 12, 29, 0, 0));
        assert!(at > utc(2011, 12, 29, 0, 0));
        assert!(w.is_open(tz, at));
    }
}
