//! Several turns recognised together by one copy of Whisper (issue 18: one
//! copy per device, serving every call).
//!
//! Turns are grouped by their fitted window (`window_frames`): Whisper's words
//! depend on the window's length, so only turns with the same window share an
//! encoder call, and the result of each is the same as alone. The greedy
//! decoder then steps every row of the group in one call per token: the
//! decoder's weights are read and its per-call overhead paid once per step for
//! all rows (on a CPU, one tiny.en step: 13 ms for one row, 24 for four), and a
//! row that ends (end of text, the loop guard, its token budget, its caller
//! gone) leaves the batch at once.
//! The prompt is the same length for every row of a model, so the rows stay
//! aligned without padding or masks. One turn alone is a batch of one: the
//! same code, the same ONNX Runtime calls as before batching.
//!
//! A turn decoded alone may bring a draft: the tokens of its last partial
//! transcript (issue 17: at the end of a turn only the tail should be new
//! work). Each decoder call feeds, after the token just chosen, the draft's
//! continuation of that token (the draft read from where it was last
//! followed: prompt lookup, as in llama.cpp's lookup decoding), and checks it
//! the way speculative decoding checks a draft: each position's greedy choice
//! is taken while it is the draft's next token, the first difference is the
//! next token, and the cache is cut back to the tokens kept. So a partial that
//! said "I do, I think …" where the end says "I do. I think …" is picked up
//! again after the full stop. The result is the greedy decode (a token that
//! differs from the draft is never kept), but the tokens the partial already
//! had cost one call together instead of one call each.

use super::{greedy, DecodeOptions, Transcript, Whisper, WindowResult, CANCELLED, FRAMES, WINDOW_SAMPLES};
use ort::value::{DynValue, Tensor};
use std::collections::BTreeMap;
use std::time::Instant;

/// One turn to recognise in a batch.
pub struct Request<'a> {
    /// 16 kHz mono audio.
    pub audio: &'a [f32],
    pub opts: &'a DecodeOptions,
    /// The turn is no longer wanted: it leaves the batch with the `CANCELLED` error.
    pub stop: &'a dyn Fn() -> bool,
    /// What a partial transcript of this turn decoded (its tokens), or nothing: checked in one
    /// call when the turn is decoded alone.
    pub draft: &'a [i64],
}

/// A row still decoding.
struct Row {
    /// Its index in the batch given to `decode`.
    index: usize,
    feed: Vec<i64>,
    /// Tokens at the end of `feed` that are the draft's guess, to be checked.
    proposed: usize,
    /// Its request's draft; where the draft was last followed (the index after the last token
    /// confirmed: lookups start there); where the guess being checked starts in it.
    draft: Vec<i64>,
    cursor: usize,
    guess_at: usize,
    budget: usize,
    out: WindowResult,
}

