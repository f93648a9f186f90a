//! The appliance's one YAML file: schema, loading and validation.
//!
//! Every struct denies unknown keys, and every error (syntax, unknown key,
//! wrong type, bad value, dangling reference) names the file, the line and the
//! dotted key path, so an operator can fix it without reading code.

mod cidr;
mod error;
pub mod locate;
mod schema;
mod security;

pub use cidr::{any_contains, Cidr};
pub use error::ConfigError;
pub use schema::*;
pub use security::*;

use std::path::{Path, PathBuf};

/// A loaded, validated configuration plus what was read from files it names.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub config: Config,
}

impl LoadedConfig {
    /// Resolve a path written in the config relative to the config file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve_relative(&self.path, p)
    }

    /// A secret the config names by where it is: an environment variable (`{key}_env`) or a file
    /// (`{key}_file`, its whole text; callers trim as their secret needs). `None` when neither is
    /// set; an error naming the key when the variable is unset or the file unreadable.
    pub fn secret(&self, key: &str, env: Option<&str>, file: Option<&Path>) -> Result<Option<String>, String> {
        match (env, file) {
            (Some(var), _) => std::env::var(var)
                .map(Some)
                .map_err(|_| format!("{key}_env: the environment variable {var} is not set")),
            (None, Some(f)) => {
                let path = self.resolve(f);
                std::fs::read_to_string(&path).map(Some).map_err(|e| format!("{key}_file: {}: {e}", path.display()))
            }
            (None, None) => Ok(None),
        }
    }
}

impl LoadedConfig {
    /// A password given by one of `{key}_env`, `{key}_file` (its first line) or inline `{key}`
    /// (validation made sure exactly one is set).
    pub fn password(
        &self,
        key: &str,
        env: Option<&str>,
        file: Option<&Path>,
        inline: Option<&str>,
    ) -> Result<String, String> {
        match self.secret(key, env, file)? {
            Some(p) if env.is_some() => Ok(p),
            Some(text) => Ok(text.lines().next().unwrap_or("").to_string()),
            None => inline.map(str::to_string).ok_or_else(|| format!("{key}: no password")),
        }
    }
}

pub(crate) fn resolve_relative(config_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_path.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// A YAML file's text, or an error naming the file. (`server::load_config` reads and checks a
/// config file whole: this module's checks and the agents'.)
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        key: String::new(),
        message: format!("cannot read file: {e}"),
    })
}

/// Deserialise YAML (unknown keys, wrong types, bad values), the error naming the file, the line
/// and the dotted key (the campaign file reads the same way).
pub(crate) fn from_yaml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let (line, column) = match inner.location() {
            Some(l) => (Some(l.line()), Some(l.column())),
            None => (None, None),
        };
        // serde_yaml_ng appends " at line L column C" to its message: we print our own.
        let mut message = inner.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // It also prefixes its own idea of the path ("agents.a: unknown field"): we print ours.
        if let Some((prefix, rest)) = message.split_once(": ") {
            if !prefix.contains(' ') && key.starts_with(prefix) {
                message = rest.to_string();
            }
        }
        ConfigError {
            file: path.to_path_buf(),
            line,
            column,
            key: if key == "." { String::new() } else { key },
            message,
        }
    })
}

/// Parse and validate config text; `path` is used in messages and to resolve relative files.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let config: Config = from_yaml(path, text)?;
    validate(path, text, &config)?;
    Ok(config)
}

const ONE_PASSWORD: &str = "give exactly one of `password_env`, `password_file` or `password`";

fn one_password(env: bool, file: bool, inline: bool) -> bool {
    [env, file, inline].iter().filter(|x| **x).count() == 1
}

