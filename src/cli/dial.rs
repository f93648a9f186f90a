//! `switchboard dial`: place one outbound call through a running appliance's admin API and
//! follow it to its end. The appliance owns the SIP port and the models, so the command is a
//! client of `POST /calls` rather than a second appliance.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

pub struct DialArgs {
    pub to: String,
    pub agent: String,
    pub account: Option<String>,
    pub ring_timeout_s: u64,
    pub variables: Vec<String>,
    /// The appliance's HTTP address (default: the config's http.listen).
    pub http: Option<std::net::SocketAddr>,
    /// Return once the call is placed instead of following it.
    pub no_wait: bool,
}

/// Exit codes: 0 answered, 3 busy, 4 no answer, 5 failed, 1 the request was refused, 2 bad arguments.
pub fn dial(loaded: &switchboard::config::LoadedConfig, a: DialArgs) -> ExitCode {
    let mut vars = BTreeMap::new();
    for v in &a.variables {
        match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => {
                vars.insert(k.to_string(), val.to_string());
            }
            _ => {
                eprintln!("error: --var `{v}`: expected NAME=VALUE");
                return ExitCode::from(2);
            }
        }
    }
    let admin = super::admin::Admin::new(loaded, a.http);
    let rt = match super::admin::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let body = serde_json::json!({ "to": a.to, "agent": a.agent, "account": a.account, "ring_timeout_s": a.ring_timeout_s, "variables": vars });
        let super::admin::Reply { status, json: v, text } = match admin.post("/calls", &body).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if !status.is_success() {
            eprintln!("error: the appliance refused the call ({status}): {}", v["error"].as_str().unwrap_or(text.trim()));
            return ExitCode::FAILURE;
        }
        let Some(call_id) = v["call_id"].as_str().map(str::to_string) else {
            eprintln!("error: unexpected answer: {text}");
            return ExitCode::FAILURE;
        };
        println!("placed {call_id}");
        if a.no_wait {
            return ExitCode::SUCCESS;
        }
        let mut last = String::new();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Ok(s) = admin.get(&format!("/calls/{call_id}")).await else {
                eprintln!("error: lost the appliance while following the call");
                return ExitCode::FAILURE;
            };
            let state = s["state"].as_str().unwrap_or("").to_string();
            if state != last {
                println!("{state}{}", s["code"].as_u64().map(|c| format!(" ({c})")).unwrap_or_default());
                last = state.clone();
            }
            if state == "ended" {
                let outcome = s["outcome"].as_str().unwrap_or("failed");
                println!("outcome: {outcome}{}", s["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default());
                if let Some(p) = s["record_path"].as_str() {
                    println!("record: {p}");
                }
                return ExitCode::from(match outcome {
                    "answered" => 0,
                    "busy" => 3,
                    "no_answer" => 4,
                    _ => 5,
                });
            }
        }
    })
}
