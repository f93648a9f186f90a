//! Test fixtures, generated once per target directory (espeak-ng + sox + a Rust port of the peers'
//! wav2rtppcap.py) into `target/test-fixtures/v<N>/` and reused afterwards. Generation happens in a
//! private temporary directory that is renamed into place, so parallel test binaries never see a
//! half-written set.

use super::audio::read_wav_mono_i16;
use super::pcap::PcapWriter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Bump when the generated content changes.
const VERSION: u32 = 1;

pub const SPEECH_TEXT: &str = "Hello, this is a test call. Can you hear me?";
pub const OTHER_SPEECH_TEXT: &str = "The weather in the mountains turned cold, so we lit a fire and made soup.";
pub const GREETING_TEXT: &str = "Thank you for calling switchboard. This line echoes what you say.";

/// RTP header values of the generated pcaps (fixed so the fixtures are reproducible).
pub const PCAP_SSRC: u32 = 0x1CEB_00DA;
pub const PCAP_SEQ0: u16 = 4242;
pub const PCAP_TS0: u32 = 1_000_000;
pub const DTMF_SSRC: u32 = 0x0D7F_0001;
pub const DTMF_DIGITS: &str = "1234";

/// Paths of the generated fixtures.
#[derive(Debug, Clone)]
pub struct Fixtures {
    pub dir: PathBuf,
    /// 8 kHz mono s16 WAV: [`SPEECH_TEXT`] (~3.5 s).
    pub speech_8k: PathBuf,
    /// 8 kHz mono s16 WAV: [`OTHER_SPEECH_TEXT`] (a different sentence, for negative checks).
    pub other_speech_8k: PathBuf,
    /// `speech_8k` with 0.5 s lead and 8 s tail silence (baresip's aufile hangs up at EOF).
    pub speech_8k_padded: PathBuf,
    /// `other_speech_8k` padded the same way.
    pub other_speech_8k_padded: PathBuf,
    /// 8 kHz mono s16 WAV: [`GREETING_TEXT`].
    pub greeting_8k: PathBuf,
    /// `greeting_8k` padded (0.5 s lead, 8 s tail).
    pub greeting_8k_padded: PathBuf,
    /// 48 kHz *stereo* s16 WAV of the speech, padded (baresip with opus/48000/2).
    pub speech_48k_stereo_padded: PathBuf,
    /// SIPp `play_pcap_audio` file: the speech as PCMU (PT 0), 20 ms packets.
    pub speech_pcmu_pcap: PathBuf,
    /// The speech as PCMA (PT 8), 20 ms packets.
    pub speech_pcma_pcap: PathBuf,
    /// RFC 4733 telephone-event (PT 101) digits [`DTMF_DIGITS`]: 100 ms each, 100 ms gaps,
    /// end packet sent 3 times.
    pub dtmf_pcap: PathBuf,
}

impl Fixtures {
    /// The speech sentence as 8 kHz PCM.
    pub fn speech_pcm(&self) -> Vec<i16> {
        read_wav_mono_i16(&self.speech_8k).0
    }
    /// The other sentence as 8 kHz PCM.
    pub fn other_speech_pcm(&self) -> Vec<i16> {
        read_wav_mono_i16(&self.other_speech_8k).0
    }
    /// The greeting as 8 kHz PCM.
    pub fn greeting_pcm(&self) -> Vec<i16> {
        read_wav_mono_i16(&self.greeting_8k).0
    }

    /// Links (copies) the SIPp pcaps into `<dir>/pcap/` under the names scenarios use:
    /// `pcap/speech_pcmu.pcap`, `pcap/speech_pcma.pcap`, `pcap/dtmf_1234.pcap`.
    pub fn install_pcaps(&self, dir: &Path) {
        let pcap_dir = dir.join("pcap");
        std::fs::create_dir_all(&pcap_dir).unwrap_or_else(|e| panic!("create {}: {e}", pcap_dir.display()));
        for (src, name) in [
            (&self.speech_pcmu_pcap, "speech_pcmu.pcap"),
            (&self.speech_pcma_pcap, "speech_pcma.pcap"),
            (&self.dtmf_pcap, "dtmf_1234.pcap"),
        ] {
            let dst = pcap_dir.join(name);
            if !dst.exists() {
                std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", src.display(), dst.display()));
            }
        }
    }
}

