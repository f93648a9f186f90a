//! `switchboard campaign run|status|export`. `run` hands the campaign file to the running
//! appliance (which owns the SIP port and the accounts) and follows it with a progress bar on a
//! terminal, a line per change elsewhere; `status` and `export` read the store directly, so they
//! work whether or not the appliance is up.

use std::process::ExitCode;
use std::time::Duration;
use switchboard::campaign::Store;
use switchboard::config::LoadedConfig;

fn store(loaded: &LoadedConfig) -> Result<Store, String> {
    let path = loaded.resolve(&loaded.config.campaigns.store);
    if !path.exists() {
        return Err(format!("{}: no campaign store yet (no campaign has run with this config)", path.display()));
    }
    Store::open(&path).map_err(|e| e.to_string())
}

pub fn run(
    loaded: &LoadedConfig,
    file: &std::path::Path,
    http: Option<std::net::SocketAddr>,
    no_wait: bool,
) -> ExitCode {
    let admin = super::admin::Admin::new(loaded, http);
    let abs = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let rt = match super::admin::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let (code, v) = match admin.post("/campaigns", &serde_json::json!({ "file": abs.display().to_string() })).await
        {
            Ok(r) => (r.status, r.json),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if !code.is_success() {
            eprintln!("error: {}", v["error"].as_str().unwrap_or("the appliance refused the campaign"));
            return ExitCode::FAILURE;
        }
        let name = v["campaign"].as_str().unwrap_or_default().to_string();
        println!("campaign {name} running");
        if no_wait {
            return ExitCode::SUCCESS;
        }
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = indicatif::ProgressBar::new(0);
        if tty {
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} contacts final  {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
        } else {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let mut last = String::new();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok(s) = admin.get(&format!("/campaigns/{name}")).await else {
                bar.abandon();
                eprintln!("error: lost the appliance; the campaign resumes when it starts again");
                return ExitCode::FAILURE;
            };
            let contacts = s["contacts"].as_u64().unwrap_or(0);
            let done = contacts - s["pending"].as_u64().unwrap_or(0) - s["dialing"].as_u64().unwrap_or(0);
            let line = format!("{} dialling, {} attempts, final {}", s["dialing"], s["attempts"], s["final"]);
            bar.set_length(contacts);
            bar.set_position(done);
            bar.set_message(line.clone());
            if !tty && line != last {
                println!("{done}/{contacts} final; {line}");
                last = line;
            }
            let runner = s["runner"].as_str().unwrap_or("");
            if s["done"] == true || runner.starts_with("failed") || runner == "finished" {
                bar.finish();
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                return if runner.starts_with("failed") { ExitCode::FAILURE } else { ExitCode::SUCCESS };
            }
        }
    })
}

pub fn status(loaded: &LoadedConfig, name: Option<&str>) -> ExitCode {
    let st = match store(loaded) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => st.campaigns().unwrap_or_default(),
    };
    for n in names {
        match switchboard::server::campaigns::status_json(&st, &n) {
            Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

pub fn export(loaded: &LoadedConfig, name: &str, attempts: bool, out: Option<&std::path::Path>) -> ExitCode {
    let st = match store(loaded) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let writer: Box<dyn std::io::Write> = match out {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("error: {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
        },
        None => Box::new(std::io::stdout()),
    };
    let r = if attempts { st.export_attempts_csv(name, writer) } else { st.export_csv(name, writer) };
    match r {
        Ok(rows) => {
            eprintln!("{rows} rows");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
