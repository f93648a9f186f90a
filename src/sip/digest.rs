//! HTTP Digest authentication as SIP uses it (RFC 3261 §22, RFC 7616, RFC 8760): the client side
//! answers a 401/407 challenge (`WWW-Authenticate` / `Proxy-Authenticate`) with MD5 or SHA-256,
//! `qop=auth` when offered (RFC 2069 style without), a fresh cnonce and a nonce count per nonce;
//! the server side checks an `Authorization` against the nonce it issued. Pure functions and small
//! values: registration, outbound calls and inbound authentication keep their own state.

use md5::Md5;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    fn hex(self, data: &str) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 => Md5::digest(data.as_bytes()).to_vec(),
            Algorithm::Sha256 => Sha256::digest(data.as_bytes()).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A parsed `Digest` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server offered `qop=auth` (we never use auth-int: SIP bodies are rarely covered).
    pub qop_auth: bool,
    /// The nonce expired but the credentials were right (RFC 7616 §3.3): retry without asking anew.
    pub stale: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("not a Digest challenge")]
    NotDigest,
    #[error("the challenge has no {0}")]
    Missing(&'static str),
    #[error("unsupported algorithm {0} (MD5 and SHA-256 are)")]
    Algorithm(String),
    #[error("the challenge offers only qop {0}, not auth")]
    Qop(String),
}

/// `key=value` and `key="quoted value"` pairs after the scheme, comma separated (quoted commas kept).
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &q[end.min(q.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.push((key, value));
    }
    out
}

