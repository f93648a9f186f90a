//! The `switchboard` command line.

pub mod admin;
pub mod asr;
pub mod bargein;
pub mod campaign;
pub mod dial;
pub mod llm;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use switchboard::config::PortRange;

#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about = "Self-hosted SIP voice-agent appliance")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the appliance.
    Run {
        /// The YAML config file.
        #[arg(long, short, default_value = "config/switchboard.yaml")]
        config: PathBuf,
        /// Override sip.listen (ADDR:PORT).
        #[arg(long)]
        sip_listen: Option<SocketAddr>,
        /// Override http.listen (ADDR:PORT).
        #[arg(long)]
        http_listen: Option<SocketAddr>,
        /// Override media.rtp_ports (LOW-HIGH).
        #[arg(long, value_parser = parse_ports)]
        rtp_ports: Option<PortRange>,
    },
    /// Place one outbound call through a running appliance (its admin API) and follow it:
    /// exit 0 answered, 3 busy, 4 no answer, 5 failed, 1 refused.
    Dial {
        /// A number (dialled at the account's domain), tel: or sip: URI.
        to: String,
        /// The agent that talks once the call is answered.
        #[arg(long)]
        agent: String,
        /// The account or trunk to call through (accounts in the config).
        #[arg(long)]
        account: Option<String>,
        /// Seconds to let it ring before CANCEL.
        #[arg(long, default_value_t = 30)]
        ring_timeout: u64,
        /// A variable for the agent's instructions: NAME=VALUE (repeatable).
        #[arg(long)]
        var: Vec<String>,
        /// The appliance's HTTP address (default: the config's http.listen).
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Return once the call is placed.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, short, default_value = "config/switchboard.yaml")]
        config: PathBuf,
    },
    /// Outbound campaigns (see the README): run one on the running appliance, or read the store.
    Campaign {
        #[command(subcommand)]
        action: CampaignAction,
    },
    /// Validate a config file without starting anything.
    CheckConfig { file: PathBuf },
    /// Load the ONNX Runtime library and every configured model, and say which
    /// execution provider each one really runs on.
    CheckModels {
        #[arg(long, short, default_value = "config/switchboard.yaml")]
        config: PathBuf,
    },
    /// Transcribe WAV files the way calls are transcribed (Silero VAD turns, then Whisper),
    /// with a recogniser from the config's `models.asr`.
    Transcribe {
        #[arg(long, short, default_value = "config/switchboard.yaml")]
        config: PathBuf,
        /// A name from models.asr (default: the first).
        #[arg(long)]
        model: Option<String>,
        /// Override the model's language (`auto` detects).
        #[arg(long)]
        language: Option<String>,
        /// Transcribe each file whole (up to 30 s windows), without the VAD.
        #[arg(long)]
        no_vad: bool,
        files: Vec<PathBuf>,
    },
    /// Speech-recognition benchmark: real-time factor per precision and thread count, and
    /// the latency from the end of a turn to its transcript, on the given WAV files.
    BenchAsr {
        #[arg(long, short, default_value = "config/switchboard.yaml")]
        config: PathBuf,
        #[arg(long)]
        model: Option<String>,
        /// Thread counts to measure (intra-op threads of one recogniser).
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Precisions to measure.
        #[arg(long, value_delimiter = ',', default_value = "fp32,int8")]
        precision: Vec<String>,
        /// Runs per file and setting (the best is reported: the machine is shared).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Encoder window floors (seconds) to compare, e.g. `30,2` (30 = the fixed 30 s window);
        /// default: the model's `window_floor_s`.
        #[arg(long, value_delimiter = ',')]
        window_floor: Vec<f32>,
        files: Vec<PathBuf>,
    },
    /// Language-model benchmark: the embedded model (models.llm, type onnx) through a scripted
    /// conversation of N turns in one session, as a call uses it: time to the first text and
    /// to the first sentence per turn, decode rate, p50/p95.
    BenchLlm {
        #[arg(long, short, default_value = "config/switchboard.yaml")]
        config: PathBuf,
        /// A name from models.llm (default: the first of type onnx).
        #[arg(long)]
        model: Option<String>,
        #[arg(long, default_value_t = 20)]
        turns: usize,
        /// Override the model's intra-op threads.
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 60)]
        max_tokens: u32,
    },
    /// Barge-in benchmark in virtual time on real speech: latency from the caller's onset to the
    /// agent's last packet over N interruptions (p50/p95), and false barge-ins on back-channels,
    /// coughs and the agent's own echo; plus the echo check's cost per frame.
    BenchBargeIn {
        #[arg(long, short, default_value = "config/switchboard.yaml")]
        config: PathBuf,
        /// Whose barge_in settings (default: the first agent with barge-in enabled).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value_t = 50)]
        interruptions: usize,
        #[arg(long, default_value_t = 20)]
        coughs: usize,
        /// Echo on the caller's line, dB (relative to the agent's audio).
        #[arg(long, default_value_t = -10.0, allow_negative_numbers = true)]
        echo_db: f32,
        #[arg(long, default_value_t = 60)]
        echo_delay_ms: u64,
        /// The receive path's delay before the VAD (jitter buffer).
        #[arg(long, default_value_t = 40)]
        jitter_ms: u64,
        /// Print every trial's outcome.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CampaignAction {
    /// Start (or resume) the campaign in FILE on the running appliance and follow its progress.
    Run {
        file: PathBuf,
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Return once the appliance has taken the campaign.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, short, default_value = "config/switchboard.yaml")]
        config: PathBuf,
    },
    /// Where a campaign stands (all campaigns without NAME), from the store.
    Status {
        name: Option<String>,
        #[arg(long, short, default_value = "config/switchboard.yaml")]
        config: PathBuf,
    },
    /// Results as CSV: one row per contact (or per attempt with --attempts).
    Export {
        name: String,
        #[arg(long)]
        attempts: bool,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
        #[arg(long, short, default_value = "config/switchboard.yaml")]
        config: PathBuf,
    },
}

fn parse_ports(s: &str) -> Result<PortRange, String> {
    s.parse()
}
