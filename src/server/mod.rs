//! The appliance: binds the listeners, owns the SIP endpoint, starts a call
//! task for each answered call, and shuts down gracefully.

mod accounts;
pub mod campaigns;
pub mod http;
mod metrics;
mod outbound;
pub mod tools;
mod transport;

use crate::agent::AgentSpec;
use crate::call::media::{CallMedia, MediaParams, MediaSettings, RtpIdentity};
use crate::call::task::{self, CallCtrl, SipAction, SipRequest};
use crate::config::{LoadedConfig, PortRange, TransportKind};
use crate::media::jitter::JitterConfig;
use crate::media::ports::PortPool;
use crate::metrics::Metrics;
use crate::sip::endpoint::{CallKey, Endpoint, EndpointConfig, Event, IncomingCall};
pub use accounts::{states_json as accounts_json, AccountStates};
use anyhow::{anyhow, Context};
use http::HttpState;
pub use outbound::{Command, DialRequest, Notify, OutboundStatus, OutboundTable, OutboundUpdate};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};
use transport::{Connections, Inbound};

/// Command-line overrides of the config's listen addresses.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub sip_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub rtp_ports: Option<PortRange>,
}

struct ActiveCall {
    ctrl: Option<mpsc::UnboundedSender<CallCtrl>>,
    port: u16,
    /// The call's task: it outlives the dialog to write the record (the last turn's transcript).
    task: Option<tokio::task::JoinHandle<()>>,
}

/// An outbound call between its INVITE and its answer: the media sockets named in our offer,
/// and who to tell how it goes.
struct PendingDial {
    sockets: Option<RtpSockets>,
    req: DialRequest,
    call: crate::sip::endpoint::OutgoingCall,
    notify: Option<Notify>,
}

type RtpSockets = (tokio::net::UdpSocket, tokio::net::UdpSocket, u16);

enum Control {
    Answer(CallKey),
}

/// Read a config file and check all of it: the document (`config::parse`) and what needs the
/// agents' own code (`agent::check_config`: instructions, tools, greeting files).
pub fn load_config(path: &std::path::Path) -> Result<LoadedConfig, crate::config::ConfigError> {
    let text = crate::config::read_text(path)?;
    let config = crate::config::parse(path, &text)?;
    crate::agent::check_config(path, &text, &config)?;
    Ok(LoadedConfig { path: path.to_path_buf(), config })
}

