//! The real `switchboard` binary under test.

use super::ports::Ports;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Path of the `switchboard` binary cargo built for these integration tests.
pub fn switchboard_bin() -> PathBuf {
    // SWITCHBOARD_BIN: another build of the appliance, so a bench can measure before and after
    // with the same harness in one sitting.
    std::env::var_os("SWITCHBOARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchboard")))
}

/// A running appliance. Dropping it sends SIGTERM, waits up to 3 s, then kills it.
pub struct Appliance {
    child: Mutex<Child>,
    pid: u32,
    dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    ports: Ports,
}

impl Appliance {
    /// Starts the appliance in a fresh directory (`target/test-runs/<binary>/<test>-<n>/`, see
    /// [`super::test_dir`]); see [`Appliance::start_in`].
    pub fn start(config_yaml: &str, ports: &Ports) -> Appliance {
        Appliance::start_in(&super::test_dir("appliance"), config_yaml, ports)
    }

    /// Writes `config_yaml` to `<dir>/switchboard.yaml` and runs
    /// `switchboard run --config <file> --sip-listen 127.0.0.1:<sip> --http-listen 127.0.0.1:<http>
    /// --rtp-ports <low>-<high>` with the repository root as working directory, stdout+stderr to
    /// `<dir>/appliance.log`; waits (≤ 15 s) until `GET /healthz` answers 200, else panics with
    /// the log's tail.
    ///
    /// Placeholders replaced in the YAML first: `{{run_dir}}` (this directory), `{{repo}}` (the
    /// repository root), `{{sip}}`, `{{http}}`, `{{rtp_low}}`, `{{rtp_high}}`, `{{peer_sip}}`,
    /// `{{peer_rtp}}`, `{{ctrl}}` (the port numbers).
    pub fn start_in(dir: &Path, config_yaml: &str, ports: &Ports) -> Appliance {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let yaml = expand_placeholders(config_yaml, dir, ports);
        let config_path = dir.join("switchboard.yaml");
        std::fs::write(&config_path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let log_path = dir.join("appliance.log");
        let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let mut cmd = Command::new(switchboard_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--sip-listen")
            .arg(format!("127.0.0.1:{}", ports.sip))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", ports.http))
            .arg("--rtp-ports")
            .arg(format!("{}-{}", ports.rtp_low, ports.rtp_high))
            .current_dir(super::repo_root())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        std::fs::write(dir.join("appliance.cmd"), format!("{cmd:?}\n")).ok();
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", switchboard_bin().display()));
        let app = Appliance {
            pid: child.id(),
            child: Mutex::new(child),
            dir: dir.to_path_buf(),
            config_path,
            log_path,
            ports: ports.clone(),
        };
        // Loading the models takes ~10 s on 2 idle cores; a busy machine (CI, parallel tests) takes longer.
        app.wait_healthy(Duration::from_secs(60));
        app
    }

    fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "switchboard exited during start-up ({status}); config {}; log tail:\n{}",
                    self.config_path.display(),
                    self.log_tail(60)
                );
            }
            let last = match try_http(self.ports.http, "GET", "/healthz", None, Duration::from_millis(500)) {
                Ok((200, _)) => return,
                Ok((status, body)) => format!("HTTP {status}: {body}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "switchboard not healthy within {timeout:?} (last /healthz: {last}); log tail:\n{}",
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The test run directory (config, appliance.log, anything the test adds).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// `127.0.0.1:<sip>`.
    pub fn sip_addr(&self) -> String {
        self.ports.sip_addr()
    }

    /// `GET <path>` on the HTTP port → (status, body). Panics if the request fails.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.http_request("GET", path, None)
    }

    /// Any method with an optional JSON body → (status, body). Panics if the request fails.
    /// An HTTP request with the admin token the appliance generated beside its config (state-
    /// changing endpoints require it).
    pub fn http_request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let token = self.admin_token();
        try_http_with(self.ports.http, method, path, body, Duration::from_secs(10), token.as_deref())
            .unwrap_or_else(|e| panic!("HTTP {method} {path}: {e}; log tail:\n{}", self.log_tail(30)))
    }