impl Whisper {
    /// Transcribe several turns at once: a transcript (or an error) per request, in order, each
    /// the same as `transcribe_until` would give alone. Turns longer than one 30 s window are
    /// transcribed alone, window after window.
    pub fn transcribe_batch(&mut self, requests: &[Request]) -> Vec<Result<Transcript, ort::Error>> {
        let mut out: Vec<Option<Result<Transcript, ort::Error>>> = requests.iter().map(|_| None).collect();
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, r) in requests.iter().enumerate() {
            if r.audio.len() > WINDOW_SAMPLES {
                out[i] = Some(self.transcribe_until(r.audio, r.opts, r.stop));
            } else {
                groups.entry(self.window_frames(r.audio.len())).or_default().push(i);
            }
        }
        for (frames, rows) in groups {
            let batch: Vec<&Request> = rows.iter().map(|&i| &requests[i]).collect();
            match self.windows(&batch, frames) {
                Ok(results) => {
                    for (&i, w) in rows.iter().zip(results) {
                        out[i] = Some(w.map(|w| self.transcript(requests[i].audio.len(), vec![w], requests[i].opts)));
                    }
                }
                Err(e) => {
                    for &i in &rows {
                        out[i] = Some(Err(ort::Error::new(e.to_string())));
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err(ort::Error::new("a turn of the batch was not transcribed"))))
            .collect()
    }

    /// Windows of at most 30 s each, encoded together in `frames` log-mel frames and decoded
    /// together; a decode that ran away in a fitted window (a loop, or out of token budget — how
    /// too small a window fails) is done again alone in the 30 s window, as Whisper's own fallback
    /// redoes a decode that repeats itself. `Err`: the batch's model calls failed.
    pub(super) fn windows(
        &mut self,
        batch: &[&Request],
        frames: usize,
    ) -> Result<Vec<Result<WindowResult, ort::Error>>, ort::Error> {
        let mut results = self.decode(batch, frames)?;
        if frames == FRAMES {
            return Ok(results);
        }
        for (r, result) in batch.iter().zip(results.iter_mut()) {
            let Ok(w) = result else { continue };
            if !w.runaway {
                continue;
            }
            if !r.opts.redo_runaway {
                *result = Err(ort::Error::new("the decode ran away in the fitted window"));
                continue;
            }
            tracing::debug!(frames, "the decode ran away in the fitted window; again in the 30 s window");
            let (encode_ms, decode_ms) = (w.encode_ms, w.decode_ms);
            *result = self.decode(&[r], FRAMES)?.remove(0).map(|mut again| {
                again.encode_ms += encode_ms;
                again.decode_ms += decode_ms;
                again
            });
        }
        Ok(results)
    }

    /// Encode the windows in one call, then decode them greedily with Whisper's rules, one
    /// decoder call per token for every row still going.
    fn decode(
        &mut self,
        batch: &[&Request],
        frames: usize,
    ) -> Result<Vec<Result<WindowResult, ort::Error>>, ort::Error> {
        let t0 = Instant::now();
        let audio: Vec<&[f32]> = batch.iter().map(|r| r.audio).collect();
        let mut cross_kv = self.encode(&audio, frames)?;
        let encode_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let t1 = Instant::now();
        let vocab = self.spec.vocab_size;

        // The prompt of each row: its language given, or detected on its window.
        let detected = if self.spec.multilingual && batch.iter().any(|r| r.opts.language == "auto") {
            Some(self.detect_languages(batch.len(), &cross_kv)?)
        } else {
            None
        };
        let mut results: Vec<Option<Result<WindowResult, ort::Error>>> = batch.iter().map(|_| None).collect();
        let mut rows = Vec::with_capacity(batch.len());
        for (index, r) in batch.iter().enumerate() {
            let (language, lang_token) = if !self.spec.multilingual {
                (None, None)
            } else if r.opts.language == "auto" {
                let (code, id) = detected
                    .as_ref()
                    .map(|d| d[index].clone())
                    .ok_or_else(|| ort::Error::new("no language detected"))?;
                (Some(code), Some(id))
            } else {
                match self.spec.language_token(&r.opts.language) {
                    Ok(id) => (Some(r.opts.language.clone()), Some(id)),
                    Err(e) => {
                        results[index] = Some(Err(ort::Error::new(e)));
                        continue;
                    }
                }
            };
            let feed = self.spec.prompt(lang_token);
            let seconds = r.audio.len() as f32 / 16000.0;
            let budget =
                ((seconds * r.opts.max_tokens_per_second) as usize + 16).min(self.spec.max_length - feed.len());
            let out = WindowResult {
                runaway: false,
                tokens: Vec::new(),
                language,
                no_speech_prob: 0.0,
                logprob_sum: 0.0,
                scored: 0,
                encode_ms,
                decode_ms: 0.0,
                drafted: 0,
            };
            rows.push(Row { index, feed, proposed: 0, draft: r.draft.to_vec(), cursor: 0, guess_at: 0, budget, out });
        }
        // Alone, the turn's draft follows its prompt in the first call (the rows of a batch must
        // stay aligned, so a row guesses only once it is alone).
        if let [row] = rows.as_mut_slice() {
            row.propose(0);
        }
        if rows.len() < batch.len() {
            cross_kv = keep_rows(&cross_kv, &rows.iter().map(|r| r.index).collect::<Vec<_>>())?;
        }

        let mut self_kv = self.empty_cache(rows.len())?;
        while !rows.is_empty() {
            // Rows whose caller no longer wants them leave before the step.
            let mut ended = vec![false; rows.len()];
            for (k, row) in rows.iter().enumerate() {
                if (batch[row.index].stop)() {
                    results[row.index] = Some(Err(ort::Error::new(CANCELLED)));
                    ended[k] = true;
                }
            }
            (rows, self_kv, cross_kv) = leave(rows, &ended, self_kv, cross_kv)?;
            if rows.is_empty() {
                break;
            }
            let n = rows[0].feed.len();
            let past = self_kv.shape()[2] as usize;
            let tokens: Vec<i64> = rows.iter().flat_map(|r| r.feed.iter().copied()).collect();
            let (logits, next_kv) = self.step(&tokens, rows.len(), &self_kv, &cross_kv)?;
            self_kv = next_kv;
            let mut ended = vec![false; rows.len()];
            let mut cut_back = None;
            for (k, row) in rows.iter_mut().enumerate() {
                let own = &logits[k * n * vocab..(k + 1) * n * vocab];
                let first = row.out.scored == 0;
                if first {
                    row.out.no_speech_prob = greedy::no_speech_prob(&own[..vocab], self.spec.no_speech);
                }
                // The choices from the last position fed for sure (the prompt's last, or the token
                // chosen last); the draft's guesses after it are checked.
                let from = n - 1 - row.proposed;
                let mut next = None;
                for pos in from..n {
                    let mut l = own[pos * vocab..(pos + 1) * vocab].to_vec();
                    greedy::suppress(&mut l, &self.spec.suppress_ids);
                    if row.out.scored == 0 {
                        greedy::suppress(&mut l, &self.spec.suppress_ids_begin);
                    }
                    let (id, lp) = greedy::argmax_logprob(&l);
                    row.out.logprob_sum += lp;
                    row.out.scored += 1;
                    if id == self.spec.eot {
                        ended[k] = true;
                        break;
                    }
                    row.out.tokens.push(id);
                    if row.out.tokens.len() >= row.budget || greedy::looping(&row.out.tokens, 8, 4) {
                        row.out.runaway = true;
                        ended[k] = true;
                        break;
                    }
                    if pos + 1 < n && row.feed[pos + 1] == id {
                        row.out.drafted += 1; // the draft's token, confirmed: its cache entry stays
                        row.guess_at += 1;
                        row.cursor = row.guess_at;
                        continue;
                    }
                    if pos + 1 < n {
                        // The draft goes another way from here: the cache keeps what was confirmed.
                        cut_back = Some(past + pos + 1);
                    }
                    next = Some(id);
                    break;
                }
                if let Some(id) = next {
                    row.feed = vec![id];
                    row.proposed = 0;
                }
                if ended[k] {
                    row.out.decode_ms = t1.elapsed().as_secs_f64() * 1000.0;
                    results[row.index] = Some(Ok(std::mem::replace(&mut row.out, WindowResult::empty())));
                }
            }
            (rows, self_kv, cross_kv) = leave(rows, &ended, self_kv, cross_kv)?;
            // Only a row alone guesses: cut its cache (if it goes on) back to what was kept, and
            // guess again after the token it chose.
            if let [row] = rows.as_mut_slice() {
                if let Some(keep) = cut_back {
                    self_kv = keep_positions(&self_kv, keep)?;
                }
                if let Some(&last) = row.feed.last() {
                    if let Some(i) = row.draft.iter().skip(row.cursor).position(|&t| t == last) {
                        row.propose(row.cursor + i + 1);
                    }
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ort::Error::new("a row of the batch was not decoded"))))
            .collect())
    }
}

