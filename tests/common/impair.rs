//! A userspace stand-in for `tc qdisc add dev … netem delay D J loss P` on loopback: a UDP relay that
//! drops, delays and therefore reorders datagrams, in both directions.
//!
//! Why not netem: the test machines' kernels have no `sch_netem` (`tc qdisc add … netem` answers
//! "Specified qdisc kind is unknown"; no module can be loaded), and the tests may only send traffic
//! on loopback. So the impairment is applied here, between two loopback addresses:
//!
//! ```text
//!   caller ──▶ LISTEN:p (this relay) ──impaired──▶ TARGET:p (the appliance's RTP socket)
//!   caller ◀──impaired── LISTEN:p (this relay) ◀── TARGET:p
//! ```
//!
//! The relay binds `LISTEN:p` for every port `p` it is given. A datagram from `TARGET:p` (the
//! appliance answering from the same port number) goes back to the last other source seen on that
//! socket (the caller); any other datagram goes on to `TARGET:p`, and its source is remembered as
//! the caller. The appliance writes `LISTEN` into its SDP (`media.advertised_address`) and latches
//! its replies onto the first source of valid RTP (symmetric RTP), which is this relay: both
//! directions go through it.
//!
//! Impairment, netem's semantics: each datagram is lost with probability `loss`, independently;
//! a datagram that is kept waits `delay ± jitter` (uniform, never below zero) and is sent when its
//! time comes, so two datagrams whose delays cross by more than their spacing leave in the other
//! order (netem's time-ordered queue does the same). The decisions come from a seeded SplitMix64
//! per flow (socket × direction) drawn in arrival order, so a run's loss pattern on a stream is the
//! same every time (only the wall-clock scheduling of the sends varies by a few ms).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one direction suffers: netem's `delay <delay> <jitter> loss <loss*100>%`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Probability that a datagram is dropped, 0..=1, independently of the others.
    pub loss: f64,
    /// Mean one-way delay added.
    pub delay: Duration,
    /// The added delay is uniform in `delay - jitter ..= delay + jitter` (clipped at zero).
    pub jitter: Duration,
}

impl Impairment {
    /// `tc qdisc … netem delay <delay_ms>ms <jitter_ms>ms loss <loss_pct>%`.
    pub fn netem(loss_pct: f64, delay_ms: u64, jitter_ms: u64) -> Impairment {
        Impairment {
            loss: loss_pct / 100.0,
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::from_millis(jitter_ms),
        }
    }

    /// A clean path (forwarded at once, nothing lost).
    pub fn none() -> Impairment {
        Impairment { loss: 0.0, delay: Duration::ZERO, jitter: Duration::ZERO }
    }
}

impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "netem delay {}ms {}ms loss {}%", self.delay.as_millis(), self.jitter.as_millis(), self.loss * 100.0)
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, good enough for Bernoulli and uniform draws.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The sans-IO part: one flow's decisions, datagram by datagram.
#[derive(Debug, Clone)]
pub struct Impairer {
    cfg: Impairment,
    rng: SplitMix64,
}

impl Impairer {
    pub fn new(cfg: Impairment, seed: u64) -> Impairer {
        Impairer { cfg, rng: SplitMix64::new(seed) }
    }

    /// The next datagram's fate: `None` = dropped, `Some(d)` = sent after `d`. Both draws are made
    /// for every datagram, so the delays do not depend on which datagrams were lost.
    pub fn next(&mut self) -> Option<Duration> {
        let lost = self.rng.next_f64() < self.cfg.loss;
        let u = self.rng.next_f64() * 2.0 - 1.0; // [-1, 1)
        let ns = self.cfg.delay.as_nanos() as f64 + u * self.cfg.jitter.as_nanos() as f64;
        let delay = Duration::from_nanos(ns.max(0.0) as u64);
        (!lost).then_some(delay)
    }
}

/// Counters of one direction (RTP and RTCP apart: see [`RelayStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DirStats {
    /// Datagrams that arrived at the relay.
    pub received: u64,
    /// Dropped by the loss draw.
    pub dropped: u64,
    /// Sent on (after their delay).
    pub forwarded: u64,
    /// Sent after a datagram of the same flow that had arrived after them.
    pub reordered: u64,
    /// Datagrams from the target before any peer was seen on that socket: nowhere to send them.
    pub unroutable: u64,
    /// Sum and maximum of the delays applied to the forwarded ones (scheduled, not measured).
    pub delay_sum: Duration,
    pub delay_max: Duration,
}

