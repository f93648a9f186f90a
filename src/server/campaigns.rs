//! Running campaigns inside the appliance. Each campaign runs on its own thread (the SQLite store
//! blocks on fsync; the async runtime never waits for it): it paces its contacts, asks the server
//! loop to dial each one (`Command::Dial`, with the attempt committed first and its Call-ID chosen
//! here), and stores each outcome with the call's transcript and tool results from the call record.
//!
//! A campaign that is running has a marker file beside the store (`<store>.running/<name>`, holding
//! the campaign file's path); the appliance resumes those at start-up, so a crash or a restart
//! continues where the store says it stopped (`Store::recover`).

use super::{Command, DialRequest, OutboundUpdate};
use crate::campaign::{self, AttemptId, AttemptResult, CampaignSpec, DialPacer, Outcome, Store};
use chrono::Utc;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// The campaigns this appliance runs, by name.
#[derive(Clone, Default)]
pub struct Campaigns {
    inner: Arc<Mutex<BTreeMap<String, Running>>>,
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set by the thread when it ends: why (None = finished every contact).
    ended: Arc<Mutex<Option<Option<String>>>>,
}

/// Where a campaign's marker lives.
fn marker(store: &Path, name: &str) -> PathBuf {
    let mut dir = store.as_os_str().to_os_string();
    dir.push(".running");
    PathBuf::from(dir).join(name)
}

impl Campaigns {
    /// Start (or resume) the campaign in `file`; an error says what is wrong with it.
    pub fn start(
        &self,
        file: &Path,
        store_path: &Path,
        cfg: &crate::config::Config,
        cmds: mpsc::UnboundedSender<Command>,
    ) -> Result<String, String> {
        let spec = campaign::spec::load(file).map_err(|e| e.to_string())?;
        if !cfg.agents.contains_key(&spec.agent) {
            return Err(format!("{}: campaign.agent: unknown agent `{}`", file.display(), spec.agent));
        }
        if let Some(a) = &spec.account {
            if !cfg.accounts.contains_key(a) {
                return Err(format!("{}: campaign.account: unknown account `{a}`", file.display()));
            }
        }
        let list = campaign::contacts::load(&spec.contacts).map_err(|e| e.to_string())?;
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = map.get(&spec.name) {
            if r.ended.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
                return Err(format!("campaign `{}` is already running", spec.name));
            }
        }
        // Open, import and lock here, so the caller hears at once what is wrong.
        let mut store = Store::open(store_path).map_err(|e| e.to_string())?;
        let counts = store.import(&spec, &list, Utc::now()).map_err(|e| e.to_string())?;
        let lock = store.lock_campaign(&spec.name).map_err(|e| e.to_string())?;
        let recovered = store.recover(&lock, Utc::now()).map_err(|e| e.to_string())?;
        info!(campaign = %spec.name, contacts = list.contacts.len(), added = counts.added, recovered, "campaign starting");
        let m = marker(store_path, &spec.name);
        if let Some(dir) = m.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let abs = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        std::fs::write(&m, abs.display().to_string()).map_err(|e| format!("{}: {e}", m.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(Mutex::new(None));
        let name = spec.name.clone();
        let (stop2, ended2) = (stop.clone(), ended.clone());
        let thread = std::thread::Builder::new()
            .name(format!("campaign-{name}"))
            .spawn(move || {
                let r = Runner { spec, store, _lock: lock, cmds, stop: stop2, marker: m }.run();
                if let Err(e) = &r {
                    error!(error = %e, "campaign stopped");
                }
                *ended2.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.err());
            })
            .map_err(|e| format!("cannot start the campaign thread: {e}"))?;
        map.insert(name.clone(), Running { stop, thread: Some(thread), ended });
        Ok(name)
    }

    /// Resume the campaigns that were running when the appliance last stopped.
    pub fn resume(&self, store_path: &Path, cfg: &crate::config::Config, cmds: &mpsc::UnboundedSender<Command>) {
        let mut dir = store_path.as_os_str().to_os_string();
        dir.push(".running");
        let Ok(entries) = std::fs::read_dir(PathBuf::from(dir)) else { return };
        for e in entries.flatten() {
            let Ok(file) = std::fs::read_to_string(e.path()) else { continue };
            match self.start(Path::new(file.trim()), store_path, cfg, cmds.clone()) {
                Ok(name) => info!(campaign = %name, "campaign resumed"),
                Err(err) => warn!(marker = %e.path().display(), error = %err, "cannot resume campaign"),
            }
        }
    }