impl Row {
    /// Feed the draft from `at` after what is fed already (within the token budget), to be checked.
    fn propose(&mut self, at: usize) {
        let room = self.budget.saturating_sub(self.out.tokens.len() + 1);
        let guess = &self.draft[at.min(self.draft.len())..];
        let guess = &guess[..guess.len().min(room)];
        self.feed.extend_from_slice(guess);
        self.proposed = guess.len();
        self.guess_at = at;
    }
}

impl WindowResult {
    fn empty() -> WindowResult {
        WindowResult {
            runaway: false,
            tokens: Vec::new(),
            language: None,
            no_speech_prob: 0.0,
            logprob_sum: 0.0,
            scored: 0,
            encode_ms: 0.0,
            decode_ms: 0.0,
            drafted: 0,
        }
    }
}

type Caches = (Vec<Row>, DynValue, DynValue);

/// The rows not `ended`, with their rows of both caches (nothing is copied when none ended).
fn leave(rows: Vec<Row>, ended: &[bool], self_kv: DynValue, cross_kv: DynValue) -> Result<Caches, ort::Error> {
    if !ended.contains(&true) {
        return Ok((rows, self_kv, cross_kv));
    }
    let keep: Vec<usize> = (0..rows.len()).filter(|&k| !ended[k]).collect();
    if keep.is_empty() {
        return Ok((Vec::new(), self_kv, cross_kv));
    }
    let (self_kv, cross_kv) = (keep_rows(&self_kv, &keep)?, keep_rows(&cross_kv, &keep)?);
    let rows = rows.into_iter().zip(ended).filter(|(_, &e)| !e).map(|(r, _)| r).collect();
    Ok((rows, self_kv, cross_kv))
}

/// A cache [2L, B, T, D] with only the batch rows `keep` (in that order).
fn keep_rows(cache: &DynValue, keep: &[usize]) -> Result<DynValue, ort::Error> {
    let (shape, data) = cache.try_extract_tensor::<f32>()?;
    let [layers, batch, t, d] = [shape[0], shape[1], shape[2], shape[3]].map(|x| x as usize);
    let block = t * d;
    let mut out = Vec::with_capacity(layers * keep.len() * block);
    for l in 0..layers {
        for &r in keep {
            debug_assert!(r < batch);
            let at = (l * batch + r) * block;
            out.extend_from_slice(&data[at..at + block]);
        }
    }
    Ok(Tensor::from_array(([layers, keep.len(), t, d], out))?.into_dyn())
}

/// A cache [2L, B, T, D] with only its first `keep` positions.
fn keep_positions(cache: &DynValue, keep: usize) -> Result<DynValue, ort::Error> {
    let (shape, data) = cache.try_extract_tensor::<f32>()?;
    let [layers, batch, t, d] = [shape[0], shape[1], shape[2], shape[3]].map(|x| x as usize);
    let keep = keep.min(t);
    let mut out = Vec::with_capacity(layers * batch * keep * d);
    for lb in 0..layers * batch {
        let at = lb * t * d;
        out.extend_from_slice(&data[at..at + keep * d]);
    }
    Ok(Tensor::from_array(([layers, batch, keep, d], out))?.into_dyn())
}
