//! A tiny classic-pcap reader (UDP over IPv4/IPv6) and writer (for SIPp `play_pcap_audio` files).
//!
//! Reader: both byte orders, microsecond (`a1b2c3d4`) and nanosecond (`a1b23c4d`) magic, link types
//! 0 (BSD loopback), 1 (Ethernet, what tcpdump gives on Linux `lo`), 101/228/229 (raw IP),
//! 113 (Linux cooked SLL) and 276 (SLL2). Non-UDP packets and IP fragments after the first are
//! ignored. pcapng is not supported (tcpdump `-w` writes classic pcap).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// One UDP datagram from a capture.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpPacket {
    /// Capture time in seconds (Unix epoch, from the pcap record header).
    pub time: f64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// Reads all UDP packets from a classic pcap file.
pub fn read_pcap_file(path: &Path) -> Result<Vec<UdpPacket>, String> {
    let data = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    parse_pcap(&data).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a classic pcap image. A truncated last record (capture killed mid-write) is ignored.
pub fn parse_pcap(data: &[u8]) -> Result<Vec<UdpPacket>, String> {
    if data.len() < 24 {
        return Err(format!("pcap too short ({} bytes)", data.len()));
    }
    let magic_le = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let (big_endian, nanos) = match magic_le {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        0x0a0d_0d0a => return Err("pcapng is not supported; write classic pcap".into()),
        other => return Err(format!("not a pcap file (magic {other:08x})")),
    };
    let rd32 = |b: &[u8]| -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    let linktype = rd32(&data[20..24]) & 0x0FFF_FFFF;
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let sec = rd32(&data[off..]) as f64;
        let frac = rd32(&data[off + 4..]) as f64;
        let incl = rd32(&data[off + 8..]) as usize;
        off += 16;
        if off + incl > data.len() {
            break; // truncated last record
        }
        let frame = &data[off..off + incl];
        off += incl;
        let time = sec + if nanos { frac * 1e-9 } else { frac * 1e-6 };
        if let Some((src, dst, payload)) = decode_frame(linktype, frame) {
            out.push(UdpPacket { time, src, dst, payload: payload.to_vec() });
        }
    }
    Ok(out)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Link layer → (src, dst, UDP payload).
fn decode_frame(linktype: u32, frame: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    match linktype {
        // BSD loopback: 4-byte address family in host byte order.
        0 => {
            let fam = u32::from_le_bytes(frame.get(0..4)?.try_into().ok()?);
            let fam = if fam > 0xFFFF { fam.swap_bytes() } else { fam };
            match fam {
                2 => decode_ipv4(frame.get(4..)?),
                24 | 28 | 30 => decode_ipv6(frame.get(4..)?),
                _ => None,
            }
        }
        // Ethernet (with optional 802.1Q tags).
        1 => {
            let mut ethertype = be16(frame, 12)?;
            let mut at = 14;
            while ethertype == 0x8100 || ethertype == 0x88a8 {
                ethertype = be16(frame, at + 2)?;
                at += 4;
            }
            decode_ethertype(ethertype, frame.get(at..)?)
        }
        // Raw IP.
        101 | 12 => match frame.first()? >> 4 {
            4 => decode_ipv4(frame),
            6 => decode_ipv6(frame),
            _ => None,
        },
        228 => decode_ipv4(frame),
        229 => decode_ipv6(frame),
        // Linux cooked capture v1: protocol at 14, header 16 bytes.
        113 => decode_ethertype(be16(frame, 14)?, frame.get(16..)?),
        // Linux cooked capture v2: protocol at 0, header 20 bytes.
        276 => decode_ethertype(be16(frame, 0)?, frame.get(20..)?),
        _ => None,
    }
}

fn decode_ethertype(ethertype: u16, ip: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    match ethertype {
        0x0800 => decode_ipv4(ip),
        0x86DD => decode_ipv6(ip),
        _ => None,
    }
}

fn decode_ipv4(ip: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = (ip[0] & 0x0F) as usize * 4;
    let total = (be16(ip, 2)? as usize).min(ip.len());
    let frag_offset = be16(ip, 6)? & 0x1FFF;
    if ip[9] != 17 || frag_offset != 0 || ihl < 20 || total < ihl {
        return None;
    }
    let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
    decode_udp(src, dst, &ip[ihl..total])
}

fn decode_ipv6(ip: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return None;
    }
    let payload_len = be16(ip, 4)? as usize;
    let mut next = ip[6];
    let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?));
    let dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?));
    let end = (40 + payload_len).min(ip.len());
    let mut at = 40;
    // Skip hop-by-hop (0), routing (43), destination options (60) extension headers.
    while matches!(next, 0 | 43 | 60) {
        next = *ip.get(at)?;
        at += (*ip.get(at + 1)? as usize + 1) * 8;
    }
    if next != 17 || at > end {
        return None;
    }
    decode_udp(src, dst, &ip[at..end])
}

fn decode_udp(src: IpAddr, dst: IpAddr, udp: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    if udp.len() < 8 {
        return None;
    }
    let sport = be16(udp, 0)?;
    let dport = be16(udp, 2)?;
    let len = (be16(udp, 4)? as usize).clamp(8, udp.len());
    Some((SocketAddr::new(src, sport), SocketAddr::new(dst, dport), &udp[8..len]))
}

/// Writes classic pcap files (microsecond, Ethernet) of IPv4/UDP datagrams, like the packets SIPp's
/// `play_pcap_audio` replays (SIPp rewrites addresses and ports; it keeps the RTP headers and timing).
pub struct PcapWriter {
    out: std::io::BufWriter<std::fs::File>,
}

impl PcapWriter {
    pub fn create(path: &Path) -> std::io::Result<PcapWriter> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?; // thiszone
        out.write_all(&0u32.to_le_bytes())?; // sigfigs
        out.write_all(&65535u32.to_le_bytes())?; // snaplen
        out.write_all(&1u32.to_le_bytes())?; // LINKTYPE_ETHERNET
        Ok(PcapWriter { out })
    }

    /// Appends one IPv4 UDP datagram captured at `t_us` microseconds.
    pub fn udp(&mut self, t_us: u64, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> std::io::Result<()> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
            return Err(std::io::Error::other("PcapWriter writes IPv4 only"));
        };
        let udp_len = 8 + payload.len();
        let mut frame = Vec::with_capacity(14 + 20 + udp_len);
        frame.extend_from_slice(&[0u8; 12]);
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut iph = [0u8; 20];
        iph[0] = 0x45;
        iph[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        iph[8] = 64;
        iph[9] = 17;
        iph[12..16].copy_from_slice(&s.octets());
        iph[16..20].copy_from_slice(&d.octets());
        let mut sum: u32 = iph.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
        sum = (sum >> 16) + (sum & 0xFFFF);
        sum += sum >> 16;
        let csum = !(sum as u16);
        iph[10..12].copy_from_slice(&csum.to_be_bytes());
        frame.extend_from_slice(&iph);
        frame.extend_from_slice(&src.port().to_be_bytes());
        frame.extend_from_slice(&dst.port().to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes()); // no UDP checksum
        frame.extend_from_slice(payload);
        self.out.write_all(&((t_us / 1_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&((t_us % 1_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out.write_all(&frame)
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
