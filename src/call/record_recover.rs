//! Start-up recovery of call records (see `record.rs`): every journal a stopped appliance left
//! in `active/` becomes a record ending `interrupted`; half-written temporary records are removed.
//! Nothing here may stop the appliance from starting: an unreadable journal is set aside
//! (`.corrupt`) and reported, never fatal.

use super::record::ACTIVE_DIR;
use serde_json::Value;
use std::io::BufRead;
use std::path::Path;

/// What start-up recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Records written from journals of calls cut by the stop.
    pub records: usize,
    /// Journals whose record had already been written (the stop came between the two steps).
    pub already_written: usize,
    /// Half-written temporary records removed.
    pub temp_removed: usize,
    /// Journals that could not be read at all, renamed `.corrupt`.
    pub corrupt: usize,
    /// Journals whose last line was cut mid-write (the lines before it were kept).
    pub torn: usize,
}

pub const INTERRUPTED: &str = "interrupted: the appliance stopped during the call";

pub fn recover(dir: &Path) -> std::io::Result<Recovered> {
    let mut out = Recovered::default();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') && name.ends_with(".tmp") {
            std::fs::remove_file(&path)?;
            out.temp_removed += 1;
        }
    }
    let active = dir.join(ACTIVE_DIR);
    if !active.exists() {
        return Ok(out);
    }
    let mut journals: Vec<_> = std::fs::read_dir(&active)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    journals.sort();
    for journal in journals {
        let stem = journal.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
        let final_path = dir.join(format!("{stem}.json"));
        if final_path.exists() {
            std::fs::remove_file(&journal)?;
            out.already_written += 1;
            continue;
        }
        match rebuild(&journal) {
            Some((record, torn)) => {
                let data = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
                super::record::write_atomic(dir, &format!("{stem}.json"), &data)?;
                std::fs::remove_file(&journal)?;
                out.records += 1;
                out.torn += usize::from(torn);
            }
            None => {
                std::fs::rename(&journal, journal.with_extension("jsonl.corrupt"))?;
                out.corrupt += 1;
            }
        }
    }
    std::fs::File::open(&active)?.sync_all()?;
    Ok(out)
}

/// The record a journal describes, and whether its last line was torn. None without a readable
/// first line (the call's identity).
fn rebuild(journal: &Path) -> Option<(Value, bool)> {
    let file = std::fs::File::open(journal).ok()?;
    let mut lines = std::io::BufReader::new(file).lines();
    let first: Value = serde_json::from_str(&lines.next()?.ok()?).ok()?;
    let mut record = first.get("start")?.clone();
    record.as_object()?;
    let mut torn = false;
    let mut last_ms = 0u64;
    for line in lines {
        let Ok(line) = line else {
            torn = true;
            break;
        };
        let Ok(change) = serde_json::from_str::<Value>(&line) else {
            // Only the last line can be cut by a kill; anything after it would be garbage too.
            torn = true;
            break;
        };
        let v = change.get("v").cloned().unwrap_or(Value::Null);
        if let Some(t) = v.get("t_ms").and_then(Value::as_u64) {
            last_ms = last_ms.max(t);
        }
        if let Some(field) = change.get("push").and_then(Value::as_str) {
            if let Some(list) = record.get_mut(field).and_then(Value::as_array_mut) {
                list.push(v);
            }
        } else if let Some(field) = change.get("set").and_then(Value::as_str) {
            record[field] = v;
        }
    }
    record["end_reason"] = Value::from(INTERRUPTED);
    record["duration_ms"] = Value::from(last_ms);
    Some((record, torn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::record::Recorder;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sb-recover-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_call_cut_by_a_kill_is_recovered_with_what_it_had_and_a_finished_one_is_untouched() {
        let dir = tmp("cut");
        let mut cut = Recorder::new(dir.clone(), "cut@x", "sip:a@x", "1000", "sales");
        cut.dtmf('5');
        cut.speech(crate::models::vad::VadEvent::SpeechStarted { audio_start_ms: 120 });
        let done = Recorder::new(dir.clone(), "done@x", "sip:b@x", "1000", "sales");
        let done_path = done.finish("remote_bye", None).unwrap();
        // The process dies here: `cut` never finishes (leak it, as a kill would).
        std::mem::forget(cut);
        // A kill in the middle of writing another record leaves its temporary file.
        std::fs::write(dir.join(".999-half.json.tmp"), b"{\"call_id\": \"ha").unwrap();

        let r = recover(&dir).unwrap();
        assert_eq!((r.records, r.temp_removed, r.corrupt, r.already_written), (1, 1, 0, 0));
        let records: Vec<Value> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        assert_eq!(records.len(), 2);
        let cut = records.iter().find(|r| r["call_id"] == "cut@x").expect("the cut call has a record");
        assert_eq!(cut["end_reason"], INTERRUPTED);
        assert_eq!(cut["agent"], "sales");
        let kinds: Vec<&str> = cut["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["dtmf", "speech_started"]);
        let done: Value = serde_json::from_slice(&std::fs::read(&done_path).unwrap()).unwrap();
        assert_eq!(done["end_reason"], "remote_bye");
        assert_eq!(std::fs::read_dir(dir.join(ACTIVE_DIR)).unwrap().count(), 0, "no journal left");
        // A second start finds nothing to do.
        assert_eq!(recover(&dir).unwrap(), Recovered::default());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_last_line_keeps_the_lines_before_it_and_garbage_is_set_aside() {
        let dir = tmp("torn");
        let mut c = Recorder::new(dir.clone(), "torn@x", "sip:a@x", "1000", "sales");
        c.dtmf('1');
        c.dtmf('2');
        std::mem::forget(c);
        let active = dir.join(ACTIVE_DIR);
        let journal = std::fs::read_dir(&active).unwrap().next().unwrap().unwrap().path();
        let mut text = std::fs::read_to_string(&journal).unwrap();
        text.push_str("{\"push\":\"events\",\"v\":{\"t_ms\":9");
        std::fs::write(&journal, text).unwrap();
        std::fs::write(active.join("1-garbage.jsonl"), b"\x00\x01 not json").unwrap();

        let r = recover(&dir).unwrap();
        assert_eq!((r.records, r.torn, r.corrupt), (1, 1, 1));
        assert!(active.join("1-garbage.jsonl.corrupt").exists());
        let rec: Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{}.json", journal.file_stem().unwrap().to_str().unwrap()))).unwrap(),
        )
        .unwrap();
        assert_eq!(rec["events"].as_array().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_written_just_before_the_kill_is_not_doubled() {
        let dir = tmp("both");
        let c = Recorder::new(dir.clone(), "both@x", "sip:a@x", "1000", "sales");
        let journal = std::fs::read_dir(dir.join(ACTIVE_DIR)).unwrap().next().unwrap().unwrap().path();
        let saved = std::fs::read(&journal).unwrap();
        c.finish("remote_bye", None).unwrap();
        // As if the kill came between the record's rename and the journal's removal.
        std::fs::write(&journal, saved).unwrap();
        let r = recover(&dir).unwrap();
        assert_eq!((r.records, r.already_written), (0, 1));
        let n = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
            .count();
        assert_eq!(n, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
