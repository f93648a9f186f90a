//! The YAML schema. Defaults here are the embedded default's behaviour; every
//! struct denies unknown keys so a typo is an error, not a silent default.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// An ONNX Runtime execution provider (`models.*.providers`, in order of preference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    Cuda,
    Tensorrt,
}

/// Which of a Whisper model's graphs to run (`models.asr.*.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    /// Per-channel dynamic int8 weights: smaller and faster, same words on our clips.
    Int8,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub sip: SipConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub calls: CallsConfig,
    /// Speech models on ONNX Runtime; absent: no model is loaded.
    #[serde(default)]
    pub models: Option<ModelsConfig>,
    pub routes: Vec<Route>,
    pub agents: BTreeMap<String, AgentConfig>,
    /// SIP accounts on a PBX or trunk: registered (inbound calls reach the account's agent)
    /// and/or dialled through (outbound calls and campaigns).
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountConfig>,
    #[serde(default)]
    pub campaigns: CampaignsConfig,
    /// Who may call: ACLs, inbound digest authentication, scanners, rate limits.
    #[serde(default)]
    pub security: super::SecurityConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CampaignsConfig {
    /// The SQLite store of campaigns, contacts and every attempt (relative to this file).
    #[serde(default = "default_campaign_store")]
    pub store: PathBuf,
}
impl Default for CampaignsConfig {
    fn default() -> Self {
        CampaignsConfig { store: default_campaign_store() }
    }
}
fn default_campaign_store() -> PathBuf {
    PathBuf::from("campaigns.sqlite")
}

/// One SIP account (an extension on a PBX, or a trunk).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The registrar / SIP domain: `host` or `host:port` (the address of record is
    /// `sip:{username}@{domain}`).
    pub domain: String,
    pub username: String,
    /// The digest user name when it differs from `username`.
    #[serde(default)]
    pub auth_username: Option<String>,
    /// The password: from an environment variable, a file (first line), or inline.
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password: Option<String>,
    /// Send every request here instead of to `domain` (`host` or `host:port`).
    #[serde(default)]
    pub outbound_proxy: Option<String>,
    #[serde(default = "default_account_transport")]
    pub transport: TransportKind,
    /// Register (an extension); false for a trunk that is only dialled through.
    #[serde(default = "default_true")]
    pub register: bool,
    /// The binding lifetime asked for (the registrar may grant another).
    #[serde(default = "default_register_expires")]
    pub expires_s: U64Range<10, 86_400>,
    /// The agent that answers calls arriving through this registration; absent: the routes decide.
    #[serde(default)]
    pub agent: Option<String>,
    /// The caller ID of outbound calls (the From user); default `username`.
    #[serde(default)]
    pub caller_id: Option<String>,
}
fn default_account_transport() -> TransportKind {
    TransportKind::Udp
}
fn default_register_expires() -> U64Range<10, 86_400> {
    U64Range(300)
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Udp,
    Tcp,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// Address and port the SIP transports bind to.
    #[serde(default = "default_sip_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_transports")]
    pub transports: Vec<TransportKind>,
    /// Address written into Contact headers (and SDP, unless media has its own),
    /// for an appliance behind NAT. Default: the local address the request arrived on.
    #[serde(default)]
    pub advertised_address: Option<IpAddr>,
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// RFC 3261 T1 (round-trip estimate). 500 ms on real networks; the
    /// 64*T1 transaction timeouts follow it.
    #[serde(default = "default_t1_ms")]
    pub t1_ms: U64Range<10, 10_000>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: default_sip_listen(),
            transports: default_transports(),
            advertised_address: None,
            user_agent: default_user_agent(),
            t1_ms: U64Range(500),
        }
    }
}