pub async fn run(loaded: LoadedConfig, ov: Overrides) -> anyhow::Result<()> {
    let cfg = &loaded.config;
    let sip_listen = ov.sip_listen.unwrap_or(cfg.sip.listen);
    let http_listen = ov.http_listen.unwrap_or(cfg.http.listen);
    let rtp = ov.rtp_ports.unwrap_or(cfg.media.rtp_ports);

    // Models first: a missing library or an unavailable strict provider stops start-up here.
    let mut models = crate::models::load_all(&loaded).map_err(|e| anyhow!("{e}"))?;
    for line in &models.summary {
        info!("{line}");
    }
    let mut agents = HashMap::new();
    for (name, a) in &cfg.agents {
        let voice = match &a.voice {
            Some(v) => models.voices.get(v),
            None => models.tts.as_ref(),
        };
        let runner = Arc::new(tools::HttpTools::new().map_err(|e| anyhow!("agent `{name}`: {e}"))?);
        let spec = AgentSpec::load(name, a, &loaded, voice, runner).map_err(|e| anyhow!("agent `{name}`: {e}"))?;
        agents.insert(name.clone(), spec);
    }
    let metrics = Arc::new(Metrics::new());
    if let Some(w) = &models.vad {
        metrics.model_info.with_label_values(&["vad", w.provider().label()]).set(1);
    }
    if let Some(t) = &models.turn {
        metrics.model_info.with_label_values(&["turn", t.provider().label()]).set(1);
    }
    if let Some(t) = &models.tts {
        metrics
            .model_info
            .with_label_values(&["tts", t.lock().unwrap_or_else(|p| p.into_inner()).provider().label()])
            .set(1);
    }
    for (name, v) in &models.voices {
        metrics
            .model_info
            .with_label_values(&[
                &format!("voice:{name}"),
                v.lock().unwrap_or_else(|p| p.into_inner()).provider().label(),
            ])
            .set(1);
    }
    for (name, w) in &models.asr {
        metrics.model_info.with_label_values(&[&format!("asr:{name}"), w.provider().label()]).set(1);
    }
    // Greetings are synthesised; the voices move to their worker threads for run-time speech.
    let mut speakers: HashMap<Option<String>, crate::models::tts_worker::TtsWorker> = HashMap::new();
    for (name, v) in std::mem::take(&mut models.voices) {
        let voice = v.into_inner().unwrap_or_else(|p| p.into_inner());
        let worker = crate::models::tts_worker::TtsWorker::spawn(voice, 64, &name);
        if let Some(load) = crate::models::voice_loader(&loaded, Some(&name)) {
            worker.watch(crate::models::tts_worker::HANG_LIMIT, load);
        }
        speakers.insert(Some(name.clone()), worker);
    }
    if let Some(v) = models.tts.take() {
        let voice = v.into_inner().unwrap_or_else(|p| p.into_inner());
        let worker = crate::models::tts_worker::TtsWorker::spawn(voice, 64, "default");
        if let Some(load) = crate::models::voice_loader(&loaded, None) {
            worker.watch(crate::models::tts_worker::HANG_LIMIT, load);
        }
        speakers.insert(None, worker);
    }
    let mut backends = HashMap::new();
    for (name, b) in cfg.models.iter().flat_map(|m| &m.llm) {
        let backend = match models.llm.remove(name) {
            Some(local) => crate::models::llm::LlmBackend::Local(local),
            None => {
                info!(llm = %name, base_url = ?b.base_url, model = ?b.model, "language model: openai-compatible endpoint");
                crate::models::llm::LlmBackend::OpenAi(llm_backend(&loaded, name, b)?)
            }
        };
        backends.insert(name.clone(), backend);
    }
    for spec in agents.values_mut() {
        spec.tts = speakers.get(&spec.config.voice).cloned();
        spec.llm = cfg.llm_model_of(&spec.config).and_then(|(n, _)| backends.get(n).cloned());
    }
    let record_dir = cfg.calls.record_dir.as_ref().map(|d| loaded.resolve(d));
    let draining = Arc::new(AtomicBool::new(false));
    let http = tokio::net::TcpListener::bind(http_listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {http_listen}"))?;
    let udp = Arc::new(
        tokio::net::UdpSocket::bind(sip_listen)
            .await
            .with_context(|| format!("cannot listen for SIP/UDP on {sip_listen}"))?,
    );
    let tcp = if cfg.sip.transports.contains(&TransportKind::Tcp) {
        Some(
            tokio::net::TcpListener::bind(sip_listen)
                .await
                .with_context(|| format!("cannot listen for SIP/TCP on {sip_listen}"))?,
        )
    } else {
        None
    };

    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(transport::INBOUND_QUEUE);
    let conns = Connections::default();
    if cfg.sip.transports.contains(&TransportKind::Udp) {
        transport::spawn_udp_reader(udp.clone(), sip_listen, in_tx.clone(), metrics.sip_queue_dropped.clone());
    }
    if let Some(l) = tcp {
        transport::spawn_tcp_acceptor(l, conns.clone(), in_tx.clone());
    }
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let account_states: accounts::AccountStates = Default::default();
    let account_specs = accounts::specs(&loaded, sip_listen).await?;
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Command>();
    let campaigns = campaigns::Campaigns::default();
    let campaign_store = loaded.resolve(&cfg.campaigns.store);
    // Campaign calls always keep a record: their transcript, tools and answering-machine verdict go to the store.
    let campaign_records = record_dir
        .clone()
        .unwrap_or_else(|| campaign_store.parent().unwrap_or(std::path::Path::new(".")).join("records"));
    // Calls cut by the last stop (a kill, a crash) get their records now, before any new call.
    for dir in [record_dir.as_deref(), Some(campaign_records.as_path())].into_iter().flatten() {
        match crate::call::record_recover::recover(dir) {
            Ok(r) if r != Default::default() => {
                warn!(dir = %dir.display(), recovered = r.records, already_written = r.already_written, torn_lines = r.torn, temp_removed = r.temp_removed, corrupt = r.corrupt, "recovered the records of calls cut by the last stop")
            }
            Ok(_) => {}
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "call record recovery failed; the journals are left in place")
            }
        }
    }
    let outbound_table = OutboundTable::default();
    let http_state = HttpState {
        metrics: metrics.clone(),
        draining: draining.clone(),
        accounts: account_states.clone(),
        commands: cmd_tx.clone(),
        outbound: outbound_table.clone(),
        admin_token: server_admin_token(&loaded)?,
        campaigns: campaigns.clone(),
        campaign_store: campaign_store.clone(),
        config: Arc::new(cfg.clone()),
    };
    let http_task = tokio::spawn(http::serve(http, http_state, async move {
        let _ = http_stop_rx.await;
    }));
    info!(sip = %sip_listen, transports = ?cfg.sip.transports, http = %http_listen, rtp = %format!("{}-{}", rtp.low, rtp.high), "switchboard listening");

    let mut endpoint_cfg = EndpointConfig::from_config(cfg);
    if let Some(auth) = endpoint_cfg.guard.auth.as_mut() {
        auth.users = inbound_users(&loaded)?;
    }
    let mut endpoint = Endpoint::new(endpoint_cfg, rand::random(), std::time::Instant::now());
    for spec in account_specs {
        info!(account = %spec.name, aor = %spec.aor(), via = %spec.next_hop, register = spec.register, "SIP account");
        accounts::record_state(&account_states, &metrics, &spec.name, &crate::sip::endpoint::RegState::Idle);
        endpoint.add_account(spec, std::time::Instant::now());
    }
    // Campaigns that were running when the appliance stopped go on (the store knows where).
    campaigns.resume(&campaign_store, cfg, &cmd_tx);
    // The first REGISTERs leave now, not with the loop's first wake-up.
    while let Some(t) = endpoint.poll_transmit() {
        transport::send(t, &udp, &conns, &in_tx);
    }
    let ports = Arc::new(Mutex::new(PortPool::new(rtp.low, rtp.high)));
    let (sip_tx, mut sip_rx) = mpsc::unbounded_channel::<SipRequest>();
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Control>();
    let mut calls: HashMap<CallKey, ActiveCall> = HashMap::new();
    // Tasks of calls whose dialog has ended, still finishing their records.
    let mut finishing: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut pending: HashMap<CallKey, PendingDial> = HashMap::new();
    // Answered outbound calls: who to tell when they end (after the call record is written).
    let mut outbound_live: HashMap<CallKey, String> = HashMap::new();
    let sip_transport = if cfg.sip.transports.contains(&TransportKind::Udp) {
        crate::sip::endpoint::Transport::Udp
    } else {
        crate::sip::endpoint::Transport::Tcp
    };
    let media_settings = media_settings(cfg);
    let media_ip = sip_listen.ip();

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install SIGTERM handler")?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot install SIGINT handler")?;
    let grace = Duration::from_secs(cfg.calls.shutdown_grace_s);
    let mut shutdown_at: Option<Instant> = None;
    let mut hard_stop_at: Option<Instant> = None;
    let mut last_stats = endpoint.stats();
    let mut last_blocked_count = Instant::now();
    // Admission from measured load: the waits of the models every call shares.
    let backlogs: Vec<(String, Arc<crate::models::backlog::Backlog>)> = models
        .asr
        .iter()
        .map(|(n, w)| (format!("asr.{n}"), w.backlog().clone()))
        .chain(backends.iter().filter_map(|(n, b)| Some((format!("llm.{n}"), b.backlog()?.clone()))))
        .collect();
    let max_wait = Duration::from_millis(cfg.calls.max_queue_wait_ms);
    let llm_stats: Vec<(String, Arc<crate::models::llm::local::LlmStats>)> =
        backends.iter().filter_map(|(n, b)| Some((n.to_string(), b.stats()?.clone()))).collect();
    let mut load_tick = tokio::time::interval(Duration::from_millis(500));
    load_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    loop {
        let timer = endpoint.poll_timeout().map(Instant::from_std);
        let deadline = [timer, shutdown_at, hard_stop_at].into_iter().flatten().min();
        tokio::select! {
            m = in_rx.recv() => {
                let Some(m) = m else { break };
                let now = std::time::Instant::now();
                admission(&mut endpoint, &backlogs, max_wait, &metrics, now);
                endpoint.handle_message(&m.data, m.source, now);
            }
            _ = load_tick.tick() => {
                admission(&mut endpoint, &backlogs, max_wait, &metrics, std::time::Instant::now());
                for (name, stats) in &llm_stats {
                    metrics.llm_stats(name, stats);
                }
            }
            Some(r) = sip_rx.recv() => match r.action {
                SipAction::Hangup(reason) => endpoint.hangup(r.key, &reason, std::time::Instant::now()),
                SipAction::Transfer(target) => endpoint.transfer(r.key, &target, std::time::Instant::now()),
            },
            Some(c) = cmd_rx.recv() => match c {
                Command::Dial { req, next_hop, notify, reply } => {
                    let direct_needs_lookup = req.account.is_none() && next_hop.is_none();
                    if direct_needs_lookup {
                        // A sip: target's host is resolved off the loop, then the request comes back.
                        let tx = cmd_tx.clone();
                        tokio::spawn(async move {
                            match outbound::resolve_direct(&req.to).await {
                                Ok(Some(addr)) => { let _ = tx.send(Command::Dial { req, next_hop: Some(addr), notify, reply }); }
                                Ok(None) => { let _ = reply.send(Err(format!("`{}` is a number: name an account to dial it through (or give a sip: URI)", req.to))); }
                                Err(e) => { let _ = reply.send(Err(e)); }
                            }
                        });
                    } else {
                        let r = place_call(&mut endpoint, req, next_hop, notify, &agents, &ports, media_ip, sip_listen, sip_transport, &outbound_table, &mut pending);
                        if r.is_ok() {
                            metrics.active_calls.inc();
                            metrics.rtp_ports_in_use.inc();
                        }
                        let _ = reply.send(r);
                    }
                }
                Command::Hangup { call_id, reply } => {
                    let key = pending.iter().find(|(_, p)| p.call.call_id == call_id).map(|(k, _)| *k)
                        .or_else(|| outbound_live.iter().find(|(_, id)| **id == call_id).map(|(k, _)| *k));
                    if let Some(k) = key {
                        endpoint.hangup(k, "hung up by the admin API", std::time::Instant::now());
                    }
                    let _ = reply.send(key.is_some());
                }
            },
            Some(c) = ctl_rx.recv() => match c {
                Control::Answer(key) => {
                    if let Some(port) = calls.get(&key).map(|c| c.port) {
                        endpoint.answer(key, port, std::time::Instant::now());
                    }
                }
            },
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                let now = Instant::now();
                endpoint.handle_timeout(now.into_std());
                if shutdown_at.is_some_and(|s| s <= now) {
                    shutdown_at = None;
                    warn!(calls = endpoint.active_calls(), "grace period over: ending remaining calls");
                    for key in endpoint.call_keys() {
                        endpoint.hangup(key, "appliance shutting down", now.into_std());
                    }
                    hard_stop_at = Some(now + Duration::from_secs(5));
                }
                if hard_stop_at.is_some_and(|h| h <= now) {
                    warn!("BYE transactions still pending at exit");
                    break;
                }
            }
            _ = sigterm.recv() => { campaigns.stop_all(); begin_shutdown(&mut endpoint, &draining, &mut shutdown_at, grace) }
            _ = sigint.recv() => { campaigns.stop_all(); begin_shutdown(&mut endpoint, &draining, &mut shutdown_at, grace) }
        }

        // Handling an event (answering a call) queues more to send: drain both until quiet.
        loop {
            while let Some(t) = endpoint.poll_transmit() {
                transport::send(t, &udp, &conns, &in_tx);
            }
            let Some(ev) = endpoint.poll_event() else { break };
            match ev {
                Event::Incoming(ic) => {
                    let now = std::time::Instant::now();
                    match start_call(
                        &ic,
                        &agents,
                        &ports,
                        media_ip,
                        &media_settings,
                        &models,
                        cfg,
                        record_dir.as_deref(),
                        &metrics,
                        &sip_tx,
                        None,
                        &Default::default(),
                        None,
                        None,
                    ) {
                        Ok(active) => {
                            let answer_after =
                                agents.get(&ic.agent).map(|a| a.config.answer_after_ms.get()).unwrap_or(0);
                            let port = active.port;
                            calls.insert(ic.key, active);
                            metrics.active_calls.inc();
                            endpoint.ring(ic.key, now);
                            if answer_after == 0 {
                                endpoint.answer(ic.key, port, now);
                            } else {
                                let ctl = ctl_tx.clone();
                                let key = ic.key;
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_millis(answer_after)).await;
                                    let _ = ctl.send(Control::Answer(key));
                                });
                            }
                        }
                        Err(e) => {
                            warn!(call_id = %ic.call_id, error = %e, "cannot take call: 503");
                            metrics.active_calls.inc();
                            calls.insert(ic.key, ActiveCall { ctrl: None, port: 0, task: None });
                            endpoint.reject(ic.key, 503, now);
                        }
                    }
                }
                Event::Confirmed { key } => {
                    if let Some(c) = calls.get(&key).and_then(|c| c.ctrl.as_ref()) {
                        let _ = c.send(CallCtrl::Confirmed);
                    }
                }
                Event::MediaChanged { key, negotiated } => {
                    if let Some(c) = calls.get(&key).and_then(|c| c.ctrl.as_ref()) {
                        let _ = c.send(CallCtrl::Update(MediaParams::from(&negotiated)));
                    }
                }
                Event::Info { key, content_type, body } => {
                    if let Some(c) = calls.get(&key).and_then(|c| c.ctrl.as_ref()) {
                        let _ = c.send(CallCtrl::Info { content_type, body });
                    }
                }
                Event::Progress { key, code, early_media } => {
                    if let Some(p) = pending.get(&key) {
                        let u = OutboundUpdate::Ringing { code, early_media: early_media.is_some() };
                        outbound_table.update(&p.call.call_id, &u);
                        if let Some(n) = &p.notify {
                            n(u);
                        }
                    }
                }
                Event::Answered { key, negotiated } => {
                    let Some(mut p) = pending.remove(&key) else { continue };
                    let call_id = p.call.call_id.clone();
                    // To the agent the callee is "the caller": the other party of the call.
                    let source = crate::sip::endpoint::Source {
                        transport: sip_transport,
                        addr: sip_listen,
                        conn: None,
                        local: sip_listen,
                    };
                    let ic = IncomingCall {
                        key,
                        call_id: call_id.clone(),
                        from: p.call.to.clone(),
                        called: p.call.from.clone(),
                        agent: p.call.agent.clone(),
                        negotiated,
                        source,
                    };
                    if let Some(n) = &p.notify {
                        n(OutboundUpdate::Answered);
                    }
                    let rec_dir =
                        if p.notify.is_some() { Some(campaign_records.as_path()) } else { record_dir.as_deref() };
                    let (table, notify, id) = (outbound_table.clone(), p.notify.take(), call_id.clone());
                    let on_record: Box<dyn FnOnce(Option<std::path::PathBuf>) + Send> = Box::new(move |path| {
                        let u = OutboundUpdate::Ended {
                            outcome: "answered".into(),
                            code: Some(200),
                            reason: "answered".into(),
                            record_path: path.map(|p| p.display().to_string()),
                        };
                        table.update(&id, &u);
                        if let Some(n) = notify {
                            n(u);
                        }
                    });
                    match start_call(
                        &ic,
                        &agents,
                        &ports,
                        media_ip,
                        &media_settings,
                        &models,
                        cfg,
                        rec_dir,
                        &metrics,
                        &sip_tx,
                        p.sockets.take(),
                        &p.req.variables,
                        Some(on_record),
                        p.req.answering_machine.clone(),
                    ) {
                        Ok(active) => {
                            if let Some(c) = &active.ctrl {
                                let _ = c.send(CallCtrl::Confirmed);
                            }
                            calls.insert(key, active);
                            metrics.outbound_calls.with_label_values(&["answered"]).inc();
                            outbound_table.update(&call_id, &OutboundUpdate::Answered);
                            outbound_live.insert(key, call_id);
                        }
                        Err(e) => {
                            warn!(%call_id, error = %e, "cannot start the answered call: BYE");
                            calls.insert(key, ActiveCall { ctrl: None, port: 0, task: None });
                            endpoint.hangup(key, "cannot start the agent", std::time::Instant::now());
                        }
                    }
                }
                Event::Registration { account, state } => {
                    accounts::record_state(&account_states, &metrics, &account, &state)
                }
                Event::Transfer { key, progress } => {
                    if let Some(c) = calls.get(&key).and_then(|c| c.ctrl.as_ref()) {
                        let _ = c.send(CallCtrl::Transfer(progress));
                    }
                }
                Event::Ended { key, reason, .. } => {
                    let label = match &reason {
                        crate::sip::endpoint::EndReason::Rejected(code) => format!("rejected_{code}"),
                        r => r.status_label().to_string(),
                    };
                    if let Some(c) = calls.remove(&key) {
                        if let Some(ctrl) = c.ctrl {
                            let _ = ctrl.send(CallCtrl::Stop { reason: label.clone() });
                        }
                        finishing.retain(|t| !t.is_finished());
                        finishing.extend(c.task);
                        metrics.active_calls.dec();
                    }
                    outbound_live.remove(&key);
                    if let Some(p) = pending.remove(&key) {
                        // Never answered: the port goes back; the caller hears the outcome.
                        if let Some((_, _, port)) = p.sockets {
                            ports.lock().unwrap_or_else(|p| p.into_inner()).release(port);
                            metrics.rtp_ports_in_use.dec();
                        }
                        metrics.active_calls.dec();
                        let (code, why) = match &reason {
                            crate::sip::endpoint::EndReason::Unanswered { code, reason } => {
                                (Some(*code), reason.clone())
                            }
                            r => (None, format!("{r:?}")),
                        };
                        metrics.outbound_calls.with_label_values(&[label.as_str()]).inc();
                        let u = OutboundUpdate::Ended { outcome: label.clone(), code, reason: why, record_path: None };
                        outbound_table.update(&p.call.call_id, &u);
                        if let Some(n) = &p.notify {
                            n(u);
                        }
                    }
                    metrics.calls.with_label_values(&[label.as_str()]).inc();
                }
            }
        }
        let s = endpoint.stats();
        if s != last_stats {
            metrics.sip_stats(&s, &last_stats);
            // Counting blocked sources walks the table: at most once a second.
            if last_blocked_count.elapsed() >= Duration::from_secs(1) {
                last_blocked_count = Instant::now();
                metrics.sip_blocked_sources.set(endpoint.blocked_sources(std::time::Instant::now()) as i64);
            }
            last_stats = s;
        }

        if draining.load(Ordering::Relaxed) && endpoint.is_idle() {
            info!("all calls ended");
            break;
        }
    }
    // A stop loses nothing that can be kept: the ended calls' tasks write their records (the last
    // turn's transcript included) within what is left of the grace period (or of the hard stop's
    // 5 s). What still runs after that keeps its journal, recovered as interrupted at the next start.
    let until = [shutdown_at, hard_stop_at].into_iter().flatten().max().unwrap_or_else(Instant::now);
    finishing.extend(calls.into_values().filter_map(|c| c.task));
    finish_call_tasks(finishing, until).await;
    // Nothing asks the models for more now: let a step in progress end before the process does
    // (ONNX Runtime torn down under a running session logs errors after "exiting").
    // (The recognisers skip the jobs of calls that have ended; one running finishes.)
    let models_until = until.max(Instant::now() + Duration::from_secs(2));
    let busy = || backends.values().any(|b| !b.is_idle()) || models.asr.values().any(|w| w.pending() > 0);
    while busy() && Instant::now() < models_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if busy() {
        warn!("a model is still computing at exit");
    }
    // Let the last BYE/200 leave.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Campaigns store the outcome of their last calls.
    let c = campaigns.clone();
    let _ = tokio::task::spawn_blocking(move || c.join_all(Duration::from_secs(5))).await;
    let _ = http_stop_tx.send(());
    let _ = http_task.await;
    info!("exiting");
    Ok(())
}