impl DirStats {
    /// Realised loss: dropped / (received - unroutable).
    pub fn loss(&self) -> f64 {
        self.dropped as f64 / (self.received - self.unroutable).max(1) as f64
    }

    pub fn mean_delay_ms(&self) -> f64 {
        self.delay_sum.as_secs_f64() * 1000.0 / self.forwarded.max(1) as f64
    }

    fn add(&mut self, o: &DirStats) {
        self.received += o.received;
        self.dropped += o.dropped;
        self.forwarded += o.forwarded;
        self.reordered += o.reordered;
        self.unroutable += o.unroutable;
        self.delay_sum += o.delay_sum;
        self.delay_max = self.delay_max.max(o.delay_max);
    }
}

impl fmt::Display for DirStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {}, dropped {} ({:.1} %), forwarded {}, reordered {}, delay mean {:.1} ms max {} ms",
            self.received,
            self.dropped,
            self.loss() * 100.0,
            self.forwarded,
            self.reordered,
            self.mean_delay_ms(),
            self.delay_max.as_millis()
        )
    }
}

/// The relay's counters: RTP (the even ports) and RTCP (the odd ones), per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RelayStats {
    /// Peer (caller) → target (appliance).
    pub to_target: DirStats,
    /// Target (appliance) → peer (caller).
    pub to_peer: DirStats,
    pub rtcp_to_target: DirStats,
    pub rtcp_to_peer: DirStats,
}

impl fmt::Display for RelayStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  RTP  caller → appliance: {}", self.to_target)?;
        writeln!(f, "  RTP  appliance → caller: {}", self.to_peer)?;
        let (t, p) = (&self.rtcp_to_target, &self.rtcp_to_peer);
        write!(
            f,
            "  RTCP both ways: {} received, {} dropped, {} with no peer to go to",
            t.received + p.received,
            t.dropped + p.dropped,
            t.unroutable + p.unroutable
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToTarget,
    ToPeer,
}

/// One socket × direction.
struct Flow {
    impairer: Impairer,
    stats: DirStats,
    /// Arrival index of the next datagram, and the highest arrival index already sent.
    next_index: u64,
    max_sent: Option<u64>,
}

struct Pending {
    due: Instant,
    /// Global tie-breaker: equal due times leave in arrival order.
    order: u64,
    flow: usize,
    index: u64,
    socket: usize,
    dest: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.order) == (o.due, o.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.order).cmp(&(o.due, o.order))
    }
}

struct State {
    flows: Vec<Flow>,
    /// The caller's address per socket (the last source that was not the target).
    peers: Vec<Option<SocketAddr>>,
    queue: BinaryHeap<Reverse<Pending>>,
    order: u64,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
}

/// The running relay; dropping it stops its threads (datagrams still waiting are discarded).
pub struct Relay {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    ports: Vec<u16>,
    listen: IpAddr,
}