fn default_sip_listen() -> SocketAddr {
    "0.0.0.0:5060".parse().expect("literal")
}
fn default_transports() -> Vec<TransportKind> {
    vec![TransportKind::Udp, TransportKind::Tcp]
}
fn default_user_agent() -> String {
    format!("switchboard/{}", env!("CARGO_PKG_VERSION"))
}
fn default_t1_ms() -> U64Range<10, 10_000> {
    U64Range(500)
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    Pcmu,
    Pcma,
    Opus,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Even RTP ports are taken from this range ("LOW-HIGH").
    #[serde(default = "default_rtp_ports")]
    pub rtp_ports: PortRange,
    /// Address written into SDP c= lines (NAT). Default: sip.advertised_address,
    /// else the local address the INVITE arrived on.
    #[serde(default)]
    pub advertised_address: Option<IpAddr>,
    /// Codecs in order of preference.
    #[serde(default = "default_codecs")]
    pub codecs: Vec<CodecName>,
    /// Packet time we send and answer with when the offer does not ask for one.
    #[serde(default = "default_ptime")]
    pub ptime_ms: U64Range<10, 60>,
    #[serde(default)]
    pub jitter_buffer: JitterConfigYaml,
    #[serde(default)]
    pub opus: OpusConfig,
    /// End the call (BYE) when no RTP arrives for this long while we expect
    /// some (0 = never). Catches peers that vanished without a BYE.
    #[serde(default = "default_rtp_timeout")]
    pub rtp_timeout_s: U64Range<0, 3600>,
    /// RTCP report interval (RFC 3550 recommends 5 s).
    #[serde(default = "default_rtcp_interval")]
    pub rtcp_interval_ms: U64Range<500, 60_000>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_ports: default_rtp_ports(),
            advertised_address: None,
            codecs: default_codecs(),
            ptime_ms: default_ptime(),
            jitter_buffer: JitterConfigYaml::default(),
            opus: OpusConfig::default(),
            rtp_timeout_s: default_rtp_timeout(),
            rtcp_interval_ms: default_rtcp_interval(),
        }
    }
}

fn default_rtp_timeout() -> U64Range<0, 3600> {
    U64Range(30)
}
fn default_rtcp_interval() -> U64Range<500, 60_000> {
    U64Range(5000)
}

/// Our Opus encoder; the peer's fmtp (maxaveragebitrate) may lower the bitrate.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpusConfig {
    #[serde(default = "default_opus_bitrate")]
    pub bitrate_bps: U64Range<6000, 510_000>,
    /// In-band forward error correction (sent when the peer says useinbandfec=1).
    #[serde(default = "default_true")]
    pub fec: bool,
    /// Loss rate the encoder plans FEC for.
    #[serde(default = "default_opus_loss")]
    pub expected_loss_pct: U64Range<0, 100>,
    /// 0 (cheapest) to 10 (best); 5 is a good trade for many calls per core.
    #[serde(default = "default_opus_complexity")]
    pub complexity: U64Range<0, 10>,
}

impl Default for OpusConfig {
    fn default() -> Self {
        OpusConfig {
            bitrate_bps: default_opus_bitrate(),
            fec: true,
            expected_loss_pct: default_opus_loss(),
            complexity: default_opus_complexity(),
        }
    }
}
fn default_opus_bitrate() -> U64Range<6000, 510_000> {
    U64Range(24000)
}
fn default_true() -> bool {
    true
}
fn default_opus_loss() -> U64Range<0, 100> {
    U64Range(10)
}
fn default_opus_complexity() -> U64Range<0, 10> {
    U64Range(5)
}