/// The fixtures, generated on first use (per process: once; per target dir: reused when present).
pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        super::require_tools(&["espeak-ng", "sox"]);
        let root = super::target_dir().join("test-fixtures");
        let dir = root.join(format!("v{VERSION}"));
        if !dir.join(".complete").exists() {
            std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
            let tmp = root.join(format!(
                "tmp-{}-{}",
                std::process::id(),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
            ));
            std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
            generate(&tmp);
            std::fs::write(tmp.join(".complete"), "ok\n").expect("write .complete");
            if std::fs::rename(&tmp, &dir).is_err() {
                // Another process won the race (or an incomplete old dir is in the way).
                let _ = std::fs::remove_dir_all(&tmp);
                if !dir.join(".complete").exists() {
                    let _ = std::fs::remove_dir_all(&dir);
                    let tmp2 = root.join(format!("tmp-{}-retry", std::process::id()));
                    let _ = std::fs::remove_dir_all(&tmp2);
                    std::fs::create_dir_all(&tmp2).expect("create fixture dir");
                    generate(&tmp2);
                    std::fs::write(tmp2.join(".complete"), "ok\n").expect("write .complete");
                    if std::fs::rename(&tmp2, &dir).is_err() {
                        let _ = std::fs::remove_dir_all(&tmp2);
                    }
                }
            }
            assert!(dir.join(".complete").exists(), "fixtures in {} were not generated", dir.display());
        }
        paths(&dir)
    })
}

fn paths(dir: &Path) -> Fixtures {
    Fixtures {
        dir: dir.to_path_buf(),
        speech_8k: dir.join("speech_8k.wav"),
        other_speech_8k: dir.join("other_speech_8k.wav"),
        speech_8k_padded: dir.join("speech_8k_padded.wav"),
        other_speech_8k_padded: dir.join("other_speech_8k_padded.wav"),
        greeting_8k: dir.join("greeting_8k.wav"),
        greeting_8k_padded: dir.join("greeting_8k_padded.wav"),
        speech_48k_stereo_padded: dir.join("speech_48k_stereo_padded.wav"),
        speech_pcmu_pcap: dir.join("speech_pcmu.pcap"),
        speech_pcma_pcap: dir.join("speech_pcma.pcap"),
        dtmf_pcap: dir.join("dtmf_1234.pcap"),
    }
}

fn run(cmd: &mut Command) {
    super::run_checked(cmd);
}

fn sox(args: &[&str], dir: &Path) {
    run(Command::new(super::tool("sox")).current_dir(dir).arg("-D").args(args));
}

fn generate(dir: &Path) {
    let espeak = super::tool("espeak-ng");
    for (name, text) in [("speech", SPEECH_TEXT), ("other_speech", OTHER_SPEECH_TEXT), ("greeting", GREETING_TEXT)] {
        let src = format!("{name}_22k.wav");
        run(Command::new(&espeak).current_dir(dir).args(["-v", "en-us", "-s", "160", "-w", &src, text]));
        let wav8 = format!("{name}_8k.wav");
        sox(&[&src, "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", &wav8], dir);
        sox(&[&wav8, &format!("{name}_8k_padded.wav"), "pad", "0.5", "8"], dir);
    }
    sox(
        &[
            "speech_22k.wav",
            "-r",
            "48000",
            "-c",
            "2",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "speech_48k_stereo_padded.wav",
            "pad",
            "0.5",
            "8",
        ],
        dir,
    );
    let f = paths(dir);
    write_rtp_audio_pcap(&f.speech_8k, &f.speech_pcmu_pcap, 0, 20, PCAP_SEQ0, PCAP_TS0, PCAP_SSRC);
    write_rtp_audio_pcap(&f.speech_8k, &f.speech_pcma_pcap, 8, 20, PCAP_SEQ0, PCAP_TS0, PCAP_SSRC);
    write_dtmf_pcap(DTMF_DIGITS, &f.dtmf_pcap, 101, 100, 100, 10_000, 2_000_000, DTMF_SSRC);
}

/// G.711 μ-law encoder (Sun g711.c / CPython audioop algorithm; the harness's own, not the appliance's).
pub fn lin2ulaw(sample: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    let mut s = (sample as i32) >> 2;
    let mask: i32 = if s < 0 {
        s = -s;
        0x7F
    } else {
        0xFF
    };
    s = s.min(8159) + 33;
    let mut seg = 0;
    while seg < 8 && s > SEG_END[seg] {
        seg += 1;
    }
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    ((((seg as i32) << 4) | ((s >> (seg + 1)) & 0xF)) ^ mask) as u8
}

