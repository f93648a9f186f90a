mod cli;

use clap::Parser;
use cli::{CampaignAction, Cli, Command};
use std::process::ExitCode;

/// Load a config for a command that runs (logging set up from it); a bad config exits with 2.
fn load_config(path: &std::path::Path) -> Result<switchboard::config::LoadedConfig, ExitCode> {
    let loaded = switchboard::server::load_config(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    switchboard::telemetry::init(&loaded.config.logging);
    Ok(loaded)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match switchboard::server::load_config(&file) {
            Ok(c) => {
                println!("{}: ok ({} routes, {} agents)", file.display(), c.config.routes.len(), c.config.agents.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::CheckModels { config } => {
            let loaded = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match switchboard::models::load_all(&loaded) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Transcribe { config, model, language, no_vad, files } => {
            let loaded = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            report(cli::asr::transcribe(&loaded, model.as_deref(), language.as_deref(), !no_vad, &files))
        }
        Command::BenchAsr { config, model, threads, precision, runs, window_floor, files } => {
            let loaded = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            report(cli::asr::bench(&loaded, model.as_deref(), &threads, &precision, &window_floor, runs, &files))
        }
        Command::BenchLlm { config, model, turns, threads, max_tokens } => {
            let loaded = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            report(cli::llm::bench(&loaded, model.as_deref(), turns, threads, max_tokens))
        }
        Command::BenchBargeIn { config, agent, interruptions, coughs, echo_db, echo_delay_ms, jitter_ms, verbose } => {
            let loaded = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let line = switchboard::call::bargein_sim::Line {
                echo_gain: 10f32.powf(echo_db / 20.0),
                echo_delay_ms,
                jitter_ms,
                ..Default::default()
            };
            report(cli::bargein::bench(&loaded, agent.as_deref(), interruptions, coughs, line, verbose))
        }
        Command::Dial { to, agent, account, ring_timeout, var, http, no_wait, config } => {
            let loaded = match switchboard::server::load_config(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            cli::dial::dial(
                &loaded,
                cli::dial::DialArgs { to, agent, account, ring_timeout_s: ring_timeout, variables: var, http, no_wait },
            )
        }
        Command::Campaign { action } => {
            let config = match &action {
                CampaignAction::Run { config, .. }
                | CampaignAction::Status { config, .. }
                | CampaignAction::Export { config, .. } => config.clone(),
            };
            let loaded = match switchboard::server::load_config(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match action {
                CampaignAction::Run { file, http, no_wait, .. } => cli::campaign::run(&loaded, &file, http, no_wait),
                CampaignAction::Status { name, .. } => cli::campaign::status(&loaded, name.as_deref()),
                CampaignAction::Export { name, attempts, out, .. } => {
                    cli::campaign::export(&loaded, &name, attempts, out.as_deref())
                }
            }
        }
        Command::Run { config, sip_listen, http_listen, rtp_ports } => {
            let loaded = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("switchboard").build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let ov = switchboard::server::Overrides { sip_listen, http_listen, rtp_ports };
            match rt.block_on(switchboard::server::run(loaded, ov)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn report(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