fn default_rtp_ports() -> PortRange {
    PortRange { low: 20000, high: 29999 }
}
/// Opus first: wideband audio is what the speech models want, at ~0.5 % of a
/// core per call; G.711 for everything else (~0.02 %).
fn default_codecs() -> Vec<CodecName> {
    vec![CodecName::Opus, CodecName::Pcmu, CodecName::Pcma]
}
fn default_ptime() -> U64Range<10, 60> {
    U64Range(20)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JitterConfigYaml {
    /// The adaptive playout delay never goes below this…
    #[serde(default = "default_jb_min")]
    pub min_ms: U64Range<0, 1000>,
    /// …starts here…
    #[serde(default = "default_jb_target")]
    pub target_ms: U64Range<0, 1000>,
    /// …and never exceeds this (beyond it a timestamp jump re-synchronises).
    #[serde(default = "default_jb_max")]
    pub max_ms: U64Range<20, 5000>,
}

impl Default for JitterConfigYaml {
    fn default() -> Self {
        JitterConfigYaml { min_ms: default_jb_min(), target_ms: default_jb_target(), max_ms: default_jb_max() }
    }
}
fn default_jb_min() -> U64Range<0, 1000> {
    U64Range(20)
}
/// Start at the minimum: a clean network keeps ~20 ms; jitter raises it within a few packets.
fn default_jb_target() -> U64Range<0, 1000> {
    U64Range(20)
}
fn default_jb_max() -> U64Range<20, 5000> {
    U64Range(200)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Metrics and health endpoint. Loopback by default: nothing is exposed
    /// until the operator says so.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// The bearer token the admin endpoints that change state (placing calls, hanging up,
    /// campaigns) require, from an environment variable or a file (at least 16 characters).
    /// Without either, the appliance generates one at first start into `admin.token` beside
    /// this file (mode 0600), and the CLI reads it from there: those endpoints are never open.
    #[serde(default)]
    pub admin_token_env: Option<String>,
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: default_http_listen(), admin_token_env: None, admin_token_file: None }
    }
}
fn default_http_listen() -> SocketAddr {
    "127.0.0.1:9090".parse().expect("literal")
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `switchboard::sip=debug,info`. RUST_LOG overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig { format: LogFormat::Text, level: default_log_level() }
    }
}
fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallsConfig {
    /// Calls longer than this are ended with BYE (0 = no limit).
    #[serde(default = "default_max_duration")]
    pub max_duration_s: u64,
    /// On SIGTERM, how long active calls may continue before they are ended with BYE.
    #[serde(default = "default_grace")]
    pub shutdown_grace_s: u64,
    /// A JSON call record per call (events, transcripts) is written here when the call
    /// ends (relative to this file; created if missing). Unset: no records.
    #[serde(default)]
    pub record_dir: Option<PathBuf>,
    /// Most calls at once, inbound and outbound (0: no limit). Beyond it a new INVITE gets
    /// 503 with Retry-After, and a dial request is refused.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u64,
    /// The Retry-After (seconds) of those 503s.
    #[serde(default = "default_retry_after")]
    pub retry_after_s: u64,
    /// Admission from measured load: while a job has waited longer than this (ms) for the
    /// recogniser or the embedded language model, new calls get 503 with Retry-After and dial
    /// requests are refused, so the calls in progress keep their latency (0: off).
    #[serde(default)]
    pub max_queue_wait_ms: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            max_duration_s: default_max_duration(),
            shutdown_grace_s: default_grace(),
            record_dir: None,
            max_concurrent: default_max_concurrent(),
            retry_after_s: default_retry_after(),
            max_queue_wait_ms: 0,
        }
    }
}
fn default_max_concurrent() -> u64 {
    50
}
fn default_retry_after() -> u64 {
    10
}
fn default_max_duration() -> u64 {
    3600
}
fn default_grace() -> u64 {
    30
}

/// One routing rule: calls whose called user/number matches go to `agent`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Glob on the called user (Request-URI user part, or the To user): `*`
    /// matches any run of characters, `?` one character. `"*"` answers everything.
    #[serde(rename = "match")]
    pub pattern: String,
    pub agent: String,
    /// Sources that may call this route, replacing `security.allow` for it (e.g. only the
    /// trunk that owns these numbers).
    #[serde(default)]
    pub allow: Option<Vec<super::Cidr>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AgentMode {
    /// Line test: play back what the caller says after `echo_delay_ms`.
    #[default]
    Echo,
    /// Play the greeting, then listen without answering (for tests and IVR stubs).
    Silent,
    /// Say back each caller turn ("You said: …") with the agent's voice: the voice loop
    /// without a language model (needs `transcription` and a voice).
    Repeat,
    /// Talk: each caller turn goes to the language model (`llm`), the reply is spoken.
    Llm,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// WAV file (16-bit PCM, any rate, mono or stereo) spoken when the call is answered;
    /// relative paths are relative to the config file.
    #[serde(default)]
    pub greeting: Option<PathBuf>,
    /// Greeting as text, spoken with the Piper voice of `models.tts` (synthesised at start-up).
    #[serde(default)]
    pub greeting_text: Option<String>,
    /// Piper speaking rate: 1.0 as trained, 1.25 faster, 0.8 slower.
    #[serde(default = "default_rate")]
    pub speaking_rate: f32,
    /// Piper's voice variation (the voice's JSON gives the defaults); 0 and 0 make synthesis deterministic.
    #[serde(default)]
    pub noise_scale: Option<f32>,
    #[serde(default)]
    pub noise_w: Option<f32>,
    #[serde(default)]
    pub mode: AgentMode,
    #[serde(default = "default_echo_delay")]
    pub echo_delay_ms: U64Range<0, 5000>,
    /// Let the phone ring this long before answering.
    #[serde(default)]
    pub answer_after_ms: U64Range<0, 120_000>,
    /// Overrides calls.max_duration_s for this agent.
    #[serde(default)]
    pub max_duration_s: Option<u64>,
    /// How the caller's turns are found (OpenAI Realtime `turn_detection`); needs `models.vad`.
    #[serde(default)]
    pub turn_detection: Option<TurnDetection>,
    /// The Piper voice: a name from `models.voices` (default: `models.tts`).
    #[serde(default)]
    pub voice: Option<String>,
    /// Transcribe each caller turn (needs `turn_detection` and `models.asr`).
    #[serde(default)]
    pub transcription: Option<Transcription>,
    /// The conversation (`mode: llm`).
    #[serde(default)]
    pub llm: Option<AgentLlm>,
    /// The caller may interrupt the agent (`mode: llm` and `repeat`, with turn_detection).
    #[serde(default)]
    pub barge_in: BargeInSettings,
    /// Per-call variables the instructions may use (`{name}`), with their defaults; a campaign
    /// contact's CSV columns or a dial request's `variables` replace them for that call.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Most calls this agent serves at once (beyond: 503 with Retry-After).
    #[serde(default)]
    pub max_concurrent_calls: Option<u64>,
}

