//! The `switchboard` command line.

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
    /// Validate a config file without starting anything.
    CheckConfig {
        file: PathBuf,
    },
    /// Load the ONNX Runtime library and every configured model, and say which
    /// execution provider each one really runs on.
    CheckModels {
        #[arg(long, short, default_value = "config/switchboard.yaml")]
        config: PathBuf,
    },
}

fn parse_ports(s: &str) -> Result<PortRange, String> {
    s.parse()
}
