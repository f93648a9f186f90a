//! SIP transports: a UDP socket and a TCP listener feeding one inbound queue,
//! and the sending side for what the endpoint wants transmitted.

use crate::sip::endpoint::{ConnId, Source, Target, Transmit, Transport};
use crate::sip::message::{frame_stream, Frame};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Bound on queued inbound SIP messages: a flood is dropped at the door
/// instead of growing memory.
pub const INBOUND_QUEUE: usize = 4096;
const MAX_TCP_BUFFER: usize = 128 * 1024;

pub struct Inbound {
    pub data: Vec<u8>,
    pub source: Source,
}

/// Open TCP connections, by id, each with the queue of bytes to write to it.
/// Open TCP connections, by id, each with the queue of bytes to write to it, and by peer
/// address, so requests to a peer reuse the connection it already has with us (a registrar
/// sends calls back over the connection we registered on, RFC 5626's spirit without its flows).
#[derive(Clone, Default)]
pub struct Connections {
    inner: Arc<Mutex<HashMap<ConnId, mpsc::Sender<Vec<u8>>>>>,
    by_peer: Arc<Mutex<HashMap<SocketAddr, ConnId>>>,
    next: Arc<AtomicU64>,
}

impl Connections {
    fn register(&self, tx: mpsc::Sender<Vec<u8>>, peer: SocketAddr) -> ConnId {
        let id = ConnId(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        self.lock().insert(id, tx);
        self.by_peer.lock().unwrap_or_else(|p| p.into_inner()).insert(peer, id);
        id
    }
    fn remove(&self, id: ConnId, peer: SocketAddr) {
        self.lock().remove(&id);
        let mut by_peer = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
        if by_peer.get(&peer) == Some(&id) {
            by_peer.remove(&peer);
        }
    }
    fn get(&self, id: ConnId) -> Option<mpsc::Sender<Vec<u8>>> {
        self.lock().get(&id).cloned()
    }
    fn to_peer(&self, peer: SocketAddr) -> Option<mpsc::Sender<Vec<u8>>> {
        let id = *self.by_peer.lock().unwrap_or_else(|p| p.into_inner()).get(&peer)?;
        self.get(id)
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, mpsc::Sender<Vec<u8>>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Which of our addresses a peer reaches us on, when we listen on 0.0.0.0:
/// asked of the kernel's routing table with a connected UDP socket (no packet is sent).
pub struct LocalAddrCache {
    listen: SocketAddr,
    cache: HashMap<IpAddr, IpAddr>,
}

impl LocalAddrCache {
    pub fn new(listen: SocketAddr) -> Self {
        LocalAddrCache { listen, cache: HashMap::new() }
    }
    pub fn local_for(&mut self, peer: SocketAddr) -> SocketAddr {
        if !self.listen.ip().is_unspecified() {
            return self.listen;
        }
        if self.cache.len() > 4096 {
            self.cache.clear();
        }
        let ip = *self.cache.entry(peer.ip()).or_insert_with(|| {
            let bind: SocketAddr =
                if peer.is_ipv4() { "0.0.0.0:0".parse().expect("literal") } else { "[::]:0".parse().expect("literal") };
            std::net::UdpSocket::bind(bind)
                .and_then(|s| s.connect(peer).and_then(|_| s.local_addr()))
                .map(|a| a.ip())
                .unwrap_or(if peer.is_ipv4() {
                    IpAddr::from([127, 0, 0, 1])
                } else {
                    IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
                })
        });
        SocketAddr::new(ip, self.listen.port())
    }
}

pub fn spawn_udp_reader(
    sock: Arc<UdpSocket>,
    listen: SocketAddr,
    tx: mpsc::Sender<Inbound>,
    dropped: prometheus::IntCounter,
) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut locals = LocalAddrCache::new(listen);
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    if n == 0 || buf[..n].iter().all(|b| b.is_ascii_whitespace()) {
                        continue; // keep-alive CRLFs
                    }
                    let source =
                        Source { transport: Transport::Udp, addr: from, conn: None, local: locals.local_for(from) };
                    if tx.try_send(Inbound { data: buf[..n].to_vec(), source }).is_err() {
                        dropped.inc();
                        debug!(peer = %from, "SIP inbound queue full: datagram dropped");
                    }
                }
                Err(e) => debug!(error = %e, "UDP receive error"),
            }
        }
    });
}