impl Relay {
    /// Binds `listen:p` for each port in `ports` and relays to `target:p` with `to_target`'s
    /// impairment, and back to the caller with `to_peer`'s. `seed` fixes every decision.
    /// Panics when a port cannot be bound.
    pub fn start(
        listen: IpAddr,
        target: IpAddr,
        ports: &[u16],
        to_target: Impairment,
        to_peer: Impairment,
        seed: u64,
    ) -> Relay {
        let mut sockets = Vec::new();
        for &p in ports {
            let s = UdpSocket::bind((listen, p)).unwrap_or_else(|e| panic!("impairment relay: bind {listen}:{p}: {e}"));
            s.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
            sockets.push(Arc::new(s));
        }
        // Flow 2k: socket k towards the target; 2k+1: socket k back to the peer. Each has its own
        // random stream, so one direction's traffic never shifts the other's pattern. The streams
        // depend on the socket's place in `ports`, not on the port number (which changes from run
        // to run), so a run is reproducible.
        let mut flows = Vec::new();
        for k in 0..sockets.len() {
            for (d, cfg) in [(0u64, to_target), (1u64, to_peer)] {
                let mut mix = SplitMix64::new(seed ^ ((2 * k as u64 + d) << 32));
                let flow_seed = mix.next_u64();
                flows.push(Flow {
                    impairer: Impairer::new(cfg, flow_seed),
                    stats: DirStats::default(),
                    next_index: 0,
                    max_sent: None,
                });
            }
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State { flows, peers: vec![None; sockets.len()], queue: BinaryHeap::new(), order: 0 }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for (k, s) in sockets.iter().enumerate() {
            let (s, shared, port) = (s.clone(), shared.clone(), ports[k]);
            let target_addr = SocketAddr::new(target, port);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("impair-rx-{port}"))
                    .spawn(move || receive(k, &s, target_addr, &shared))
                    .expect("spawn relay thread"),
            );
        }
        {
            let (sockets, shared) = (sockets.clone(), shared.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("impair-tx".into())
                    .spawn(move || send_due(&sockets, &shared))
                    .expect("spawn relay thread"),
            );
        }
        Relay { shared, threads, ports: ports.to_vec(), listen }
    }

    pub fn listen(&self) -> IpAddr {
        self.listen
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = RelayStats::default();
        for (i, f) in st.flows.iter().enumerate() {
            let (k, dir) = (i / 2, if i % 2 == 0 { Dir::ToTarget } else { Dir::ToPeer });
            let rtp = self.ports[k] % 2 == 0;
            let d = match (rtp, dir) {
                (true, Dir::ToTarget) => &mut r.to_target,
                (true, Dir::ToPeer) => &mut r.to_peer,
                (false, Dir::ToTarget) => &mut r.rtcp_to_target,
                (false, Dir::ToPeer) => &mut r.rtcp_to_peer,
            };
            d.add(&f.stats);
        }
        r
    }

    /// The caller's address seen on the socket of `port`, if any.
    pub fn peer(&self, port: u16) -> Option<SocketAddr> {
        let k = self.ports.iter().position(|&p| p == port)?;
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).peers[k]
    }

    /// Waits until nothing is queued any more (≤ `timeout`), then stops; returns the final counters.
    pub fn stop(mut self, timeout: Duration) -> RelayStats {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).queue.is_empty()
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.halt();
        self.stats()
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One socket's receive loop: classify, draw, queue.
fn receive(k: usize, socket: &UdpSocket, target: SocketAddr, shared: &Shared) {
    let mut buf = vec![0u8; 65536];
    while !shared.stop.load(Ordering::SeqCst) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            // ICMP errors from an earlier send (a peer that has gone): not ours to handle.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => panic!("impairment relay: recv on {:?}: {e}", socket.local_addr()),
        };
        let now = Instant::now();
        let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let (dir, dest) = if from == target {
            (Dir::ToPeer, st.peers[k])
        } else {
            st.peers[k] = Some(from);
            (Dir::ToTarget, Some(target))
        };
        let fi = 2 * k + usize::from(dir == Dir::ToPeer);
        let flow = &mut st.flows[fi];
        flow.stats.received += 1;
        let Some(dest) = dest else {
            flow.stats.unroutable += 1;
            continue;
        };
        let index = flow.next_index;
        flow.next_index += 1;
        match flow.impairer.next() {
            None => flow.stats.dropped += 1,
            Some(delay) => {
                flow.stats.delay_sum += delay;
                flow.stats.delay_max = flow.stats.delay_max.max(delay);
                let order = st.order;
                st.order += 1;
                st.queue.push(Reverse(Pending {
                    due: now + delay,
                    order,
                    flow: fi,
                    index,
                    socket: k,
                    dest,
                    data: buf[..n].to_vec(),
                }));
                shared.wake.notify_all();
            }
        }
    }
}

/// The scheduler: sends each queued datagram when it is due, in due-time order.
fn send_due(sockets: &[Arc<UdpSocket>], shared: &Shared) {
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let wait = match st.queue.peek() {
            Some(Reverse(p)) if p.due <= now => {
                let Reverse(p) = st.queue.pop().expect("peeked");
                // A send error (nobody listening any more) loses the datagram, like a network would.
                let _ = sockets[p.socket].send_to(&p.data, p.dest);
                let flow = &mut st.flows[p.flow];
                flow.stats.forwarded += 1;
                match flow.max_sent {
                    Some(m) if p.index < m => flow.stats.reordered += 1,
                    _ => flow.max_sent = Some(p.index),
                }
                continue;
            }
            Some(Reverse(p)) => p.due - now,
            None => Duration::from_millis(50),
        };
        st = shared.wake.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0;
    }
}