/// The models' waits into the metrics; while one is beyond `max_wait` (`calls.max_queue_wait_ms`;
/// zero: never), the endpoint refuses new calls (logged when that starts and ends).
fn admission(
    endpoint: &mut Endpoint,
    backlogs: &[(String, Arc<crate::models::backlog::Backlog>)],
    max_wait: Duration,
    metrics: &Metrics,
    now: std::time::Instant,
) {
    let mut why = None;
    for (model, b) in backlogs {
        let wait = b.oldest_wait(now);
        metrics.model_queue_wait.with_label_values(&[model]).set(wait.as_secs_f64());
        if !max_wait.is_zero() && wait > max_wait && why.is_none() {
            why = Some(format!(
                "the models are saturated: a job has waited {} ms for {model} (calls.max_queue_wait_ms: {})",
                wait.as_millis(),
                max_wait.as_millis()
            ));
        }
    }
    match (&why, endpoint.overloaded()) {
        (Some(w), false) => warn!("{w}: new calls get 503"),
        (None, true) => info!("the models keep up again: new calls are taken"),
        _ => {}
    }
    endpoint.set_overloaded(why);
}

/// Wait for the call tasks until `until`; abort those still running then.
async fn finish_call_tasks(tasks: Vec<tokio::task::JoinHandle<()>>, until: Instant) {
    let running = tasks.iter().filter(|t| !t.is_finished()).count();
    if running > 0 {
        info!(calls = running, "waiting for the ended calls to write their records");
    }
    let mut left = 0;
    for mut t in tasks {
        if tokio::time::timeout_at(until, &mut t).await.is_err() {
            t.abort();
            left += 1;
        }
    }
    if left > 0 {
        warn!(
            calls = left,
            "calls still finishing at the deadline: their records are recovered as interrupted at the next start"
        );
    } else if running > 0 {
        info!(calls = running, "every call record written");
    }
}

