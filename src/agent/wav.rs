//! Reading prompt audio from WAV files.

use std::path::Path;

/// Load a 16-bit PCM WAV as mono samples at `rate`. Stereo is mixed down;
/// another sample rate is an error that says how to convert the file, since
/// prompts are loaded once and a bad one should stop start-up, not a call.
pub fn load_pcm16(path: &Path, rate: u32) -> Result<Vec<i16>, String> {
    let reader = hound::WavReader::open(path).map_err(|e| format!("cannot read WAV: {e}"))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(format!(
            "WAV must be 16-bit PCM (it is {} bit {:?}); convert with: sox IN.wav -r {rate} -c 1 -b 16 -e signed-integer OUT.wav",
            spec.bits_per_sample, spec.sample_format
        ));
    }
    if spec.sample_rate != rate {
        return Err(format!(
            "WAV sample rate is {} Hz, need {rate} Hz; convert with: sox IN.wav -r {rate} -c 1 -b 16 -e signed-integer OUT.wav",
            spec.sample_rate
        ));
    }
    let ch = spec.channels.max(1) as usize;
    let samples: Result<Vec<i16>, _> = reader.into_samples::<i16>().collect();
    let samples = samples.map_err(|e| format!("bad WAV data: {e}"))?;
    if samples.is_empty() {
        return Err("WAV holds no audio".into());
    }
    Ok(samples.chunks(ch).map(|f| (f.iter().map(|&s| s as i32).sum::<i32>() / ch as i32) as i16).collect())
}