/// Barge-in: pause the agent's audio after `pause_ms` of caller speech, drop it after `commit_ms`,
/// resume after `resume_ms` of quiet when the speech was too short to be an interruption.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BargeInSettings {
    pub enabled: bool,
    /// VAD probability that counts as caller speech while the agent talks (above turn detection's).
    pub threshold: f32,
    pub pause_ms: U64Range<20, 2000>,
    pub commit_ms: U64Range<20, 5000>,
    pub resume_ms: U64Range<20, 5000>,
    /// Caller audio this correlated with the agent's own recent audio, at the echo path's delay…
    pub echo_ncc: f32,
    /// …when it is at least this many dB quieter than the agent (louder is the caller).
    pub echo_return_loss_db: f32,
    /// The longest echo path delay looked at.
    pub echo_max_delay_ms: U64Range<20, 2000>,
    /// The onset gate: a caller packet this loud (RMS, dBFS) that is not echo pauses the agent as it
    /// arrives, before the VAD has heard it; 0 turns the gate off.
    pub onset_dbfs: f32,
    /// Fade the agent's audio out over this long when it stops (0: a hard cut at a frame boundary).
    pub fade_ms: U64Range<0, 20>,
}

impl Default for BargeInSettings {
    fn default() -> Self {
        // Tuned on `switchboard bench-barge-in` (the README has the figures): one VAD chunk of
        // speech pauses (p50 ~100 ms on the wire); 640 ms keeps "mm-hmm" a back-channel; 400 ms of
        // quiet bridges the comma pause of "Sorry, can I stop you there?". The onset gate's level
        // is the bench's (and the wire tests') own onset criterion, 0.02 RMS.
        BargeInSettings {
            enabled: true,
            threshold: 0.6,
            pause_ms: U64Range(32),
            commit_ms: U64Range(640),
            resume_ms: U64Range(400),
            echo_ncc: 0.55,
            echo_return_loss_db: 6.0,
            echo_max_delay_ms: U64Range(400),
            onset_dbfs: -34.0,
            fade_ms: U64Range(0),
        }
    }
}

/// What an `llm` agent says and how (OpenAI Realtime session settings).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentLlm {
    /// A name from `models.llm`; may be left out when only one is configured.
    #[serde(default)]
    pub model: Option<String>,
    /// The system instructions; `{caller}`, `{called}`, `{agent}`, `{date}`, `{time}` are filled in per call.
    pub instructions: String,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default = "default_max_output")]
    pub max_output_tokens: U64Range<1, 100_000>,
    /// Oldest items leave the context beyond this many (estimated) tokens; 0 = never truncate.
    #[serde(default = "default_max_context")]
    pub max_context_tokens: U64Range<0, 10_000_000>,
    /// Spoken when the language model is down, slow or answers garbage.
    #[serde(default = "default_apology")]
    pub apology: String,
    /// After the apology: `continue` (the caller may try again), `hangup` (BYE once it is spoken)
    /// or `transfer` (a REFER to `transfer_to` once it is spoken).
    #[serde(default)]
    pub on_failure: LlmFailurePolicy,
    /// With `on_failure: transfer`: where the call goes (a sip: URI; `{caller}`, `{called}` and the
    /// call's variables are filled in).
    #[serde(default)]
    pub transfer_to: Option<String>,
    /// Functions the model may call during the call (OpenAI function tools).
    #[serde(default)]
    pub tools: Vec<ToolConfig>,
}