    /// Ask every campaign to stop dialling; their calls in progress still end and are stored.
    pub fn stop_all(&self) {
        for r in self.inner.lock().unwrap_or_else(|p| p.into_inner()).values() {
            r.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Wait (bounded) for the campaign threads to store their last results.
    pub fn join_all(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for r in map.values_mut() {
            while Instant::now() < deadline && r.thread.as_ref().is_some_and(|t| !t.is_finished()) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(t) = r.thread.take().filter(|t| t.is_finished()) {
                let _ = t.join();
            }
        }
    }

    /// `running`, `finished`, `failed: why`, or None for a campaign this appliance has not run.
    pub fn state(&self, name: &str) -> Option<String> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let r = map.get(name)?;
        let ended = r.ended.lock().unwrap_or_else(|p| p.into_inner());
        Some(match &*ended {
            None => "running".into(),
            Some(None) => "finished".into(),
            Some(Some(e)) => format!("failed: {e}"),
        })
    }
}

/// A campaign's status as JSON (`GET /campaigns/{name}`, `switchboard campaign status`).
pub fn status_json(store: &Store, name: &str) -> Result<serde_json::Value, String> {
    let s = store.status(name, Utc::now()).map_err(|e| e.to_string())?;
    let finals: serde_json::Map<String, serde_json::Value> =
        s.finals.iter().map(|(k, v)| (k.as_str().to_string(), (*v).into())).collect();
    let outcomes: serde_json::Map<String, serde_json::Value> =
        s.outcomes.iter().map(|(k, v)| (k.as_str().to_string(), (*v).into())).collect();
    Ok(serde_json::json!({
        "campaign": name,
        "contacts": s.contacts,
        "pending": s.pending,
        "due_now": s.due_now,
        "dialing": s.dialing,
        "final": finals,
        "attempts": s.attempts,
        "outcomes": outcomes,
        "next_due_at": s.next_due_at.map(|t| t.to_rfc3339()),
        "done": s.is_done(),
    }))
}

struct Runner {
    spec: CampaignSpec,
    store: Store,
    _lock: campaign::RunLock,
    cmds: mpsc::UnboundedSender<Command>,
    stop: Arc<AtomicBool>,
    marker: PathBuf,
}

impl Runner {
    fn run(mut self) -> Result<(), String> {
        let name = self.spec.name.clone();
        let mut pacer = DialPacer::new(self.spec.max_concurrent, self.spec.calls_per_second);
        // The previous run's last call counts against the rate (a restart takes milliseconds).
        if let Some(last) = self.store.last_attempt_started(&name).map_err(|e| e.to_string())? {
            let ago = (Utc::now() - last).to_std().unwrap_or(Duration::ZERO);
            if let Some(at) = Instant::now().checked_sub(ago) {
                pacer.started(at);
            }
        }
        let (tx, rx) = std::sync::mpsc::channel::<(AttemptId, OutboundUpdate)>();
        // Attempts in flight: when each started (for the answered duration when no record comes).
        let mut active: HashMap<AttemptId, Instant> = HashMap::new();
        loop {
            while let Ok((id, u)) = rx.try_recv() {
                self.on_update(id, u, &mut active)?;
            }
            let stopping = self.stop.load(Ordering::Relaxed);
            if stopping && active.is_empty() {
                info!(campaign = %name, "campaign paused (the appliance is stopping); it resumes at the next start");
                return Ok(());
            }
            let now = Instant::now();
            if !stopping {
                let n = pacer.allowance(now, active.len());
                if n > 0 {
                    let due = campaign::next_to_dial(&mut self.store, &self.spec, Utc::now(), n)
                        .map_err(|e| e.to_string())?;
                    for c in due {
                        let call_id =
                            format!("{:016x}{:08x}@switchboard-campaign", rand::random::<u64>(), rand::random::<u32>());
                        // Committed before the INVITE exists: a crash from here on never dials this attempt twice.
                        let id = self.store.begin_attempt(c.id, Utc::now(), &call_id).map_err(|e| e.to_string())?;
                        pacer.started(Instant::now());
                        let (rtx, rrx) = tokio::sync::oneshot::channel();
                        let tx = tx.clone();
                        let req = DialRequest {
                            to: c.number.clone(),
                            agent: self.spec.agent.clone(),
                            account: self.spec.account.clone(),
                            ring_timeout_s: self.spec.ring_timeout.as_secs().max(1),
                            variables: c.variables.clone(),
                            call_id: Some(call_id.clone()),
                            answering_machine: match &self.spec.answering_machine {
                                campaign::MachinePolicy::Hangup => Some(crate::agent::amd_gate::MachinePolicy::Hangup),
                                campaign::MachinePolicy::LeaveMessage(m) => {
                                    Some(crate::agent::amd_gate::MachinePolicy::LeaveMessage(m.clone()))
                                }
                                campaign::MachinePolicy::Ignore => None,
                            },
                        };
                        let notify: super::Notify = Box::new(move |u| {
                            let _ = tx.send((id, u));
                        });
                        let sent =
                            self.cmds.send(Command::Dial { req, next_hop: None, notify: Some(notify), reply: rtx });
                        let placed = match sent {
                            Ok(()) => rrx.blocking_recv().unwrap_or_else(|_| Err("the appliance is stopping".into())),
                            Err(_) => Err("the appliance is stopping".into()),
                        };
                        match placed {
                            Ok(_) => {
                                info!(campaign = %name, number = %c.number, %call_id, attempt = c.attempts + 1, "campaign call placed");
                                active.insert(id, Instant::now());
                            }
                            Err(e) => {
                                warn!(campaign = %name, number = %c.number, error = %e, "campaign call not placed");
                                let r = AttemptResult::without_call(Outcome::Failed, None, Some(e));
                                self.store.finish_attempt(id, &r, Utc::now()).map_err(|e| e.to_string())?;
                            }
                        }
                    }
                }
                if active.is_empty() {
                    let s = self.store.status(&name, Utc::now()).map_err(|e| e.to_string())?;
                    if s.is_done() {
                        info!(campaign = %name, attempts = s.attempts, "campaign finished: every contact is final");
                        let _ = std::fs::remove_file(&self.marker);
                        return Ok(());
                    }
                }
            }
            // Sleep until a call ends, the pacer allows another, or a retry falls due (at most 1 s).
            let mut wake = now + Duration::from_secs(1);
            if let Some(w) = pacer.next_wake(now) {
                wake = wake.min(w);
            }
            if let Some(at) = self.store.next_due_at(&name).map_err(|e| e.to_string())? {
                let ms = (at - Utc::now()).num_milliseconds().max(0) as u64;
                wake = wake.min(now + Duration::from_millis(ms));
            }
            let wait = wake.saturating_duration_since(Instant::now()).max(Duration::from_millis(5));
            if let Ok((id, u)) = rx.recv_timeout(wait) {
                self.on_update(id, u, &mut active)?;
            }
        }
    }