impl Challenge {
    /// A `WWW-Authenticate` or `Proxy-Authenticate` value.
    pub fn parse(header: &str) -> Result<Challenge, DigestError> {
        let h = header.trim();
        let (scheme, rest) = h.split_once(char::is_whitespace).ok_or(DigestError::NotDigest)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest);
        }
        let p = params(rest);
        let get = |k: &str| p.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(&a).ok_or(DigestError::Algorithm(a))?,
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(q) if q.split(',').any(|x| x.trim().eq_ignore_ascii_case("auth")) => true,
            Some(q) => return Err(DigestError::Qop(q)),
        };
        Ok(Challenge {
            realm: get("realm").ok_or(DigestError::Missing("realm"))?,
            nonce: get("nonce").ok_or(DigestError::Missing("nonce"))?,
            opaque: get("opaque"),
            algorithm,
            qop_auth,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

/// The account answering a challenge.
#[derive(Debug, Clone)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

fn response(alg: Algorithm, ha1: &str, nonce: &str, qop: Option<(&str, &str)>, method: &str, uri: &str) -> String {
    let ha2 = alg.hex(&format!("{method}:{uri}"));
    match qop {
        Some((nc, cnonce)) => alg.hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")),
        None => alg.hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The `Authorization` / `Proxy-Authorization` value answering `c` for `method uri`; `nc` counts the
/// requests sent with this nonce (1 for the first), `cnonce` is the client's fresh random value.
pub fn authorize(c: &Challenge, cred: &Credentials, method: &str, uri: &str, nc: u32, cnonce: &str) -> String {
    let alg = c.algorithm;
    let ha1 = alg.hex(&format!("{}:{}:{}", cred.username, c.realm, cred.password));
    let nc = format!("{nc:08x}");
    let qop = c.qop_auth.then_some((nc.as_str(), cnonce));
    let resp = response(alg, &ha1, &c.nonce, qop, method, uri);
    let mut v = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
        quote(cred.username),
        quote(&c.realm),
        quote(&c.nonce),
        quote(uri),
        quote(&resp),
        alg.name()
    );
    if c.qop_auth {
        v.push_str(&format!(", qop=auth, nc={nc}, cnonce={}", quote(cnonce)));
    }
    if let Some(o) = &c.opaque {
        v.push_str(&format!(", opaque={}", quote(o)));
    }
    v
}

/// One parameter of an `Authorization` value (`nonce`, `username`, ...), unquoted; None when the
/// value is not Digest or lacks it. The server reads the nonce first, to check it issued it.
pub fn authorization_param(authorization: &str, key: &str) -> Option<String> {
    let (scheme, rest) = authorization.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    params(rest).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The server side: does `authorization` (an `Authorization` value) prove `password` for the
/// nonce we issued, for this method? Returns the username when it does. The caller checks that the
/// username is the one it expects and that the nonce is one it issued and still fresh.
pub fn verify(
    authorization: &str,
    realm: &str,
    nonce: &str,
    password_of: impl Fn(&str) -> Option<String>,
    method: &str,
) -> Option<String> {
    let (scheme, rest) = authorization.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let p = params(rest);
    let get = |k: &str| p.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let alg = match get("algorithm") {
        None => Algorithm::Md5,
        Some(a) => Algorithm::parse(a)?,
    };
    if get("realm")? != realm || get("nonce")? != nonce {
        return None;
    }
    let username = get("username")?;
    let password = password_of(username)?;
    let ha1 = alg.hex(&format!("{username}:{realm}:{password}"));
    let qop = match get("qop") {
        Some(q) if q.eq_ignore_ascii_case("auth") => Some((get("nc")?, get("cnonce")?)),
        Some(_) => return None,
        None => None,
    };
    let expected = response(alg, &ha1, nonce, qop, method, get("uri")?);
    let given = get("response")?.to_ascii_lowercase();
    constant_time_eq(&expected, &given).then(|| username.to_string())
}

/// Equal strings? Compared without an early exit, so timing does not reveal how much of a secret
/// (a digest response, a nonce's MAC, a bearer token) matched.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MUFASA: Credentials = Credentials { username: "Mufasa", password: "Circle of Life" };

    /// RFC 7616 §3.9.1, both algorithms.
    #[test]
    fn rfc_7616_examples() {
        let md5 = r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
        let c = Challenge::parse(md5).unwrap();
        assert_eq!((c.algorithm, c.qop_auth, c.stale), (Algorithm::Md5, true, false));
        assert_eq!(c.opaque.as_deref(), Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"));
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let a = authorize(&c, &MUFASA, "GET", "/dir/index.html", 1, cnonce);
        assert!(a.contains(r#"response="8ca523f5e9506fed4657c9700eebdbec""#), "{a}");
        assert!(a.contains("nc=00000001") && a.contains("qop=auth,") && a.contains("algorithm=MD5"), "{a}");
        let sha = md5.replace("algorithm=MD5", "algorithm=SHA-256");
        let c = Challenge::parse(&sha).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        let a = authorize(&c, &MUFASA, "GET", "/dir/index.html", 1, cnonce);
        assert!(a.contains(r#"response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1""#), "{a}");
        // Our own server side accepts what our client side wrote, and nothing else.
        let pw = |u: &str| (u == "Mufasa").then(|| "Circle of Life".to_string());
        assert_eq!(verify(&a, &c.realm, &c.nonce, pw, "GET").as_deref(), Some("Mufasa"));
        assert_eq!(verify(&a, &c.realm, &c.nonce, pw, "POST"), None, "another method");
        assert_eq!(verify(&a, &c.realm, "another-nonce", pw, "GET"), None, "another nonce");
        assert_eq!(verify(&a, &c.realm, &c.nonce, |_| Some("wrong".into()), "GET"), None, "a wrong password");
    }

    /// RFC 2617 §3.5 (qop=auth), and the RFC 2069 form without qop.
    #[test]
    fn rfc_2617_example_and_no_qop() {
        let h = r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let c = Challenge::parse(h).unwrap();
        let a = authorize(
            &c,
            &Credentials { username: "Mufasa", password: "Circle Of Life" },
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(a.contains(r#"response="6629fae49393a05397450978507c4ef1""#), "{a}");
        // Without qop: H(HA1:nonce:HA2), no nc or cnonce.
        let c = Challenge::parse(r#"Digest realm="sip.example", nonce="abc""#).unwrap();
        assert!(!c.qop_auth);
        let a = authorize(&c, &MUFASA, "REGISTER", "sip:sip.example", 1, "unused");
        assert!(!a.contains("cnonce") && !a.contains("nc="), "{a}");
        let ha1 = Algorithm::Md5.hex("Mufasa:sip.example:Circle of Life");
        let ha2 = Algorithm::Md5.hex("REGISTER:sip:sip.example");
        assert!(a.contains(&Algorithm::Md5.hex(&format!("{ha1}:abc:{ha2}"))), "{a}");
        assert!(verify(&a, "sip.example", "abc", |_| Some("Circle of Life".into()), "REGISTER").is_some());
    }

    #[test]
    fn challenges_that_cannot_be_answered_are_errors() {
        assert_eq!(Challenge::parse("Basic realm=\"x\""), Err(DigestError::NotDigest));
        assert_eq!(Challenge::parse("Digest nonce=\"n\""), Err(DigestError::Missing("realm")));
        assert_eq!(Challenge::parse("Digest realm=\"r\""), Err(DigestError::Missing("nonce")));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256"),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\""),
            Err(DigestError::Qop(_))
        ));
        // stale=true, unquoted values, a quoted comma and an escaped quote.
        let c = Challenge::parse("digest realm=\"a, \\\"b\\\"\", nonce=xyz, stale=TRUE, algorithm=sha-256").unwrap();
        assert_eq!(
            (c.realm.as_str(), c.nonce.as_str(), c.stale, c.algorithm),
            ("a, \"b\"", "xyz", true, Algorithm::Sha256)
        );
        for junk in ["", "Digest", "Digest =", "Digest realm=\"unterminated", "Digest ,,,", "Digest realm"] {
            let _ = Challenge::parse(junk);
            let _ = verify(junk, "r", "n", |_| Some("p".into()), "INVITE");
        }
    }
}