/// One tool: what the model sees (name, description, JSON-Schema parameters) and what runs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (the subset `models::llm::constrain` checks).
    #[serde(default = "default_tool_parameters")]
    pub parameters: serde_json::Value,
    #[serde(rename = "type")]
    pub kind: ToolKind,
    /// http: GET, POST, PUT, PATCH or DELETE (default POST).
    #[serde(default)]
    pub method: Option<String>,
    /// http: the URL; `{name}` is filled in from the arguments or the call's variables (URL-encoded).
    #[serde(default)]
    pub url: Option<String>,
    /// http: request headers; `${env:NAME}` and `${file:PATH}` are replaced at start-up (never logged).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// http: per attempt (default 5 s); transfer: from the REFER to the target's answer (default 30 s).
    #[serde(default)]
    pub timeout_ms: Option<U64Range<1, 600_000>>,
    /// http: attempts after the first on a connection error, a timeout or a 5xx.
    #[serde(default)]
    pub retries: U64Range<0, 5>,
    /// http: the response body given to the model is cut at this many bytes.
    #[serde(default = "default_tool_max_response")]
    pub max_response_bytes: U64Range<16, 1_000_000>,
    /// transfer: the SIP URI the caller is sent to (REFER); `{name}` is filled in like `url`.
    #[serde(default)]
    pub target: Option<String>,
    /// http: the conversation goes on while the tool runs (gpt-realtime's asynchronous function
    /// calls): the model is told the result is pending, the caller may keep talking, and the result
    /// enters the conversation when it arrives, for the agent to say.
    #[serde(rename = "async", default)]
    pub is_async: bool,
    /// Spoken as the tool starts, while the caller waits ("Let me check that for you").
    #[serde(default)]
    pub filler: Option<String>,
    /// Spoken when the tool fails or times out (a transfer the peer refuses included); the model is
    /// told the error and says nothing more for that turn. Without it the model speaks about the error.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Argument names whose values never reach the record or the log.
    #[serde(default)]
    pub secret_arguments: Vec<String>,
    /// The tool is offered only while every one of these call variables has the given value
    /// (variables come from the call and from `set_variable`).
    #[serde(default)]
    pub when: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    /// A webhook: the arguments and the call's context as JSON, the response body back to the model.
    Http,
    /// End the call once the agent has finished speaking.
    Hangup,
    /// Set call variables (the arguments' keys and values) for later `when` conditions.
    SetVariable,
    /// Send the `digits` argument to the far end as RFC 4733 events (navigating another IVR).
    SendDtmf,
    /// Blind transfer of the caller to `target` (SIP REFER) once the agent has finished speaking;
    /// the call ends when the target answers, and goes on (with `fallback`) when it cannot.
    Transfer,
}

impl ToolConfig {
    /// How long the tool may take (see `timeout_ms`).
    pub fn timeout(&self) -> std::time::Duration {
        let default = if self.kind == ToolKind::Transfer { 30_000 } else { 5000 };
        std::time::Duration::from_millis(self.timeout_ms.map_or(default, |t| t.get()))
    }
}

fn default_tool_parameters() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {}})
}
fn default_tool_max_response() -> U64Range<16, 1_000_000> {
    U64Range(4000)
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LlmFailurePolicy {
    #[default]
    Continue,
    Hangup,
    Transfer,
}

fn default_max_output() -> U64Range<1, 100_000> {
    U64Range(200)
}
fn default_max_context() -> U64Range<0, 10_000_000> {
    U64Range(4096)
}
fn default_apology() -> String {
    "I'm sorry, I'm having trouble answering right now. Please try again in a moment.".into()
}

/// Speech recognition of the caller's turns (OpenAI Realtime `input_audio_transcription`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Transcription {
    /// A name from `models.asr`; may be left out when only one is configured.
    #[serde(default)]
    pub model: Option<String>,
    /// Overrides the model's `language` (`en`, `de`, ..., or `auto`).
    #[serde(default)]
    pub language: Option<String>,
    /// While the caller speaks, a partial transcript this often when a recogniser is idle (0 = off).
    /// An embedded language model computes the conversation with the words so far on each, so that
    /// the turn's end leaves only its last words to compute (~200 ms sooner on 2 cores).
    #[serde(default = "default_partial_interval")]
    pub partial_interval_ms: U64Range<0, 60_000>,
}

fn default_partial_interval() -> U64Range<0, 60_000> {
    U64Range(500)
}