pub fn spawn_tcp_acceptor(listener: TcpListener, conns: Connections, tx: mpsc::Sender<Inbound>) {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    spawn_connection(stream, conns.clone(), tx.clone());
                }
                Err(e) => {
                    warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
}

/// Read framed SIP messages from a stream and write what is queued for it.
fn spawn_connection(stream: TcpStream, conns: Connections, tx: mpsc::Sender<Inbound>) -> Option<ConnId> {
    let peer = stream.peer_addr().ok()?;
    let local = stream.local_addr().ok()?;
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(256);
    let id = conns.register(wtx, peer);
    tokio::spawn(async move {
        while let Some(data) = wrx.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::with_capacity(8192);
        let mut chunk = vec![0u8; 16384];
        'conn: loop {
            let n = match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            loop {
                match frame_stream(&buf) {
                    Frame::Complete(len) => {
                        let data: Vec<u8> = buf.drain(..len).collect();
                        let source = Source { transport: Transport::Tcp, addr: peer, conn: Some(id), local };
                        if tx.send(Inbound { data, source }).await.is_err() {
                            break 'conn;
                        }
                    }
                    Frame::KeepAlive(len) => {
                        buf.drain(..len);
                    }
                    Frame::Incomplete => break,
                    Frame::Invalid(why) => {
                        // A stream we cannot frame cannot be resynchronised: close it.
                        debug!(%peer, %why, "unframeable SIP over TCP: closing connection");
                        break 'conn;
                    }
                }
            }
            if buf.len() > MAX_TCP_BUFFER {
                debug!(%peer, "TCP message too large: closing connection");
                break;
            }
        }
        conns.remove(id, peer);
    });
    Some(id)
}

/// Send what the endpoint produced. UDP goes out at once; TCP to the named
/// connection if open, else over a new connection; names are resolved off the loop.
pub fn send(t: Transmit, udp: &Arc<UdpSocket>, conns: &Connections, inbound: &mpsc::Sender<Inbound>) {
    match (t.transport, &t.target) {
        (Transport::Udp, Target::Addr(a)) => {
            if let Err(e) = udp.try_send_to(&t.data, *a) {
                debug!(error = %e, dst = %a, "UDP send failed");
            }
        }
        (Transport::Tcp, _) => {
            let open = t.conn.and_then(|c| conns.get(c)).or_else(|| match t.target {
                Target::Addr(a) => conns.to_peer(a),
                Target::Host(..) => None,
            });
            if let Some(tx) = open {
                if tx.try_send(t.data.clone()).is_ok() {
                    return;
                }
            }
            let (conns, inbound, udp) = (conns.clone(), inbound.clone(), udp.clone());
            tokio::spawn(async move {
                let Some(addr) = resolve(&t.target).await else { return };
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        if let Some(id) = spawn_connection(s, conns.clone(), inbound) {
                            if let Some(tx) = conns.get(id) {
                                let _ = tx.send(t.data).await;
                            }
                        }
                    }
                    Err(e) => debug!(error = %e, %addr, "TCP connect failed"),
                }
                drop(udp);
            });
        }
        (Transport::Udp, Target::Host(..)) => {
            let udp = udp.clone();
            tokio::spawn(async move {
                if let Some(addr) = resolve(&t.target).await {
                    let _ = udp.send_to(&t.data, addr).await;
                }
            });
        }
    }
}

async fn resolve(t: &Target) -> Option<SocketAddr> {
    match t {
        Target::Addr(a) => Some(*a),
        Target::Host(h, p) => match tokio::net::lookup_host((h.as_str(), *p)).await {
            Ok(mut it) => it.next(),
            Err(e) => {
                debug!(host = %h, error = %e, "cannot resolve SIP target");
                None
            }
        },
    }
}