fn begin_shutdown(endpoint: &mut Endpoint, draining: &AtomicBool, shutdown_at: &mut Option<Instant>, grace: Duration) {
    if draining.swap(true, Ordering::Relaxed) {
        // A second signal: do not wait for the grace period.
        warn!("second shutdown signal: ending calls now");
        *shutdown_at = Some(Instant::now());
        return;
    }
    info!(calls = endpoint.active_calls(), grace_s = grace.as_secs(), "shutting down: refusing new calls");
    endpoint.set_draining(true);
    endpoint.unregister_all(std::time::Instant::now());
    *shutdown_at = Some(Instant::now() + grace);
}

/// An `openai` backend from its config; the key comes from the environment or a file.
fn llm_backend(
    loaded: &LoadedConfig,
    name: &str,
    b: &crate::config::LlmBackendConfig,
) -> anyhow::Result<crate::models::llm::openai::OpenAiBackend> {
    let api_key = loaded
        .secret(&format!("models.llm.{name}.api_key"), b.api_key_env.as_deref(), b.api_key_file.as_deref())
        .map_err(|e| anyhow!("{e}"))?;
    // A key file's line break is not part of the key (an environment variable is taken as set).
    let api_key = if b.api_key_env.is_some() { api_key } else { api_key.map(|k| k.trim().to_string()) };
    let ms = |v: u64| Duration::from_millis(v);
    crate::models::llm::openai::OpenAiBackend::new(crate::models::llm::openai::OpenAiConfig {
        // Validated: type openai has both.
        base_url: b.base_url.clone().unwrap_or_default(),
        model: b.model.clone().unwrap_or_default(),
        api_key,
        connect_timeout: ms(b.connect_timeout_ms.get()),
        first_token_timeout: ms(b.first_token_timeout_ms.get()),
        idle_timeout: ms(b.idle_timeout_ms.get()),
        retries: b.retries.get() as u32,
    })
    .map_err(|e| anyhow!("models.llm.{name}: {e}"))
}

