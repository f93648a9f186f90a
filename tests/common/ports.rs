//! Loopback port blocks, unique across the tests of one binary (threads) and across test binaries or
//! concurrent `cargo test` runs (processes).
//!
//! A block is [`BLOCK`] consecutive ports in 21000..60000. Layout from the block base `B`:
//!
//! | field | port(s) | user |
//! |---|---|---|
//! | `sip` | B | the appliance's SIP listener (UDP + TCP) |
//! | `http` | B+1 | the appliance's HTTP listener |
//! | `ctrl` | B+2 | baresip ctrl_tcp |
//! | `peer_sip` | B+3 | the peer's SIP port (SIPp `-p`, baresip `sip_listen`) |
//! | `rtp_low..=rtp_high` | B+10 ..= B+99 | the appliance's RTP range |
//! | `peer_rtp..=peer_rtp_high` | B+100 ..= end of the block - 2 | SIPp `-mp` / baresip `rtp_ports` |
//!
//! SIPp's `[auto_media_port]` is `-mp + 4 * (call_number - 1)`: a default block holds it for 24 calls.
//! Load tests with more calls use [`alloc_ports_wide`].
//!
//! Cross-process reservation: while a process uses a block it holds a TCP listener on the block's
//! last port (the "sentinel"); another harness process cannot bind it and moves on. Within a process
//! an atomic counter hands out distinct blocks. Blocks outside the kernel's ephemeral port range are
//! preferred, and the SIP/HTTP/peer/ctrl ports are checked free (UDP and TCP) before use.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Ports per block.
pub const BLOCK: u16 = 200;
const RANGE_LOW: u16 = 21000;
const RANGE_HIGH: u16 = 60000; // exclusive

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    /// The appliance's SIP port (`--sip-listen 127.0.0.1:<sip>`).
    pub sip: u16,
    /// The appliance's HTTP port (`--http-listen 127.0.0.1:<http>`).
    pub http: u16,
    /// The appliance's RTP range (`--rtp-ports <rtp_low>-<rtp_high>`).
    pub rtp_low: u16,
    pub rtp_high: u16,
    /// The peer's (SIPp's or baresip's) SIP port.
    pub peer_sip: u16,
    /// The first RTP port of the peer (SIPp `-mp`, baresip `rtp_ports` start).
    pub peer_rtp: u16,
    /// The last port reserved for the peer's RTP.
    pub peer_rtp_high: u16,
    /// baresip's ctrl_tcp port.
    pub ctrl: u16,
}

impl Ports {
    /// `127.0.0.1:<sip>`: where SIPp/baresip send to reach the appliance.
    pub fn sip_addr(&self) -> String {
        format!("127.0.0.1:{}", self.sip)
    }
    /// `127.0.0.1:<http>`.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }
    /// `127.0.0.1:<peer_sip>`.
    pub fn peer_sip_addr(&self) -> String {
        format!("127.0.0.1:{}", self.peer_sip)
    }
    /// A BPF filter for tcpdump covering every port of this block (SIP, RTP both sides).
    pub fn bpf_filter(&self) -> String {
        let low = self.sip;
        let high = self.peer_rtp_high.max(self.rtp_high) + 1; // + the last RTCP port
        format!("udp and portrange {low}-{high}")
    }
}

/// Allocates a fresh block of [`BLOCK`] ports.
pub fn alloc_ports() -> Ports {
    alloc_ports_wide(1)
}

/// Allocates `blocks` consecutive blocks as one: the appliance part is laid out as in a single block,
/// and the peer RTP range extends to the end of the last block (SIPp load runs with many calls:
/// `[auto_media_port]` needs 4 ports per call number).
pub fn alloc_ports_wide(blocks: usize) -> Ports {
    let blocks = blocks.max(1);
    let bases = block_bases();
    let n = bases.len();
    let start = *START.get_or_init(|| {
        let mut h = DefaultHasher::new();
        super::test_binary_name().hash(&mut h);
        std::process::id().hash(&mut h);
        // Start among the preferred (non-ephemeral) blocks when there are any.
        let preferred = preferred_count().max(1);
        (h.finish() as usize) % preferred
    });
    for _ in 0..n {
        let idx = (start + NEXT.fetch_add(blocks, Ordering::SeqCst)) % n;
        if idx + blocks > n {
            continue;
        }
        let first = bases[idx];
        // The blocks must be adjacent.
        if bases[idx + blocks - 1] as u32 != first as u32 + (blocks as u32 - 1) * BLOCK as u32 {
            continue;
        }
        if let Some(ports) = try_block(first, blocks) {
            return ports;
        }
    }
    panic!("alloc_ports: no free block of {blocks}x{BLOCK} ports in {RANGE_LOW}..{RANGE_HIGH}");
}

static NEXT: AtomicUsize = AtomicUsize::new(0);
static START: OnceLock<usize> = OnceLock::new();
static SENTINELS: Mutex<Vec<TcpListener>> = Mutex::new(Vec::new());
static BASES: OnceLock<(Vec<u16>, usize)> = OnceLock::new();

fn block_bases() -> &'static [u16] {
    &bases_and_preferred().0
}

fn preferred_count() -> usize {
    bases_and_preferred().1
}

/// All block bases: first those outside the ephemeral range, then the others.
fn bases_and_preferred() -> &'static (Vec<u16>, usize) {
    BASES.get_or_init(|| {
        let (eph_low, eph_high) = ephemeral_range();
        let mut preferred = Vec::new();
        let mut other = Vec::new();
        let mut base = RANGE_LOW as u32;
        while base + BLOCK as u32 <= RANGE_HIGH as u32 {
            let end = base + BLOCK as u32 - 1;
            if end < eph_low || base > eph_high {
                preferred.push(base as u16);
            } else {
                other.push(base as u16);
            }
            base += BLOCK as u32;
        }
        let count = preferred.len();
        preferred.extend(other);
        (preferred, count)
    })
}

fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().filter_map(|v| v.parse::<u32>().ok());
            Some((it.next()?, it.next()?))
        })
        .unwrap_or((32768, 60999))
}

fn try_block(base: u16, blocks: usize) -> Option<Ports> {
    // Reserve every block's sentinel (its last port) against other harness processes.
    let mut held = Vec::new();
    for b in 0..blocks {
        let sentinel = base + (b as u16 + 1) * BLOCK - 1;
        held.push(TcpListener::bind((Ipv4Addr::LOCALHOST, sentinel)).ok()?);
    }
    let end = base as u32 + blocks as u32 * BLOCK as u32 - 1;
    let ports = Ports {
        sip: base,
        http: base + 1,
        ctrl: base + 2,
        peer_sip: base + 3,
        rtp_low: base + 10,
        rtp_high: base + 99,
        peer_rtp: base + 100,
        peer_rtp_high: (end - 1) as u16,
    };
    let udp_tcp = [ports.sip, ports.peer_sip];
    let tcp_only = [ports.http, ports.ctrl];
    let udp_only = [ports.rtp_low, ports.rtp_low + 1, ports.peer_rtp, ports.peer_rtp + 1];
    for p in udp_tcp.iter().chain(tcp_only.iter()) {
        TcpListener::bind((Ipv4Addr::LOCALHOST, *p)).ok()?;
    }
    for p in udp_tcp.iter().chain(udp_only.iter()) {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, *p)).ok()?;
    }
    SENTINELS.lock().unwrap_or_else(|e| e.into_inner()).extend(held);
    Some(ports)
}
