//! SIPp runs (package `sip-tester`): scenarios from `tests/scenarios/`, statistics from its screen file.

use super::ports::Ports;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The outcome of one SIPp run.
#[derive(Debug, Clone, Default)]
pub struct SippRun {
    /// SIPp's exit code: 0 all calls successful, 1 some failed, 97 stopped by command, 99 normal exit
    /// without calls, 255 (-1) fatal error, 254 (-2) could not bind; 128+N when killed by signal N.
    pub exit_code: i32,
    /// Totals ("Cumulative" column) from the final screen.
    pub successful: u64,
    pub failed: u64,
    /// True when the harness killed it at the timeout.
    pub timed_out: bool,
    /// The final statistics screen (`-trace_screen`).
    pub screen: String,
    /// The error trace (`-trace_err`): unexpected messages, retransmission timeouts, …
    pub errors: String,
    /// SIPp's stdout + stderr (start-up errors such as a bad scenario or a port in use).
    pub output: String,
    pub screen_file: PathBuf,
    pub error_file: PathBuf,
}

impl SippRun {
    /// Everything, for assertion messages.
    pub fn report(&self) -> String {
        format!(
            "sipp exit code {} (timed out: {}), successful {}, failed {}\n--- screen ---\n{}\n--- errors ---\n{}\n--- output ---\n{}",
            self.exit_code, self.timed_out, self.successful, self.failed, self.screen, self.errors, self.output
        )
    }
}

/// A path under tests/scenarios/.
pub fn scenario(name: &str) -> PathBuf {
    super::scenarios_dir().join(name)
}

/// A SIPp process started by [`spawn_sipp`]. Dropping it kills SIPp.
pub struct SippProcess {
    pub child: Child,
    pub screen_file: PathBuf,
    pub error_file: PathBuf,
    pub output_file: PathBuf,
}

static RUN_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Starts SIPp in the background (e.g. a UAS, or a load generator).
///
/// * runs with `dir` as its working directory, after copying the fixture pcaps into `dir/pcap/`
///   (scenarios refer to `pcap/speech_pcmu.pcap`, `pcap/speech_pcma.pcap`, `pcap/dtmf_1234.pcap`);
/// * `scenario`: an XML file (`-sf`), or the bare name of a built-in scenario such as `uas` or
///   `uac` (`-sn`) when no such file exists;
/// * `remote`: `Some("127.0.0.1:<port>")` for a UAC, `None` for a UAS;
/// * always adds `-i 127.0.0.1 -mi 127.0.0.1 -p <peer_sip> -mp <peer_rtp> -nostdin -trace_screen
///   -screen_file .. -trace_err -error_file ..`, and `-m 1` unless `extra` contains `-m`
///   (a UAS stopped by a signal writes no statistics: give it `-m N`).
pub fn spawn_sipp(dir: &Path, scenario: &Path, remote: Option<&str>, ports: &Ports, extra: &[&str]) -> SippProcess {
    super::fixtures().install_pcaps(dir);
    let n = RUN_COUNTER.fetch_add(1, Ordering::SeqCst);
    let stem = scenario.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sipp".into());
    let screen_file = dir.join(format!("sipp-{n}-{stem}.screen"));
    let error_file = dir.join(format!("sipp-{n}-{stem}.err"));
    let output_file = dir.join(format!("sipp-{n}-{stem}.out"));
    let builtin = !scenario.exists() && scenario.extension().is_none() && scenario.components().count() == 1;
    let mut cmd = Command::new(super::tool("sipp"));
    if let Some(remote) = remote {
        cmd.arg(remote);
    }
    if builtin {
        cmd.arg("-sn").arg(scenario);
    } else {
        let abs =
            std::fs::canonicalize(scenario).unwrap_or_else(|e| panic!("SIPp scenario {}: {e}", scenario.display()));
        cmd.arg("-sf").arg(abs);
    }
    cmd.args(["-i", "127.0.0.1", "-mi", "127.0.0.1"]);
    cmd.arg("-p").arg(ports.peer_sip.to_string());
    cmd.arg("-mp").arg(ports.peer_rtp.to_string());
    cmd.args(["-nostdin", "-trace_screen", "-screen_file"]).arg(&screen_file);
    cmd.args(["-trace_err", "-error_file"]).arg(&error_file);
    if !extra.contains(&"-m") {
        cmd.args(["-m", "1"]);
    }
    cmd.args(extra);
    let out = std::fs::File::create(&output_file).unwrap_or_else(|e| panic!("create {}: {e}", output_file.display()));
    let err = out.try_clone().expect("clone file");
    std::fs::write(dir.join(format!("sipp-{n}-{stem}.cmd")), format!("{cmd:?}\n")).ok();
    cmd.current_dir(dir).stdin(Stdio::null()).stdout(out).stderr(err);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn sipp: {e}"));
    SippProcess { child, screen_file, error_file, output_file }
}

impl SippProcess {
    /// Waits up to `timeout` for SIPp to finish (killing it after that) and collects the results.
    pub fn wait(mut self, timeout: Duration) -> SippRun {
        let mut timed_out = false;
        let status = match super::wait_child(&mut self.child, timeout) {
            Some(s) => s,
            None => {
                timed_out = true;
                // SIGUSR1 would make SIPp dump statistics; SIGTERM then SIGKILL is what we need.
                super::stop_child(&mut self.child, "TERM", Duration::from_secs(2)).expect("reap sipp")
            }
        };
        self.collect(super::exit_code(&status), timed_out)
    }

    /// Stops SIPp now (SIGTERM; a UAS stopped this way writes no statistics) and collects results.
    pub fn stop(mut self) -> SippRun {
        let status = super::stop_child(&mut self.child, "TERM", Duration::from_secs(2)).expect("reap sipp");
        self.collect(super::exit_code(&status), false)
    }

    /// Is SIPp still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn collect(&self, exit_code: i32, timed_out: bool) -> SippRun {
        let read = |p: &Path| std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let screen = read(&self.screen_file);
        SippRun {
            exit_code,
            successful: parse_total(&screen, "Successful call").unwrap_or(0),
            failed: parse_total(&screen, "Failed call").unwrap_or(0),
            timed_out,
            errors: read(&self.error_file),
            output: read(&self.output_file),
            screen,
            screen_file: self.screen_file.clone(),
            error_file: self.error_file.clone(),
        }
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        super::stop_child(&mut self.child, "TERM", Duration::from_secs(2));
    }
}

/// Runs a SIPp UAC scenario against `remote` to completion (killed after `timeout`).
/// See [`spawn_sipp`] for the arguments it always adds.
pub fn run_sipp(
    dir: &Path,
    scenario: &Path,
    remote: &str,
    ports: &Ports,
    extra: &[&str],
    timeout: Duration,
) -> SippRun {
    spawn_sipp(dir, scenario, Some(remote), ports, extra).wait(timeout)
}

/// The last number on the last line starting with `label` (the "Cumulative" column).
fn parse_total(screen: &str, label: &str) -> Option<u64> {
    screen
        .lines()
        .filter(|l| l.trim_start().starts_with(label))
        .filter_map(|l| l.split('|').next_back().and_then(|v| v.trim().parse::<u64>().ok()))
        .next_back()
}