#[allow(clippy::too_many_arguments)]
fn start_call(
    ic: &IncomingCall,
    agents: &HashMap<String, AgentSpec>,
    ports: &Arc<Mutex<PortPool>>,
    media_ip: std::net::IpAddr,
    settings: &MediaSettings,
    models: &crate::models::Models,
    cfg: &crate::config::Config,
    record_dir: Option<&std::path::Path>,
    metrics: &Arc<Metrics>,
    sip: &mpsc::UnboundedSender<SipRequest>,
    sockets: Option<RtpSockets>,
    call_vars: &std::collections::BTreeMap<String, String>,
    on_record: Option<Box<dyn FnOnce(Option<std::path::PathBuf>) + Send>>,
    machine_policy: Option<crate::agent::amd_gate::MachinePolicy>,
) -> anyhow::Result<ActiveCall> {
    let default_max_s = cfg.calls.max_duration_s;
    let spec = agents.get(&ic.agent).ok_or_else(|| anyhow!("route names unknown agent {}", ic.agent))?;
    let mut settings = settings.clone();
    settings.cname = format!("{:016x}@switchboard", rand::random::<u64>());
    // The call's clocks, read once here: the cores below are given them.
    let (now, wall) = (std::time::Instant::now(), std::time::SystemTime::now());
    let mut media = CallMedia::new(
        MediaParams::from(&ic.negotiated),
        settings,
        match machine_policy {
            // Outbound with a machine policy: the detector listens first, the agent waits for a person.
            Some(policy) => Box::new(crate::agent::amd_gate::AmdGate::new(
                spec.build_with(&ic.from, &ic.called, call_vars, wall, now),
                policy,
                spec.voice(),
            )),
            None => spec.build_with(&ic.from, &ic.called, call_vars, wall, now),
        },
        RtpIdentity::from_rng(&mut rand::rng()),
        now,
        wall,
        rand::random(),
    )
    .map_err(|e| anyhow!("cannot set up the {:?} codec: {e}", ic.negotiated.codec))?;
    if let (Some(td), Some(worker)) = (&spec.config.turn_detection, models.vad.as_ref()) {
        let client =
            worker.open(ic.key.0, crate::media::codec::AGENT_RATE).ok_or_else(|| anyhow!("the VAD worker is gone"))?;
        let mode = td.turn_mode();
        let detector = match (mode, models.turn.as_ref()) {
            (crate::call::turns::TurnMode::SemanticVad { .. }, Some(turn)) => {
                crate::call::turns::TurnDetector::new(mode, Some(Box::new(turn.client())))
            }
            (crate::call::turns::TurnMode::SemanticVad { .. }, None) => {
                return Err(anyhow!("semantic_vad needs models.turn"))
            }
            (crate::call::turns::TurnMode::ServerVad | crate::call::turns::TurnMode::Manual { .. }, _) => {
                crate::call::turns::TurnDetector::new(mode, None)
            }
        };
        let detector = detector.with_speculation(td.speculate_after_ms.get());
        media.set_vad(client, crate::models::vad::Segmenter::new(td.segmenter_config()), detector);
        // Only agents that answer with their voice can be interrupted (an echo line would barge in on itself).
        let bi = &spec.config.barge_in;
        if bi.enabled && matches!(spec.config.mode, crate::config::AgentMode::Llm | crate::config::AgentMode::Repeat) {
            media.set_barge_in(bi.decision(), bi.echo_max_delay_ms.get(), bi.fade_ms.get());
        }
        if let Some((name, asr)) = cfg.asr_model_of(&spec.config) {
            let worker = models.asr.get(name).ok_or_else(|| anyhow!("recogniser {name} is not loaded"))?;
            let t = spec.config.transcription.as_ref().expect("asr_model_of implies transcription");
            let opts = crate::models::asr::DecodeOptions {
                language: t.language.clone().unwrap_or_else(|| asr.language.clone()),
                ..Default::default()
            };
            let partial = (t.partial_interval_ms.get() > 0).then(|| Duration::from_millis(t.partial_interval_ms.get()));
            media.set_transcriber(crate::call::transcriber::Transcriber::new(
                Box::new(worker.client(opts)),
                td.prefix_padding_ms.get(),
                partial,
            ));
        }
    }
    let record = record_dir
        .map(|d| crate::call::record::Recorder::new(d.to_path_buf(), &ic.call_id, &ic.from, &ic.called, &ic.agent));
    let (rtp, rtcp, port) = match sockets {
        Some(s) => s,
        None => {
            let s = bind_rtp(ports, media_ip)?;
            metrics.rtp_ports_in_use.inc();
            s
        }
    };
    let max_s = spec.config.max_duration_s.unwrap_or(default_max_s);
    let pool = ports.clone();
    let in_use = metrics.rtp_ports_in_use.clone();
    let (ctrl, task) = task::spawn(task::CallTaskParams {
        key: ic.key,
        call_id: ic.call_id.clone(),
        rtp,
        rtcp,
        media,
        metrics: metrics.clone(),
        sip: sip.clone(),
        max_duration: (max_s > 0).then(|| Duration::from_secs(max_s)),
        record,
        on_exit: Box::new(move |record_path| {
            pool.lock().unwrap_or_else(|p| p.into_inner()).release(port);
            in_use.dec();
            if let Some(f) = on_record {
                f(record_path);
            }
        }),
    });
    Ok(ActiveCall { ctrl: Some(ctrl), port, task: Some(task) })
}