/// G.711 A-law encoder.
pub fn lin2alaw(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s >= 0 { 0x80 } else { 0 };
    if s < 0 {
        s = -s - 1;
    }
    let s = s.min(32767) >> 3;
    let (exp, mant) = if s < 32 {
        (0, (s >> 1) & 0x0F)
    } else {
        let mut exp = 1;
        while (s >> (exp + 5)) != 0 && exp < 7 {
            exp += 1;
        }
        (exp, (s >> exp) & 0x0F)
    };
    ((sign | (exp << 4) | mant) ^ 0x55) as u8
}

/// Builds an RTP packet.
pub fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8], marker: bool) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(if marker { 0x80 } else { 0 } | (pt & 0x7F));
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn placeholder_addrs() -> (SocketAddr, SocketAddr) {
    ("127.0.0.1:40000".parse().unwrap(), "127.0.0.1:6000".parse().unwrap())
}

/// Writes an 8 kHz mono s16 WAV as a SIPp-playable RTP pcap (`pt` 0 = PCMU, 8 = PCMA), one packet
/// per `ptime_ms` (the last one padded with silence). Returns the number of packets.
pub fn write_rtp_audio_pcap(wav: &Path, out: &Path, pt: u8, ptime_ms: u32, seq0: u16, ts0: u32, ssrc: u32) -> usize {
    let (pcm, rate) = read_wav_mono_i16(wav);
    assert_eq!(rate, 8000, "{}: need 8 kHz mono 16-bit WAV", wav.display());
    let (encode, silence): (fn(i16) -> u8, u8) = match pt {
        0 => (lin2ulaw, 0xFF),
        8 => (lin2alaw, 0xD5),
        _ => panic!("write_rtp_audio_pcap: PT {pt} is not G.711"),
    };
    let data: Vec<u8> = pcm.iter().map(|&s| encode(s)).collect();
    let n = (8 * ptime_ms) as usize;
    let (src, dst) = placeholder_addrs();
    let mut w = PcapWriter::create(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let mut count = 0usize;
    for chunk in data.chunks(n) {
        let mut payload = chunk.to_vec();
        payload.resize(n, silence);
        let pkt = rtp_packet(
            pt,
            seq0.wrapping_add(count as u16),
            ts0.wrapping_add((count * n) as u32),
            ssrc,
            &payload,
            count == 0,
        );
        w.udp(count as u64 * ptime_ms as u64 * 1000, src, dst, &pkt).expect("write pcap");
        count += 1;
    }
    w.finish().expect("flush pcap");
    count
}

/// RFC 4733 telephone-event code of a DTMF digit.
pub fn dtmf_event(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(12 + (d as u8 - b'A')),
        _ => None,
    }
}

/// Writes RFC 4733 DTMF events as a SIPp-playable pcap: per digit, one packet per 20 ms for `dur_ms`
/// (volume 10), the end packet 3 times, then `gap_ms` of nothing. Returns the number of packets.
#[allow(clippy::too_many_arguments)]
pub fn write_dtmf_pcap(
    digits: &str,
    out: &Path,
    pt: u8,
    dur_ms: u32,
    gap_ms: u32,
    seq0: u16,
    ts0: u32,
    ssrc: u32,
) -> usize {
    let (src, dst) = placeholder_addrs();
    let mut w = PcapWriter::create(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let mut seq = seq0;
    let mut t_ms: u32 = 0;
    let mut pkts = 0;
    for digit in digits.chars() {
        let ev = dtmf_event(digit).unwrap_or_else(|| panic!("not a DTMF digit: {digit:?}"));
        let ts = ts0.wrapping_add(t_ms * 8);
        let steps = (dur_ms / 20).max(1);
        for k in 1..=steps {
            let end = k == steps;
            let mut payload = vec![ev, if end { 0x80 } else { 0 } | 10];
            payload.extend_from_slice(&((k * 160) as u16).to_be_bytes());
            for _ in 0..if end { 3 } else { 1 } {
                let pkt = rtp_packet(pt, seq, ts, ssrc, &payload, k == 1);
                w.udp((t_ms + k * 20) as u64 * 1000, src, dst, &pkt).expect("write pcap");
                seq = seq.wrapping_add(1);
                pkts += 1;
            }
        }
        t_ms += dur_ms + gap_ms;
    }
    w.finish().expect("flush pcap");
    pkts
}