/// How turns end (OpenAI Realtime `turn_detection`): `server_vad` on silence, `semantic_vad`
/// when the end-of-turn model says the caller has finished (bounded by `eagerness`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TurnDetection {
    #[serde(rename = "type")]
    pub kind: TurnDetectionKind,
    #[serde(default = "default_vad_threshold")]
    pub threshold: f32,
    #[serde(default = "default_prefix_padding")]
    pub prefix_padding_ms: U64Range<0, 5000>,
    /// Silence that stops speech: server_vad's turn end (default 500 ms); with semantic_vad the
    /// moment the end-of-turn model is asked (default 250 ms).
    #[serde(default)]
    pub silence_duration_ms: Option<U64Range<0, 10_000>>,
    /// Shorter bursts (coughs, clicks) are not speech.
    #[serde(default = "default_min_speech")]
    pub min_speech_ms: U64Range<0, 5000>,
    /// semantic_vad: how long an unfinished-sounding turn may pause before it ends anyway
    /// (low 8 s, medium and auto 4 s, high 2 s).
    #[serde(default)]
    pub eagerness: Eagerness,
    /// semantic_vad: P(turn complete) at or above which the turn ends at once.
    #[serde(default = "default_turn_threshold")]
    pub completion_threshold: f32,
    /// manual: the DTMF key that ends the caller's turn (0-9, *, #, A-D).
    #[serde(default = "default_commit_key")]
    pub commit_key: String,
    /// Quiet this long inside a turn starts its recognition and reply on speculation, before the
    /// turn is committed; dropped without a trace if the caller goes on (0 = off; manual: never).
    #[serde(default = "default_speculate_after")]
    pub speculate_after_ms: U64Range<0, 10_000>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TurnDetectionKind {
    ServerVad,
    SemanticVad,
    /// Pauses never end the turn: the commit key (or a command) does.
    Manual,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Eagerness {
    Low,
    Medium,
    High,
    #[default]
    Auto,
}

impl Eagerness {
    /// The longest pause an unfinished-sounding turn may have (the Realtime API's bounds).
    pub fn max_wait_ms(self) -> u64 {
        match self {
            Eagerness::Low => 8000,
            Eagerness::Medium | Eagerness::Auto => 4000,
            Eagerness::High => 2000,
        }
    }
}

fn default_vad_threshold() -> f32 {
    0.5
}
fn default_turn_threshold() -> f32 {
    0.5
}
fn default_speculate_after() -> U64Range<0, 10_000> {
    // Pipecat's VAD stop: a mid-word stop or a plosive is shorter; the tail the recogniser keeps
    // after the speech end (200 ms) is there by then.
    U64Range(200)
}
fn default_commit_key() -> String {
    "#".into()
}
fn default_prefix_padding() -> U64Range<0, 5000> {
    U64Range(300)
}
fn default_min_speech() -> U64Range<0, 5000> {
    U64Range(250)
}

impl TurnDetection {
    pub fn silence_ms(&self) -> u64 {
        match (self.silence_duration_ms, self.kind) {
            (Some(s), _) => s.get(),
            (None, TurnDetectionKind::ServerVad | TurnDetectionKind::Manual) => 500,
            (None, TurnDetectionKind::SemanticVad) => 250,
        }
    }
}

fn default_rate() -> f32 {
    1.0
}

fn default_echo_delay() -> U64Range<0, 5000> {
    U64Range(300)
}

/// "LOW-HIGH", both inclusive, with room for at least one RTP/RTCP pair.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a port range like 20000-29999");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let low: u16 = a.trim().parse().map_err(|_| bad())?;
        let high: u16 = b.trim().parse().map_err(|_| bad())?;
        if low == 0 || high <= low {
            return Err(format!("port range `{s}`: LOW must be > 0 and below HIGH"));
        }
        if low.div_ceil(2) * 2 + 1 > high {
            return Err(format!("port range `{s}` holds no even RTP port with its RTCP port"));
        }
        Ok(PortRange { low, high })
    }
}

/// An integer that must lie in MIN..=MAX; the error names the bounds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(try_from = "u64")]
pub struct U64Range<const MIN: u64, const MAX: u64>(pub u64);

impl<const MIN: u64, const MAX: u64> TryFrom<u64> for U64Range<MIN, MAX> {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&v) {
            Ok(U64Range(v))
        } else {
            Err(format!("{v} is out of range {MIN}..={MAX}"))
        }
    }
}

