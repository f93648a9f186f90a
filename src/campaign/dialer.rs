//! Choosing whom to dial next: due contacts inside their calling window.

use super::spec::CampaignSpec;
use super::store::{ContactRecord, Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::HashSet;

/// The most due contacts one call examines; the rest wait for the next call.
/// Bounds the work when a window closes on a large list (each examined
/// contact outside its window is deferred, in batches of one transaction).
pub const SCAN_LIMIT: usize = 10_000;

/// Up to `n` contacts of the campaign that are due at `now` and inside their
/// calling window (in their zone, else the campaign's), the longest-waiting
/// first. Due contacts found outside their window are deferred in the store
/// to its next opening, so they are not looked at again before then.
///
/// The contacts stay pending: `begin_attempt` each one before dialling it.
/// An empty result with `next_due_at` still in the past means the scan
/// limit was reached: call again.
pub fn next_to_dial(
    store: &mut Store,
    spec: &CampaignSpec,
    now: DateTime<Utc>,
    n: usize,
) -> Result<Vec<ContactRecord>, StoreError> {
    let mut picked: Vec<ContactRecord> = Vec::with_capacity(n);
    let mut seen: HashSet<i64> = HashSet::new();
    let mut examined = 0usize;
    while picked.len() < n && examined < SCAN_LIMIT {
        // Picked contacts are still pending and sort first: ask for them plus a batch of new ones.
        let batch = store.due(&spec.name, now, picked.len() + (n - picked.len()).max(256))?;
        let mut deferred = Vec::new();
        let mut new = 0usize;
        for c in batch {
            if !seen.insert(c.id.0) {
                continue;
            }
            new += 1;
            examined += 1;
            match spec.window.defer_until(spec.zone_of(c.timezone), now) {
                Some(at) => deferred.push((c.id, at)),
                None if picked.len() < n => picked.push(c),
                // Past our `n`: forget it so a later call sees it again.
                None => {
                    seen.remove(&c.id.0);
                }
            }
        }
        if !deferred.is_empty() {
            store.defer_many(&deferred)?;
        }
        if new == 0 || picked.len() == n {
            break;
        }
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::contacts;
    use crate::campaign::spec;
    use crate::campaign::store::ContactState;
    use crate::campaign::test_util::TempDir;
    use chrono::TimeZone;
    use std::path::Path;

    const SPEC: &str = "campaign:
  name: w
  agent: a
  contacts: c.csv
  timezone: Europe/London
  window: { start: \"09:00\", end: \"17:00\", days: [mon, tue, wed, thu, fri] }
";

    fn setup(d: &TempDir, csv: &str) -> (Store, CampaignSpec) {
        let spec = spec::parse(Path::new("/x/w.yaml"), SPEC).unwrap();
        let list = contacts::parse(Path::new("c.csv"), csv.as_bytes(), contacts::MAX_ROWS).unwrap();
        let mut store = Store::open(&d.db()).unwrap();
        store.import(&spec, &list, Utc.with_ymd_and_hms(2025, 6, 2, 0, 0, 0).unwrap()).unwrap();
        (store, spec)
    }

    #[test]
    fn contacts_outside_their_window_are_deferred_to_its_opening() {
        let d = TempDir::new("dialer");
        let (mut store, spec) = setup(&d, "number,timezone\n+4411,\n+1212,America/New_York\n+4412,Europe/London\n");
        // Monday 2025-06-02 10:00 UTC: 11:00 in London (open), 06:00 in New York (closed).
        let now = Utc.with_ymd_and_hms(2025, 6, 2, 10, 0, 0).unwrap();
        let picked = next_to_dial(&mut store, &spec, now, 5).unwrap();
        assert_eq!(picked.iter().map(|c| c.number.as_str()).collect::<Vec<_>>(), ["+4411", "+4412"]);
        let ny = store.contacts("w").unwrap().into_iter().find(|c| c.number == "+1212").unwrap();
        // 09:00 EDT = 13:00 UTC.
        assert_eq!(
            ny.state,
            ContactState::Pending { next_attempt_at: Utc.with_ymd_and_hms(2025, 6, 2, 13, 0, 0).unwrap() }
        );
        // Picked contacts stay pending until begun; asking again returns them again, and nothing more.
        assert_eq!(next_to_dial(&mut store, &spec, now, 5).unwrap().len(), 2);
        assert_eq!(next_to_dial(&mut store, &spec, now, 1).unwrap()[0].number, "+4411");
        assert!(next_to_dial(&mut store, &spec, now, 0).unwrap().is_empty());
    }

    #[test]
    fn a_closed_window_defers_many_contacts_in_batches() {
        let d = TempDir::new("dialer-many");
        let mut csv = String::from("number\n");
        for i in 0..1000 {
            csv.push_str(&format!("+44{i:06}\n"));
        }
        let (mut store, spec) = setup(&d, &csv);
        // Saturday: closed for everyone until Monday 09:00 BST.
        let now = Utc.with_ymd_and_hms(2025, 6, 7, 12, 0, 0).unwrap();
        assert!(next_to_dial(&mut store, &spec, now, 3).unwrap().is_empty());
        assert_eq!(store.status("w", now).unwrap().due_now, 0);
        assert_eq!(store.next_due_at("w").unwrap(), Some(Utc.with_ymd_and_hms(2025, 6, 9, 8, 0, 0).unwrap()));
    }
}