    /// The token in `admin.token` beside the config, once the appliance has written it.
    pub fn admin_token(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("admin.token")).ok().map(|t| t.trim().to_string())
    }

    /// The Prometheus text from `/metrics` (panics unless 200).
    pub fn metrics(&self) -> String {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        body
    }

    /// The value of one series, e.g. `switchboard_calls_total` or
    /// `switchboard_calls_total{result="answered"}` (label order does not matter).
    pub fn metric_value(&self, name_with_labels: &str) -> Option<f64> {
        metric_value(&self.metrics(), name_with_labels)
    }

    /// Sum over every series of a metric name (all label values).
    pub fn metric_sum(&self, name: &str) -> f64 {
        metric_sum(&self.metrics(), name)
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        super::send_signal(self.pid, "TERM");
    }

    /// Sends any signal by name (`"INT"`, `"HUP"`, …).
    pub fn signal(&self, signal: &str) {
        super::send_signal(self.pid, signal);
    }

    /// Exit status if it has exited (non-blocking).
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        super::wait_child(&mut child, timeout)
    }

    /// Everything the appliance logged so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        super::file_tail(&self.log_path, lines)
    }

    /// Waits until the log contains `needle` (≤ `timeout`).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        super::wait_until(timeout, || self.log().contains(needle).then_some(())).is_some()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        super::stop_child(child, "TERM", Duration::from_secs(3));
    }
}

fn expand_placeholders(yaml: &str, dir: &Path, ports: &Ports) -> String {
    let mut s = yaml.replace("{{run_dir}}", &dir.display().to_string());
    s = s.replace("{{repo}}", &super::repo_root().display().to_string());
    for (k, v) in [
        ("sip", ports.sip),
        ("http", ports.http),
        ("rtp_low", ports.rtp_low),
        ("rtp_high", ports.rtp_high),
        ("peer_sip", ports.peer_sip),
        ("peer_rtp", ports.peer_rtp),
        ("ctrl", ports.ctrl),
    ] {
        s = s.replace(&format!("{{{{{k}}}}}"), &v.to_string());
    }
    s
}

/// A minimal HTTP/1.1 client over std's TcpStream (`Connection: close`; handles Content-Length,
/// chunked and read-to-close bodies).
pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    try_http_with(port, method, path, body, timeout, None)
}

/// `try_http` with an optional `Authorization: Bearer` token.
pub fn try_http_with(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAccept: */*\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    } else if method != "GET" && method != "HEAD" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    // Read until close, or until a complete Content-Length body has arrived.
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if let Some(done) = response_complete(&raw) {
                    if done {
                        break;
                    }
                }
            }
            Err(e) if raw.is_empty() => return Err(format!("read: {e}")),
            Err(_) => break,
        }
    }
    parse_response(&raw)
}

/// Some(true) when a Content-Length response is complete.
fn response_complete(raw: &[u8]) -> Option<bool> {
    let head_end = find(raw, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let len =
        head.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().ok()))??;
    Some(raw.len() >= head_end + 4 + len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let head_end = find(raw, b"\r\n\r\n")
        .ok_or_else(|| format!("incomplete HTTP response: {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {status_line:?}"))?;
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = raw[head_end + 4..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        body = dechunk(&body)?;
    } else if let Some(len) = headers.get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.truncate(len);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(b, b"\r\n").ok_or("bad chunked body")?;
        let size_str = String::from_utf8_lossy(&b[..line_end]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_str:?}"))?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
}

/// Splits `name{a="1",b="2"}` into the name and its labels (sorted).
fn parse_series(s: &str) -> Option<(String, BTreeMap<String, String>)> {
    let s = s.trim();
    let Some(open) = s.find('{') else {
        return Some((s.to_string(), BTreeMap::new()));
    };
    let name = s[..open].trim().to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &s[open + 1..];
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if rest.starts_with('}') {
            return Some((name, labels));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut val = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => {
                    let (_, e) = chars.next()?;
                    val.push(match e {
                        'n' => '\n',
                        other => other,
                    });
                }
                '"' => break i,
                c => val.push(c),
            }
        };
        labels.insert(key, val);
        rest = &rest[end + 1..];
    }
}

/// Splits a sample line into (series, value).
fn split_sample(line: &str) -> Option<(&str, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // The series ends at the closing brace of the labels, or at the first space.
    let series_end = match (line.find('{'), line.find(' ')) {
        (Some(b), Some(sp)) if b < sp => line[b..].find('}').map(|c| b + c + 1)?,
        (_, Some(sp)) => sp,
        _ => return None,
    };
    let value_str = line[series_end..].split_whitespace().next()?;
    let value = match value_str {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((&line[..series_end], value))
}

/// Looks up one series in Prometheus text: `name` or `name{labels}` (label order does not matter;
/// a bare name matches only a series without labels).
pub fn metric_value(text: &str, name_with_labels: &str) -> Option<f64> {
    let want = parse_series(name_with_labels)?;
    text.lines()
        .filter_map(split_sample)
        .find(|(series, _)| parse_series(series).as_ref() == Some(&want))
        .map(|(_, v)| v)
}

/// Sum of every series named `name` (any labels).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(split_sample)
        .filter(|(series, _)| parse_series(series).is_some_and(|(n, _)| n == name))
        .map(|(_, v)| v)
        .sum()
}