/// Checks that need the whole document (cross references). Those that need the agent's code (its
/// instructions, tools and greeting file) are `agent::check_config`'s.
fn validate(path: &Path, text: &str, c: &Config) -> Result<(), ConfigError> {
    let err = |key: &str, message: String| {
        let line = locate::line_of(text, key);
        ConfigError { file: path.to_path_buf(), line, column: None, key: key.to_string(), message }
    };
    if c.agents.is_empty() {
        return Err(err("agents", "at least one agent must be defined".into()));
    }
    if c.routes.is_empty() {
        return Err(err(
            "routes",
            "at least one route must be defined (use `match: \"*\"` to answer every number)".into(),
        ));
    }
    for (i, r) in c.routes.iter().enumerate() {
        if !c.agents.contains_key(&r.agent) {
            let known: Vec<&str> = c.agents.keys().map(String::as_str).collect();
            return Err(err(
                &format!("routes.{i}.agent"),
                format!("unknown agent `{}` (defined agents: {})", r.agent, known.join(", ")),
            ));
        }
    }
    for (name, a) in &c.accounts {
        let key = |k: &str| format!("accounts.{name}.{k}");
        if !one_password(a.password_env.is_some(), a.password_file.is_some(), a.password.is_some()) {
            return Err(err(&format!("accounts.{name}"), ONE_PASSWORD.into()));
        }
        for (k, v) in [("domain", Some(&a.domain)), ("outbound_proxy", a.outbound_proxy.as_ref())] {
            if let Some(v) = v {
                if crate::config::host_port(v).is_none() {
                    return Err(err(&key(k), format!("`{v}` is not `host` or `host:port`")));
                }
            }
        }
        if a.username.is_empty()
            || a.username.chars().any(|ch| ch.is_whitespace() || matches!(ch, '@' | ':' | '<' | '>' | ';'))
        {
            return Err(err(&key("username"), format!("`{}` is not a SIP user name", a.username)));
        }
        if let Some(agent) = &a.agent {
            if !c.agents.contains_key(agent) {
                let known: Vec<&str> = c.agents.keys().map(String::as_str).collect();
                return Err(err(
                    &key("agent"),
                    format!("unknown agent `{agent}` (defined agents: {})", known.join(", ")),
                ));
            }
        }
        if !c.sip.transports.contains(&a.transport) {
            return Err(err(
                &key("transport"),
                format!("{:?} is not among sip.transports", a.transport).to_lowercase(),
            ));
        }
    }
    if let Some(auth) = &c.security.auth {
        if auth.users.is_empty() {
            return Err(err(
                "security.auth.users",
                "list at least one user (username and one of password_env / password_file / password)".into(),
            ));
        }
        for (i, u) in auth.users.iter().enumerate() {
            if !one_password(u.password_env.is_some(), u.password_file.is_some(), u.password.is_some()) {
                return Err(err(&format!("security.auth.users.{i}"), ONE_PASSWORD.into()));
            }
        }
    }
    let jb = &c.media.jitter_buffer;
    if !(jb.min_ms <= jb.target_ms && jb.target_ms.get() <= jb.max_ms.get()) {
        return Err(err(
            "media.jitter_buffer",
            format!(
                "need min_ms <= target_ms <= max_ms (got {} / {} / {})",
                jb.min_ms.get(),
                jb.target_ms.get(),
                jb.max_ms.get()
            ),
        ));
    }
    if c.media.codecs.is_empty() {
        return Err(err("media.codecs", "at least one codec must be listed".into()));
    }
    for (name, b) in c.models.iter().flat_map(|m| &m.llm) {
        let key = |k: &str| format!("models.llm.{name}.{k}");
        // (key, whether it is set): the keys each kind needs, and those it must not have.
        type Keys<'a> = &'a [(&'a str, bool)];
        let (needs, forbids): (Keys, Keys) = match b.kind {
            LlmKind::Openai => {
                (&[("base_url", b.base_url.is_some()), ("model", b.model.is_some())], &[("path", b.path.is_some())])
            }
            LlmKind::Onnx => (
                &[("path", b.path.is_some())],
                &[
                    ("base_url", b.base_url.is_some()),
                    ("model", b.model.is_some()),
                    ("api_key_env", b.api_key_env.is_some()),
                    ("api_key_file", b.api_key_file.is_some()),
                ],
            ),
        };
        let kind = if b.kind == LlmKind::Openai { "openai" } else { "onnx" };
        if let Some((k, _)) = needs.iter().find(|(_, set)| !set) {
            return Err(err(&format!("models.llm.{name}"), format!("type {kind} needs `{k}`")));
        }
        if let Some((k, _)) = forbids.iter().find(|(_, set)| *set) {
            return Err(err(&key(k), format!("`{k}` does not apply to type {kind}")));
        }
        if !(0.0..=2.0).contains(&b.temperature) {
            return Err(err(&key("temperature"), format!("{} is out of range 0..=2", b.temperature)));
        }
        if !(b.top_p > 0.0 && b.top_p <= 1.0) {
            return Err(err(&key("top_p"), format!("{} is out of range (0, 1]", b.top_p)));
        }
        if !(1.0..=2.0).contains(&b.repetition_penalty) {
            return Err(err(&key("repetition_penalty"), format!("{} is out of range 1..=2", b.repetition_penalty)));
        }
    }
    for (name, a) in c.models.iter().flat_map(|m| &m.asr) {
        if let Some(f) = a.window_floor_s.filter(|f| !(0.0..=30.0).contains(f)) {
            return Err(err(
                &format!("models.asr.{name}.window_floor_s"),
                format!("{f} is out of range 0..=30 (seconds; 0 or 30 = the full window)"),
            ));
        }
    }
    let has_tts = c.models.as_ref().is_some_and(|m| m.tts.is_some());
    for (name, a) in &c.agents {
        if a.greeting.is_some() && a.greeting_text.is_some() {
            return Err(err(
                &format!("agents.{name}.greeting_text"),
                "give either `greeting` (a WAV file) or `greeting_text`, not both".into(),
            ));
        }
        if a.greeting_text.is_some() && !has_tts {
            return Err(err(
                &format!("agents.{name}.greeting_text"),
                "a text greeting needs a voice: configure `models.tts` (the Piper voice)".into(),
            ));
        }
        if let Some(td) = &a.turn_detection {
            if c.models.as_ref().is_none_or(|m| m.vad.is_none()) {
                return Err(err(
                    &format!("agents.{name}.turn_detection"),
                    "turn detection needs the VAD model: configure `models.vad`".into(),
                ));
            }
            if !(0.0..=1.0).contains(&td.threshold) {
                return Err(err(
                    &format!("agents.{name}.turn_detection.threshold"),
                    format!("{} is out of range 0..=1", td.threshold),
                ));
            }
            if !(0.0..=1.0).contains(&td.completion_threshold) {
                return Err(err(
                    &format!("agents.{name}.turn_detection.completion_threshold"),
                    format!("{} is out of range 0..=1", td.completion_threshold),
                ));
            }
            let key_ok = td.commit_key.chars().count() == 1
                && td.commit_key.chars().all(|k| matches!(k, '0'..='9' | '*' | '#' | 'A'..='D'));
            if !key_ok {
                return Err(err(
                    &format!("agents.{name}.turn_detection.commit_key"),
                    format!("`{}` is not one DTMF key (0-9, *, #, A-D)", td.commit_key),
                ));
            }
            if td.kind == TurnDetectionKind::SemanticVad && c.models.as_ref().is_none_or(|m| m.turn.is_none()) {
                return Err(err(
                    &format!("agents.{name}.turn_detection"),
                    "semantic_vad needs the end-of-turn model: configure `models.turn` (Smart Turn)".into(),
                ));
            }
        }
        if let Some(v) = &a.voice {
            if c.models.as_ref().is_none_or(|m| !m.voices.contains_key(v)) {
                let known: Vec<&str> = c.models.iter().flat_map(|m| m.voices.keys()).map(String::as_str).collect();
                return Err(err(
                    &format!("agents.{name}.voice"),
                    format!("unknown voice `{v}` (models.voices has: {})", or_none(&known)),
                ));
            }
        }
        if let Some(t) = &a.transcription {
            if a.turn_detection.is_none() {
                return Err(err(
                    &format!("agents.{name}.transcription"),
                    "transcription needs turn_detection: the VAD finds the turns that are transcribed".into(),
                ));
            }
            let models: Vec<&str> = c.models.iter().flat_map(|m| m.asr.keys()).map(String::as_str).collect();
            match &t.model {
                Some(m) if !models.contains(&m.as_str()) => {
                    return Err(err(
                        &format!("agents.{name}.transcription.model"),
                        format!("unknown recogniser `{m}` (models.asr has: {})", or_none(&models)),
                    ));
                }
                None if models.len() != 1 => {
                    return Err(err(
                        &format!("agents.{name}.transcription"),
                        format!("name the recogniser with `model:` (models.asr has: {})", or_none(&models)),
                    ));
                }
                _ => {}
            }
        }
        if a.mode == AgentMode::Llm {
            let Some(l) = &a.llm else {
                return Err(err(
                    &format!("agents.{name}.mode"),
                    "mode llm needs an `llm:` section (instructions, model)".into(),
                ));
            };
            if a.transcription.is_none() {
                return Err(err(
                    &format!("agents.{name}.mode"),
                    "mode llm answers what the caller says: it needs `transcription`".into(),
                ));
            }
            if a.voice.is_none() && !has_tts {
                return Err(err(
                    &format!("agents.{name}.mode"),
                    "mode llm speaks: it needs a voice (`models.tts` or `voice`)".into(),
                ));
            }
            let models: Vec<&str> = c.models.iter().flat_map(|m| m.llm.keys()).map(String::as_str).collect();
            match &l.model {
                Some(m) if !models.contains(&m.as_str()) => {
                    return Err(err(
                        &format!("agents.{name}.llm.model"),
                        format!("unknown language model `{m}` (models.llm has: {})", or_none(&models)),
                    ));
                }
                None if models.len() != 1 => {
                    return Err(err(
                        &format!("agents.{name}.llm"),
                        format!("name the language model with `model:` (models.llm has: {})", or_none(&models)),
                    ));
                }
                _ => {}
            }
            match (l.on_failure, l.transfer_to.as_deref()) {
                (LlmFailurePolicy::Transfer, None) => {
                    return Err(err(
                        &format!("agents.{name}.llm.on_failure"),
                        "on_failure: transfer needs `transfer_to` (a sip: URI)".into(),
                    ));
                }
                (LlmFailurePolicy::Transfer, Some(u)) if !(u.starts_with("sip:") || u.starts_with("sips:")) => {
                    return Err(err(
                        &format!("agents.{name}.llm.transfer_to"),
                        format!("`{u}` is not a sip: or sips: URI"),
                    ));
                }
                (LlmFailurePolicy::Transfer, Some(_)) | (_, None) => {}
                (_, Some(_)) => {
                    return Err(err(
                        &format!("agents.{name}.llm.transfer_to"),
                        "`transfer_to` applies only with on_failure: transfer".into(),
                    ))
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            for (i, t) in l.tools.iter().enumerate() {
                if !seen.insert(t.name.as_str()) {
                    return Err(err(
                        &format!("agents.{name}.llm.tools.{i}.name"),
                        format!("a second tool named `{}`", t.name),
                    ));
                }
            }
        }
        if a.mode == AgentMode::Repeat {
            if a.transcription.is_none() {
                return Err(err(
                    &format!("agents.{name}.mode"),
                    "repeat says back what the caller said: it needs `transcription`".into(),
                ));
            }
            if a.voice.is_none() && !has_tts {
                return Err(err(
                    &format!("agents.{name}.mode"),
                    "repeat speaks: it needs a voice (`models.tts` or `voice`)".into(),
                ));
            }
        }
        let bi = &a.barge_in;
        if !(0.0..=1.0).contains(&bi.threshold) {
            return Err(err(
                &format!("agents.{name}.barge_in.threshold"),
                format!("{} is out of range 0..=1", bi.threshold),
            ));
        }
        if !(0.0..=1.0).contains(&bi.echo_ncc) {
            return Err(err(
                &format!("agents.{name}.barge_in.echo_ncc"),
                format!("{} is out of range 0..=1", bi.echo_ncc),
            ));
        }
        if !(0.0..=60.0).contains(&bi.echo_return_loss_db) {
            return Err(err(
                &format!("agents.{name}.barge_in.echo_return_loss_db"),
                format!("{} is out of range 0..=60", bi.echo_return_loss_db),
            ));
        }
        if !(-90.0..=0.0).contains(&bi.onset_dbfs) {
            return Err(err(
                &format!("agents.{name}.barge_in.onset_dbfs"),
                format!("{} is out of range -90..=0 (0: no onset gate)", bi.onset_dbfs),
            ));
        }
        if bi.commit_ms.get() < bi.pause_ms.get() {
            return Err(err(
                &format!("agents.{name}.barge_in.commit_ms"),
                format!("{} is shorter than pause_ms ({})", bi.commit_ms.get(), bi.pause_ms.get()),
            ));
        }
        if !(0.25..=4.0).contains(&a.speaking_rate) {
            return Err(err(
                &format!("agents.{name}.speaking_rate"),
                format!("{} is out of range 0.25..=4.0", a.speaking_rate),
            ));
        }
    }
    Ok(())
}

fn or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl Config {
    /// The language model an agent uses (validated: exists for `mode: llm`).
    pub fn llm_model_of(&self, agent: &AgentConfig) -> Option<(&str, &LlmBackendConfig)> {
        let l = agent.llm.as_ref()?;
        let llm = &self.models.as_ref()?.llm;
        match &l.model {
            Some(m) => llm.get_key_value(m).map(|(k, v)| (k.as_str(), v)),
            None => llm.iter().next().map(|(k, v)| (k.as_str(), v)),
        }
    }

    /// The recogniser an agent uses (validated: exists when `transcription` is set).
    pub fn asr_model_of(&self, agent: &AgentConfig) -> Option<(&str, &AsrModelConfig)> {
        let t = agent.transcription.as_ref()?;
        let asr = &self.models.as_ref()?.asr;
        match &t.model {
            Some(m) => asr.get_key_value(m).map(|(k, v)| (k.as_str(), v)),
            None => asr.iter().next().map(|(k, v)| (k.as_str(), v)),
        }
    }
}

#[cfg(test)]
mod tests;

/// `host` or `host:port` (IPv6 in brackets) as written in the config; None when unreadable.
pub fn host_port(s: &str) -> Option<(String, u16)> {
    let s = s.trim();
    let s = s.strip_prefix("sip:").unwrap_or(s);
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || matches!(c, '@' | ';' | '/')) {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host.to_string(), p.parse().ok()?)),
            None if after.is_empty() => Some((host.to_string(), 5060)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok().filter(|p: &u16| *p > 0)?)),
        Some(_) => None,
        None => Some((s.to_string(), 5060)),
    }
}