impl<const MIN: u64, const MAX: u64> U64Range<MIN, MAX> {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl Config {
    /// The agent for a called user, by the first matching route.
    pub fn route(&self, called: &str) -> Option<&str> {
        self.routes.iter().find(|r| glob_match(&r.pattern, called)).map(|r| r.agent.as_str())
    }
}

/// `*` = any run (also empty), `?` = any one character; everything else literal.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    // Iterative wildcard matching with backtracking to the last `*`.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub vad: Option<ModelConfig>,
    /// Smart Turn v3.2 end-of-turn model (`semantic_vad`).
    #[serde(default)]
    pub turn: Option<ModelConfig>,
    /// Piper voice (`path` is the .onnx; its `.onnx.json` sits beside it): the default voice.
    #[serde(default)]
    pub tts: Option<ModelConfig>,
    /// More Piper voices by name; an agent picks one with `voice: NAME`.
    #[serde(default)]
    pub voices: BTreeMap<String, ModelConfig>,
    /// Whisper recognisers by name (folders scripts/setup.sh converts to ONNX); an agent
    /// picks one with `transcription.model` (optional when there is only one).
    #[serde(default)]
    pub asr: BTreeMap<String, AsrModelConfig>,
    /// Language models by name; an agent picks one with `llm.model` (optional when there is one).
    #[serde(default)]
    pub llm: BTreeMap<String, LlmBackendConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LlmKind {
    /// Any OpenAI-compatible chat-completions endpoint (llama.cpp server, vLLM, Ollama, OpenAI).
    Openai,
    /// The embedded model: a folder scripts/llm-to-onnx.py converted, run on ONNX Runtime here.
    Onnx,
}

/// A language-model backend: `type: openai` (base_url, model, key, timeouts, retries) or
/// `type: onnx` (path, where it runs, sampling, cache).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlmBackendConfig {
    #[serde(rename = "type")]
    pub kind: LlmKind,
    /// openai: up to, not including, `/chat/completions`, e.g. `http://127.0.0.1:8080/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// openai: the model name the endpoint knows.
    #[serde(default)]
    pub model: Option<String>,
    /// openai: the API key from this environment variable, or from this file (never logged).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: U64Range<1, 60_000>,
    #[serde(default = "default_first_token_timeout")]
    pub first_token_timeout_ms: U64Range<1, 600_000>,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: U64Range<1, 600_000>,
    /// openai: retries before the first token (connection errors, 429, 5xx).
    #[serde(default = "default_llm_retries")]
    pub retries: U64Range<0, 10>,
    /// onnx: the converted model's folder (model.onnx, llm.json, vocab.json, merges.txt), relative to this file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// onnx: execution providers in order of preference.
    #[serde(default = "default_providers")]
    pub providers: Vec<Provider>,
    #[serde(default)]
    pub strict: bool,
    #[serde(default = "default_llm_threads")]
    pub intra_threads: U64Range<1, 64>,
    /// ONNX Runtime's intra-op threads spin-wait between operators (its default): faster for a
    /// model alone; off, an idle model's threads sleep and leave the cores to the others.
    #[serde(default = "default_spin")]
    pub spin: bool,
    /// onnx: replies waiting for the model, across calls; beyond it the caller hears the apology.
    #[serde(default = "default_llm_queue")]
    pub queue: U64Range<1, 10_000>,
    /// onnx: memory for the conversations' computed prefixes (KV caches), across calls.
    #[serde(default = "default_llm_cache_mb")]
    pub cache_mb: U64Range<16, 1_000_000>,
    /// onnx sampling defaults (an agent's `llm.temperature` overrides the temperature); 0 = greedy.
    #[serde(default = "default_llm_temperature")]
    pub temperature: f32,
    #[serde(default = "default_llm_top_p")]
    pub top_p: f32,
    #[serde(default = "default_llm_top_k")]
    pub top_k: U64Range<0, 1_000_000>,
    #[serde(default = "default_llm_repetition_penalty")]
    pub repetition_penalty: f32,
    #[serde(default)]
    pub seed: u64,
}

fn default_llm_threads() -> U64Range<1, 64> {
    U64Range(2)
}
fn default_llm_queue() -> U64Range<1, 10_000> {
    U64Range(16)
}
fn default_llm_cache_mb() -> U64Range<16, 1_000_000> {
    U64Range(1024)
}
fn default_llm_temperature() -> f32 {
    0.7
}
fn default_llm_top_p() -> f32 {
    0.8
}
fn default_llm_top_k() -> U64Range<0, 1_000_000> {
    U64Range(20)
}
fn default_llm_repetition_penalty() -> f32 {
    1.05
}

