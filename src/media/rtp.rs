//! RTP fixed header (RFC 3550 §5.1): parsing and writing.
//!
//! Hand-written rather than pulled from a crate because we need exactly the
//! fixed header, must never panic on hostile input, and want the payload as a
//! borrowed slice (no copy on the receive path).

/// The RTP version we speak; anything else on the media port is noise.
const VERSION: u8 = 2;
/// Fixed header length in octets (no CSRC list, no extension).
pub const HEADER_LEN: usize = 12;

/// The fields of the fixed header that the media path uses. CSRCs and header
/// extensions are skipped on parse: a two-party voice call has no mixer to
/// attribute, and we do not negotiate any extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    /// 7-bit payload type; `write` masks off anything above bit 6.
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Why a datagram is not a usable RTP packet. Every variant is an ordinary
/// outcome of network input (the driver counts and drops), never a bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("datagram shorter than the 12-byte RTP header")]
    TooShort,
    #[error("unsupported RTP version {0}")]
    BadVersion(u8),
    #[error("padding count is zero or larger than the payload")]
    BadPadding,
    #[error("header extension runs past the end of the datagram")]
    BadExtension,
    #[error("CSRC list runs past the end of the datagram")]
    BadCsrc,
}

/// Parse version 2 RTP; skips CSRC list and header extension; strips padding.
/// Returns header and payload slice.
pub fn parse(buf: &[u8]) -> Result<(RtpHeader, &[u8]), RtpError> {
    if buf.len() < HEADER_LEN {
        return Err(RtpError::TooShort);
    }
    let b0 = buf[0];
    let version = b0 >> 6;
    if version != VERSION {
        return Err(RtpError::BadVersion(version));
    }
    let has_padding = b0 & 0x20 != 0;
    let has_extension = b0 & 0x10 != 0;
    let csrc_count = usize::from(b0 & 0x0F);

    let header = RtpHeader {
        marker: buf[1] & 0x80 != 0,
        payload_type: buf[1] & 0x7F,
        sequence: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    };

    // Offsets are at most 12 + 60 + 4 + 4 * 65535, far below usize::MAX, so
    // plain additions cannot overflow; every slice is bounds-checked first.
    let mut offset = HEADER_LEN + 4 * csrc_count;
    if buf.len() < offset {
        return Err(RtpError::BadCsrc);
    }
    if has_extension {
        // 16-bit profile-defined id, 16-bit length in 32-bit words (§5.3.1).
        if buf.len() < offset + 4 {
            return Err(RtpError::BadExtension);
        }
        let words = usize::from(u16::from_be_bytes([buf[offset + 2], buf[offset + 3]]));
        offset += 4 + 4 * words;
        if buf.len() < offset {
            return Err(RtpError::BadExtension);
        }
    }
    let mut payload = &buf[offset..];
    if has_padding {
        // The last octet counts the padding octets, itself included, so zero
        // is malformed and the count may not eat into the header.
        let pad = match payload.last() {
            Some(&n) => usize::from(n),
            None => return Err(RtpError::BadPadding),
        };
        if pad == 0 || pad > payload.len() {
            return Err(RtpError::BadPadding);
        }
        payload = &payload[..payload.len() - pad];
    }
    Ok((header, payload))
}

