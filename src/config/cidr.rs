//! Address blocks for ACLs: `192.0.2.0/24`, `2001:db8::/32`, or a bare address (/32, /128).
//! An IPv4 block also matches the IPv4-mapped IPv6 form of its addresses (`::ffff:192.0.2.7`),
//! which is what a dual-stack socket reports for an IPv4 peer.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => prefix_eq(&net.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(a)) => prefix_eq(&net.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }

    /// The block holding exactly this address.
    pub fn host(ip: IpAddr) -> Cidr {
        Cidr { addr: ip, prefix: if ip.is_ipv4() { 32 } else { 128 } }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = (prefix / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = prefix % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("`{s}` is not an address or address block (e.g. 192.0.2.0/24, 2001:db8::/32)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}`: the prefix length must be 0..={max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Does any block in `list` hold `ip`?
pub fn any_contains(list: &[Cidr], ip: IpAddr) -> bool {
    list.iter().any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_match_their_addresses_only() {
        assert!(c("192.0.2.0/24").contains(ip("192.0.2.255")));
        assert!(!c("192.0.2.0/24").contains(ip("192.0.3.0")));
        assert!(c("10.0.0.0/9").contains(ip("10.127.1.1")));
        assert!(!c("10.0.0.0/9").contains(ip("10.128.0.0")));
        assert!(c("203.0.113.7").contains(ip("203.0.113.7")));
        assert!(!c("203.0.113.7").contains(ip("203.0.113.8")));
        assert!(c("0.0.0.0/0").contains(ip("198.51.100.1")));
        assert!(c("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!c("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(c("::1").contains(ip("::1")));
        // An IPv4 block matches an IPv4 peer seen through a dual-stack socket, never other IPv6.
        assert!(c("127.0.0.0/8").contains(ip("::ffff:127.0.0.5")));
        assert!(!c("127.0.0.0/8").contains(ip("::1")));
        assert!(!c("::1").contains(ip("127.0.0.1")));
    }

    #[test]
    fn bad_blocks_are_refused_with_the_reason() {
        assert!("192.0.2.0/33".parse::<Cidr>().unwrap_err().contains("0..=32"));
        assert!("2001:db8::/129".parse::<Cidr>().unwrap_err().contains("0..=128"));
        assert!("pbx.example.com".parse::<Cidr>().unwrap_err().contains("not an address"));
        assert_eq!(c("[::1]/128").to_string(), "::1/128");
    }
}