/// Place an outbound call: bind its RTP port (named in our offer), send the INVITE, remember
/// who asked. Returns the Call-ID.
#[allow(clippy::too_many_arguments)]
fn place_call(
    endpoint: &mut Endpoint,
    req: DialRequest,
    next_hop: Option<SocketAddr>,
    notify: Option<Notify>,
    agents: &HashMap<String, AgentSpec>,
    ports: &Arc<Mutex<PortPool>>,
    media_ip: std::net::IpAddr,
    sip_listen: SocketAddr,
    transport: crate::sip::endpoint::Transport,
    table: &OutboundTable,
    pending: &mut HashMap<CallKey, PendingDial>,
) -> Result<String, String> {
    if !agents.contains_key(&req.agent) {
        let mut known: Vec<&str> = agents.keys().map(String::as_str).collect();
        known.sort();
        return Err(format!("unknown agent `{}` (defined agents: {})", req.agent, known.join(", ")));
    }
    if !(1..=600).contains(&req.ring_timeout_s) {
        return Err(format!("ring_timeout_s {} is out of range 1..=600", req.ring_timeout_s));
    }
    let sockets = bind_rtp(ports, media_ip).map_err(|e| e.to_string())?;
    let port = sockets.2;
    let local = next_hop.map(|h| transport::LocalAddrCache::new(sip_listen).local_for(h));
    let spec = crate::sip::endpoint::DialSpec {
        target: req.to.clone(),
        account: req.account.clone(),
        next_hop,
        local,
        transport,
        rtp_port: port,
        ring_timeout: Duration::from_secs(req.ring_timeout_s),
        agent: req.agent.clone(),
        call_id: req.call_id.clone(),
    };
    match endpoint.dial(spec, std::time::Instant::now()) {
        Ok(call) => {
            table.insert(OutboundStatus {
                call_id: call.call_id.clone(),
                to: call.to.clone(),
                agent: call.agent.clone(),
                state: "dialling".into(),
                outcome: None,
                code: None,
                reason: None,
                record_path: None,
            });
            let id = call.call_id.clone();
            pending.insert(call.key, PendingDial { sockets: Some(sockets), req, call, notify });
            Ok(id)
        }
        Err(e) => {
            ports.lock().unwrap_or_else(|p| p.into_inner()).release(port);
            Err(e)
        }
    }
}