/// Append a 12-byte header (no CSRC/extension/padding) and the payload to `out`.
pub fn write(h: &RtpHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(HEADER_LEN + payload.len());
    out.push(VERSION << 6);
    out.push((u8::from(h.marker) << 7) | (h.payload_type & 0x7F));
    out.extend_from_slice(&h.sequence.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

/// true when the second byte says RTCP — used to ignore RTCP arriving on the
/// RTP port (peers that multiplex per RFC 5761, or send RTCP to the wrong port).
///
/// RFC 5761 §4: the RTCP packet type sits where RTP has marker + payload type,
/// so the test is on the *whole* second octet. RTCP types 192..=223 (SR 200,
/// RR 201, SDES, BYE, APP, RTPFB, PSFB, XR 207, plus the historic 192..=199)
/// are exactly RTP payload types 64..=95 with the marker bit set, which is why
/// that payload-type range must not be used. Dynamic types 96..=127 and the
/// static audio types never collide.
pub fn looks_like_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&buf[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr() -> RtpHeader {
        RtpHeader { marker: true, payload_type: 8, sequence: 0xBEEF, timestamp: 0xDEAD_BEEF, ssrc: 0x0102_0304 }
    }

    #[test]
    fn write_then_parse_round_trips() {
        let mut out = Vec::new();
        write(&hdr(), &[1, 2, 3], &mut out);
        assert_eq!(out.len(), 15);
        assert_eq!(&out[..2], &[0x80, 0x88]);
        let (h, p) = parse(&out).unwrap();
        assert_eq!(h, hdr());
        assert_eq!(p, &[1, 2, 3]);
    }

    #[test]
    fn write_appends_and_masks_payload_type() {
        let mut out = vec![0xAA];
        let h = RtpHeader { marker: false, payload_type: 0xFF, ..hdr() };
        write(&h, &[], &mut out);
        assert_eq!(out[0], 0xAA);
        assert_eq!(out[2], 0x7F);
        assert_eq!(parse(&out[1..]).unwrap().0.payload_type, 127);
    }

    #[test]
    fn rejects_short_and_wrong_version() {
        assert_eq!(parse(&[]), Err(RtpError::TooShort));
        assert_eq!(parse(&[0x80; 11]), Err(RtpError::TooShort));
        let mut b = [0u8; 12];
        b[0] = 0x40;
        assert_eq!(parse(&b), Err(RtpError::BadVersion(1)));
        b[0] = 0xC0;
        assert_eq!(parse(&b), Err(RtpError::BadVersion(3)));
    }

    #[test]
    fn empty_payload_is_fine() {
        let mut out = Vec::new();
        write(&hdr(), &[], &mut out);
        assert_eq!(parse(&out).unwrap().1, &[] as &[u8]);
    }

    #[test]
    fn skips_csrc_list() {
        let mut b = vec![0x82, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend_from_slice(&[9; 8]); // two CSRCs
        b.extend_from_slice(&[7, 7]);
        let (h, p) = parse(&b).unwrap();
        assert_eq!((h.sequence, h.timestamp, h.ssrc), (1, 2, 3));
        assert_eq!(p, &[7, 7]);
        // CSRC count promising more than is there.
        let b = [0x8F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(parse(&b), Err(RtpError::BadCsrc));
    }

    #[test]
    fn skips_header_extension() {
        let mut b = vec![0x90, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend_from_slice(&[0xBE, 0xDE, 0, 2]); // 2 words follow
        b.extend_from_slice(&[0xEE; 8]);
        b.extend_from_slice(&[5]);
        assert_eq!(parse(&b).unwrap().1, &[5]);
        // Extension header itself truncated.
        assert_eq!(parse(&b[..14]), Err(RtpError::BadExtension));
        // Extension length past the end.
        assert_eq!(parse(&b[..19]), Err(RtpError::BadExtension));
        // Extension exactly filling the datagram: empty payload.
        assert_eq!(parse(&b[..24]).unwrap().1, &[] as &[u8]);
    }

    #[test]
    fn strips_padding() {
        let mut b = vec![0xA0, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend_from_slice(&[1, 2, 0, 0, 3]); // 3 padding octets
        assert_eq!(parse(&b).unwrap().1, &[1, 2]);
        // Padding that consumes the whole payload is legal.
        let mut all = b.clone();
        *all.last_mut().unwrap() = 5;
        assert_eq!(parse(&all).unwrap().1, &[] as &[u8]);
        // Zero count, count beyond payload, and padding flag with no payload.
        *all.last_mut().unwrap() = 0;
        assert_eq!(parse(&all), Err(RtpError::BadPadding));
        *all.last_mut().unwrap() = 6;
        assert_eq!(parse(&all), Err(RtpError::BadPadding));
        assert_eq!(parse(&b[..12]), Err(RtpError::BadPadding));
    }

    #[test]
    fn padding_with_csrc_and_extension() {
        let mut b = vec![0xB1, 0x80 | 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend_from_slice(&[0, 0, 0, 9]); // CSRC
        b.extend_from_slice(&[0x10, 0x00, 0, 1, 1, 2, 3, 4]); // extension, 1 word
        b.extend_from_slice(&[0xAB, 0, 2]);
        let (h, p) = parse(&b).unwrap();
        assert!(h.marker);
        assert_eq!(h.payload_type, 96);
        assert_eq!(p, &[0xAB]);
    }

    #[test]
    fn rtcp_detection() {
        for pt in 192..=223u8 {
            assert!(looks_like_rtcp(&[0x80, pt, 0, 1]), "{pt}");
        }
        assert!(looks_like_rtcp(&[0x81, 200])); // SR
        assert!(looks_like_rtcp(&[0x81, 207])); // XR
                                                // Audio RTP with and without marker: PCMU, PCMA, dynamic 96..127.
        for b1 in [0u8, 8, 0x80, 0x88, 96, 101, 127, 0x80 | 96, 0x80 | 101, 0xFF] {
            assert!(!looks_like_rtcp(&[0x80, b1]), "{b1}");
        }
        assert!(!looks_like_rtcp(&[]));
        assert!(!looks_like_rtcp(&[0x80]));
    }
}
