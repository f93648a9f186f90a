//! Reading prompt audio from WAV files.

use crate::media::resample::Resampler;
use std::path::Path;

/// Load a 16-bit PCM WAV as mono samples at `rate`: stereo is mixed down and
/// any other sample rate is resampled (once, at start-up), so operators can
/// drop in prompts as they come from a studio or a TTS tool.
pub fn load_pcm16(path: &Path, rate: u32) -> Result<Vec<i16>, String> {
    let reader = hound::WavReader::open(path).map_err(|e| format!("cannot read WAV: {e}"))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(format!(
            "WAV must be 16-bit PCM (it is {} bit {:?}); convert with: sox IN.wav -r {rate} -c 1 -b 16 -e signed-integer OUT.wav",
            spec.bits_per_sample, spec.sample_format
        ));
    }
    let ch = spec.channels.max(1) as usize;
    let samples: Result<Vec<i16>, _> = reader.into_samples::<i16>().collect();
    let samples = samples.map_err(|e| format!("bad WAV data: {e}"))?;
    if samples.is_empty() {
        return Err("WAV holds no audio".into());
    }
    let mono: Vec<i16> =
        samples.chunks(ch).map(|f| (f.iter().map(|&s| s as i32).sum::<i32>() / ch as i32) as i16).collect();
    if spec.sample_rate == rate {
        return Ok(mono);
    }
    let mut r = Resampler::new(spec.sample_rate, rate)
        .map_err(|e| format!("cannot resample {} Hz to {rate} Hz: {e}", spec.sample_rate))?;
    let mut out = Vec::with_capacity(mono.len() * rate as usize / spec.sample_rate as usize + 1024);
    r.process(&mono, &mut out);
    r.flush(&mut out);
    // Drop the filter's delay so the prompt starts at once.
    let delay = r.delay().min(out.len());
    out.drain(..delay);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resamples_and_mixes_down() {
        let dir = std::env::temp_dir().join(format!("sb-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stereo8k.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..8000 {
            let s = ((i as f64 * std::f64::consts::TAU * 440.0 / 8000.0).sin() * 10000.0) as i16;
            w.write_sample(s).unwrap();
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        let pcm = load_pcm16(&path, 16000).unwrap();
        assert!((pcm.len() as i64 - 16000).abs() < 200, "1 s at 16 kHz: {}", pcm.len());
        let peak = pcm[2000..14000].iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((9000..11000).contains(&peak), "amplitude kept: {peak}");
        assert!(load_pcm16(&dir.join("missing.wav"), 16000).is_err());
    }
}