/// The inbound digest users and their passwords (environment, file or inline).
fn inbound_users(loaded: &LoadedConfig) -> anyhow::Result<HashMap<String, String>> {
    let mut users = HashMap::new();
    for (i, u) in loaded.config.security.auth.iter().flat_map(|a| a.users.iter().enumerate()) {
        let key = format!("security.auth.users.{i}.password");
        let password = loaded
            .password(&key, u.password_env.as_deref(), u.password_file.as_deref(), u.password.as_deref())
            .map_err(|e| anyhow::anyhow!("{}: {e}", loaded.path.display()))?;
        users.insert(u.username.clone(), password);
    }
    Ok(users)
}

/// Where the admin token is kept when the config names none: `admin.token` beside the config.
pub fn default_token_path(loaded: &LoadedConfig) -> std::path::PathBuf {
    loaded.resolve(std::path::Path::new("admin.token"))
}

/// The admin token from `http.admin_token_env` / `http.admin_token_file`, else the one the
/// appliance generated beside its config (None when it has not made one yet). Clients (the CLI)
/// read it the same way.
pub fn admin_token(loaded: &LoadedConfig) -> anyhow::Result<Option<String>> {
    let h = &loaded.config.http;
    if h.admin_token_env.is_none() && h.admin_token_file.is_none() {
        let path = default_token_path(loaded);
        return match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("{}: {e}", path.display())),
        };
    }
    let token = loaded
        .secret("http.admin_token", h.admin_token_env.as_deref(), h.admin_token_file.as_deref())
        .map_err(|e| anyhow!("{e}"))?;
    // A token file's line break is not part of the token.
    let token = if h.admin_token_env.is_some() { token } else { token.map(|t| t.trim().to_string()) };
    match token {
        Some(t) if t.len() < 16 => Err(anyhow!(
            "http.admin_token: the token is {} characters; use at least 16 (e.g. `openssl rand -hex 16`)",
            t.len()
        )),
        t => Ok(t),
    }
}

