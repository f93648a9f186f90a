//! Packet capture on the loopback interface with tcpdump (what really went over the wire).

use super::pcap::{read_pcap_file, UdpPacket};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `tcpdump -i lo` writing `<dir>/cap.pcap` (or `cap-<n>.pcap` when that exists).
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Capture {
    /// Starts tcpdump on `lo` with a BPF filter (e.g. `ports.bpf_filter()` or `"udp"`) and waits
    /// (≤ 5 s) until it is capturing. Panics if tcpdump is missing or cannot capture.
    pub fn start(dir: &Path, bpf_filter: &str) -> Capture {
        let tcpdump = super::tool("tcpdump");
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let mut path = dir.join("cap.pcap");
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!("cap-{n}.pcap"));
            n += 1;
        }
        let mut cmd = Command::new(tcpdump);
        cmd.args(["-i", "lo", "-U", "-n", "--immediate-mode", "-s", "0", "-w"]).arg(&path);
        if super::running_as_root() {
            // Debian's tcpdump drops to user `tcpdump` after opening the device; it could then not
            // write into a root-owned directory.
            cmd.args(["-Z", "root"]);
        }
        cmd.args(bpf_filter.split_whitespace());
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn tcpdump: {e}"));
        let stderr_pipe = child.stderr.take().expect("tcpdump stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr_pipe).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("listening on") {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    let mut s = stderr.lock().unwrap_or_else(|e| e.into_inner());
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let started = rx.recv_timeout(Duration::from_secs(5)).is_ok();
        let mut cap = Capture { child: Some(child), path, stderr };
        if !started {
            let status = cap.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            let child = cap.child.as_mut().expect("child");
            super::stop_child(child, "KILL", Duration::from_millis(100));
            cap.child = None;
            panic!(
                "tcpdump did not start capturing on lo within 5 s (exit: {status:?}); stderr:\n{}\n\
                 (capturing needs root or CAP_NET_RAW+CAP_NET_ADMIN on tcpdump: \
                 `sudo setcap cap_net_raw,cap_net_admin=eip $(command -v tcpdump)`; \
                 tcpdump is installed by scripts/setup.sh --test)",
                cap.stderr()
            );
        }
        cap
    }

    /// The pcap file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What tcpdump printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops tcpdump (SIGINT, so it flushes) and returns the UDP packets it captured.
    pub fn stop(mut self) -> Vec<UdpPacket> {
        self.stop_inner();
        read_pcap_file(&self.path).unwrap_or_else(|e| panic!("capture: {e}\ntcpdump stderr:\n{}", self.stderr()))
    }

    fn stop_inner(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Let packets sent just before stop() reach the capture.
            std::thread::sleep(Duration::from_millis(150));
            super::stop_child(&mut child, "INT", Duration::from_secs(5));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// A BPF filter covering every port of the given blocks (appliance and peers), for [`Capture::start`].
pub fn bpf_for(blocks: &[&super::ports::Ports]) -> String {
    let ranges: Vec<String> =
        blocks.iter().map(|p| format!("portrange {}-{}", p.sip, p.peer_rtp_high.max(p.rtp_high) + 1)).collect();
    format!("udp and ({})", ranges.join(" or "))
}

/// All packets of `packets` to or from `port`.
pub fn packets_on_port(packets: &[UdpPacket], port: u16) -> Vec<&UdpPacket> {
    packets.iter().filter(|p| p.src.port() == port || p.dst.port() == port).collect()
}

/// SIP messages in a capture (payloads that start like a SIP request or response), as text.
pub fn sip_messages(packets: &[UdpPacket]) -> Vec<(f64, std::net::SocketAddr, std::net::SocketAddr, String)> {
    packets
        .iter()
        .filter(|p| {
            let head = &p.payload[..p.payload.len().min(200)];
            let s = String::from_utf8_lossy(head);
            s.starts_with("SIP/2.0 ") || s.lines().next().is_some_and(|l| l.ends_with(" SIP/2.0"))
        })
        .map(|p| (p.time, p.src, p.dst, String::from_utf8_lossy(&p.payload).into_owned()))
        .collect()
}