    fn on_update(
        &mut self,
        id: AttemptId,
        u: OutboundUpdate,
        active: &mut HashMap<AttemptId, Instant>,
    ) -> Result<(), String> {
        let OutboundUpdate::Ended { outcome, code, reason, record_path } = u else { return Ok(()) };
        let started = active.remove(&id);
        let outcome = match outcome.as_str() {
            "answered" => Outcome::Answered,
            "busy" => Outcome::Busy,
            "no_answer" => Outcome::NoAnswer,
            _ => Outcome::Failed,
        };
        let mut result = AttemptResult::without_call(outcome, code, Some(reason));
        if outcome == Outcome::Answered {
            result.duration_ms = started.map(|s| s.elapsed().as_millis() as u64).unwrap_or(0);
            if let Some(rec) = record_path.as_deref().and_then(read_record) {
                if rec["amd"]["machine"] == true {
                    result.outcome = Outcome::Machine;
                }
                result.duration_ms = rec["duration_ms"].as_u64().unwrap_or(result.duration_ms);
                result.transcript = campaign::attempt::transcript_from_record(&rec);
                result.tools = rec["tools"].clone();
                result.detail = rec["end_reason"].as_str().map(str::to_string);
                if let Some(reason) = rec["amd"]["reason"].as_str() {
                    let who = if rec["amd"]["machine"] == true { "machine" } else { "person" };
                    result.detail =
                        Some(format!("{} (answered by a {who}: {reason})", result.detail.unwrap_or_default()));
                }
            }
        }
        self.store.finish_attempt(id, &result, Utc::now()).map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn read_record(path: &str) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}