/// The server's admin token: configured, or generated once (32 hex bytes, mode 0600, beside the
/// config) so that state-changing endpoints are never open, even on loopback.
fn server_admin_token(loaded: &LoadedConfig) -> anyhow::Result<String> {
    if let Some(t) = admin_token(loaded)? {
        return Ok(t);
    }
    let path = default_token_path(loaded);
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create the admin token file {}", path.display()))?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    info!(path = %path.display(), "admin token generated (state-changing HTTP endpoints require it as a Bearer token)");
    Ok(token)
}

/// Take an even port from the pool and bind it and its RTCP port (+1);
/// ports another program holds are skipped.
fn bind_rtp(
    ports: &Arc<Mutex<PortPool>>,
    ip: std::net::IpAddr,
) -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::UdpSocket, u16)> {
    let bind = |port: u16| -> std::io::Result<tokio::net::UdpSocket> {
        let s = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
        s.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(s)
    };
    let mut pool = ports.lock().unwrap_or_else(|p| p.into_inner());
    let mut busy = Vec::new();
    let result = loop {
        let Some(port) = pool.acquire() else { break Err(anyhow!("no free RTP port ({} in use)", pool.in_use())) };
        match (bind(port), bind(port + 1)) {
            (Ok(rtp), Ok(rtcp)) => break Ok((rtp, rtcp, port)),
            (Err(_), _) | (_, Err(_)) if busy.len() < 16 => busy.push(port),
            (Err(e), _) | (_, Err(e)) => break Err(anyhow!("cannot bind RTP/RTCP ports {port}/{}: {e}", port + 1)),
        }
    };
    for p in busy {
        pool.release(p);
    }
    result
}

/// The media settings every call starts from (the CNAME is per call).
fn media_settings(cfg: &crate::config::Config) -> MediaSettings {
    let m = &cfg.media;
    let ms = |v: u64| Duration::from_millis(v);
    MediaSettings {
        jitter: JitterConfig {
            // Set per call from the negotiated codec.
            clock_rate: 8000,
            min_delay: ms(m.jitter_buffer.min_ms.get()),
            target_delay: ms(m.jitter_buffer.target_ms.get()),
            max_delay: ms(m.jitter_buffer.max_ms.get()),
            max_packets: 256,
        },
        opus: crate::media::codec::OpusParams {
            bitrate_bps: m.opus.bitrate_bps.get() as u32,
            fec: m.opus.fec,
            expected_loss_pct: m.opus.expected_loss_pct.get() as u8,
            complexity: m.opus.complexity.get() as u8,
        },
        rtcp_interval: ms(m.rtcp_interval_ms.get()),
        rtp_timeout: (m.rtp_timeout_s.get() > 0).then(|| Duration::from_secs(m.rtp_timeout_s.get())),
        cname: String::new(),
    }
}