fn default_connect_timeout() -> U64Range<1, 60_000> {
    U64Range(2000)
}
fn default_first_token_timeout() -> U64Range<1, 600_000> {
    U64Range(10_000)
}
fn default_idle_timeout() -> U64Range<1, 600_000> {
    U64Range(5000)
}
fn default_llm_retries() -> U64Range<0, 10> {
    U64Range(1)
}

/// One Whisper recogniser: its converted folder and where it runs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AsrModelConfig {
    /// Folder with encoder/decoder .onnx, whisper.json and vocabulary.txt (relative to this file).
    pub path: PathBuf,
    /// `fp32`, or `int8` (the per-channel quantised graphs beside them).
    #[serde(default)]
    pub precision: Precision,
    /// Default language for agents using this model: `en`, another code the
    /// (multilingual) model knows, or `auto` to detect it per turn.
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default = "default_providers")]
    pub providers: Vec<Provider>,
    #[serde(default)]
    pub strict: bool,
    #[serde(default = "default_one")]
    pub intra_threads: U64Range<1, 64>,
    /// ONNX Runtime's intra-op threads spin-wait between operators (its default): faster for a
    /// model alone; off, an idle model's threads sleep and leave the cores to the others.
    #[serde(default = "default_spin")]
    pub spin: bool,
    /// Threads, each with its own copy of the model, sharing one queue.
    #[serde(default = "default_one")]
    pub workers: U64Range<1, 64>,
    /// Turns a thread recognises together (those waiting when it is free, of any calls).
    #[serde(default = "default_asr_max_batch")]
    pub max_batch: U64Range<1, 256>,
    /// Turns waiting, across calls; beyond it a turn is not transcribed (counted).
    #[serde(default = "default_asr_queue")]
    pub queue: U64Range<1, 100_000>,
    /// Shortest encoder window in seconds (0..=30). A turn is encoded in a window fitted to it
    /// (its audio + as much silence, at least 1 s, whole seconds) but never shorter than this;
    /// 0 or 30 = always Whisper's fixed 30 s window (the slow, original behaviour), and unset
    /// (`models::asr::DEFAULT_WINDOW_FLOOR_S`): a fitted window is opt-in, with a floor measured for the model.
    #[serde(default)]
    pub window_floor_s: Option<f32>,
}

fn default_language() -> String {
    "en".into()
}
fn default_asr_max_batch() -> U64Range<1, 256> {
    U64Range(8)
}
fn default_asr_queue() -> U64Range<1, 100_000> {
    U64Range(64)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The ONNX Runtime shared library (relative to this file); scripts/setup.sh
    /// extracts it from the pinned `onnxruntime` wheel (`--gpu`: `onnxruntime-gpu`).
    #[serde(default = "default_ort_library")]
    pub library: PathBuf,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { library: default_ort_library() }
    }
}
fn default_ort_library() -> PathBuf {
    PathBuf::from("../models/onnxruntime/libonnxruntime.so.1.32.0")
}

/// One model: its file and where it runs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The .onnx file (relative to this file).
    pub path: PathBuf,
    /// Execution providers in order of preference; the first that works is used.
    #[serde(default = "default_providers")]
    pub providers: Vec<Provider>,
    /// An unavailable provider is a start-up error instead of a fallback.
    #[serde(default)]
    pub strict: bool,
    #[serde(default = "default_one")]
    pub intra_threads: U64Range<1, 64>,
    #[serde(default = "default_one")]
    pub inter_threads: U64Range<1, 64>,
    /// ONNX Runtime's intra-op threads spin-wait between operators (its default): faster for a
    /// model alone; off, an idle model's threads sleep and leave the cores to the others.
    #[serde(default = "default_spin")]
    pub spin: bool,

    /// Most streams in one inference (models with a batch dimension).
    #[serde(default = "default_batch")]
    pub max_batch: U64Range<1, 4096>,
    /// Requests waiting for the model, across calls; beyond it a call's work is dropped (counted).
    #[serde(default = "default_queue")]
    pub queue: U64Range<1, 1_000_000>,
}

fn default_spin() -> bool {
    // Measured on 2 cores with the voice-to-voice bench (README): no difference beyond the noise
    // with 4 callers, slightly faster replies for one: ONNX Runtime's default stays.
    true
}
fn default_providers() -> Vec<Provider> {
    vec![Provider::Cpu]
}
fn default_one() -> U64Range<1, 64> {
    U64Range(1)
}
fn default_batch() -> U64Range<1, 4096> {
    U64Range(128)
}
fn default_queue() -> U64Range<1, 1_000_000> {
    U64Range(4096)
}
