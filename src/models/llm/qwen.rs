//! The converted Qwen2 decoder on ONNX Runtime (scripts/llm-to-onnx.py; the
//! interface is in docs/QWEN-ONNX.md): `input_ids`, their positions, an
//! attention mask and one key and one value cache tensor per layer in, the
//! last position's logits and the grown caches out. A conversation's prefix
//! is computed once and every later turn only feeds its new tokens.
//!
//! `BatchCache` holds several conversations' caches in one tensor per layer so
//! that their replies decode together, one token each per forward pass: rows
//! of different lengths are padded with masked slots, and each row's tokens
//! take its own positions.

use super::tokenizer::QwenTokenizer;
use crate::models::runtime::{Provider, Runtime, RuntimeError, SessionOptions};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use serde::Deserialize;
use std::borrow::Cow;
use std::path::Path;

/// What llm.json says about the model (the fields the runtime needs).
#[derive(Debug, Clone, Deserialize)]
pub struct QwenSpec {
    pub format: String,
    pub architecture: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub quant: String,
    pub n_layers: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub special_tokens: SpecialTokens,
    pub tokenizer: TokenizerSpec,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SpecialTokens {
    pub im_start: u32,
    pub im_end: u32,
    pub endoftext: u32,
    pub stop: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenizerSpec {
    pub added_tokens: Vec<AddedToken>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
}

/// The keys and values of every position computed so far, for one conversation.
pub struct KvCache {
    /// The tokens the cache holds, in order.
    pub tokens: Vec<u32>,
    /// 2 per layer: key, value; each [1, kv_heads, len, head_dim].
    kv: Vec<DynValue>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    /// Bytes held (keys and values, f32).
    pub fn bytes(&self, spec: &QwenSpec) -> usize {
        self.tokens.len() * spec.n_layers * 2 * spec.n_kv_heads * spec.head_dim * 4
    }
}

/// Several conversations' caches in one tensor per layer ([rows, kv_heads, slots, head_dim]).
/// Row r holds its first `kept[r]` positions in slots 0.., padding up to `joined` (the slots when
/// the batch was made), and every token fed since in the slots from `joined` on.
pub struct BatchCache {
    /// Each row's tokens, in order.
    tokens: Vec<Vec<u32>>,
    kept: Vec<usize>,
    joined: usize,
    kv: Vec<DynValue>,
}

impl BatchCache {
    pub fn rows(&self) -> usize {
        self.tokens.len()
    }
    /// Slots per row, padding included.
    pub fn slots(&self) -> usize {
        self.joined + self.tokens.first().map_or(0, |t| t.len() - self.kept[0])
    }
    /// The tokens row `r` holds.
    pub fn tokens(&self, r: usize) -> &[u32] {
        &self.tokens[r]
    }
}

/// Read llm.json from a converted model's folder.
pub fn read_spec(dir: &Path) -> Result<QwenSpec, String> {
    let path = dir.join("llm.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec: QwenSpec = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if spec.format != "switchboard-llm-onnx" || spec.architecture != "qwen2" {
        return Err(format!(
            "{}: format {:?} / architecture {:?}; this runtime reads switchboard-llm-onnx qwen2",
            path.display(),
            spec.format,
            spec.architecture
        ));
    }
    Ok(spec)
}

/// The tokenizer of a converted model's folder, without the model.
pub fn load_tokenizer(dir: &Path) -> Result<(QwenTokenizer, QwenSpec), String> {
    let spec = read_spec(dir)?;
    let added: Vec<(String, u32)> = spec.tokenizer.added_tokens.iter().map(|a| (a.content.clone(), a.id)).collect();
    Ok((QwenTokenizer::load(dir, &added)?, spec))
}

pub struct Qwen {
    session: Session,
    spec: QwenSpec,
    tokenizer: QwenTokenizer,
    provider: Provider,
    input_names: Vec<String>,
    output_names: Vec<String>,
}

impl Qwen {
    /// Load `dir` (model.onnx + data, llm.json, vocab.json, merges.txt); `model` names it in errors.
    pub fn load(rt: &Runtime, model: &str, dir: &Path, opts: &SessionOptions) -> Result<Qwen, RuntimeError> {
        let bad = |reason: String| RuntimeError::Model { model: model.into(), reason };
        let spec_path = dir.join("llm.json");
        if !spec_path.exists() {
            return Err(RuntimeError::MissingModel { model: model.into(), path: spec_path });
        }
        let (tokenizer, spec) = load_tokenizer(dir).map_err(bad)?;
        let (session, provider) = rt.session(model, &dir.join("model.onnx"), opts)?;
        for input in ["position_ids", "attention_mask"] {
            if !session.inputs().iter().any(|i| i.name() == input) {
                return Err(bad(format!("{} has no `{input}` input: it was converted by an older scripts/llm-to-onnx.py; run scripts/setup.sh to convert it again", dir.join("model.onnx").display())));
            }
        }
        let input_names = (0..spec.n_layers)
            .flat_map(|i| [format!("past_key_values.{i}.key"), format!("past_key_values.{i}.value")])
            .collect();
        let output_names =
            (0..spec.n_layers).flat_map(|i| [format!("present.{i}.key"), format!("present.{i}.value")]).collect();
        Ok(Qwen { session, spec, tokenizer, provider, input_names, output_names })
    }

    pub fn spec(&self) -> &QwenSpec {
        &self.spec
    }
    pub fn tokenizer(&self) -> &QwenTokenizer {
        &self.tokenizer
    }
    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub fn empty_cache(&self) -> Result<KvCache, ort::Error> {
        let kv = (0..2 * self.spec.n_layers)
            .map(|_| {
                Ok(Tensor::from_array(([1usize, self.spec.n_kv_heads, 0usize, self.spec.head_dim], Vec::<f32>::new()))?
                    .into_dyn())
            })
            .collect::<Result<_, ort::Error>>()?;
        Ok(KvCache { tokens: Vec::new(), kv })
    }

    /// Feed `tokens` after what `cache` holds; the logits of the last one.
    pub fn forward(&mut self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>, ort::Error> {
        if tokens.is_empty() {
            return Err(ort::Error::new("no tokens to feed"));
        }
        let past = cache.len();
        self.check_positions(past + tokens.len())?;
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let positions: Vec<i64> = (past..past + tokens.len()).map(|p| p as i64).collect();
        let mask = vec![1i64; past + tokens.len()];
        let (mut logits, kv) = self.run(&cache.kv, [1, tokens.len()], ids, positions, mask)?;
        cache.kv = kv;
        cache.tokens.extend_from_slice(tokens);
        Ok(logits.pop().unwrap_or_default())
    }

    fn check_positions(&self, n: usize) -> Result<(), ort::Error> {
        if n > self.spec.max_positions {
            return Err(ort::Error::new(format!("{n} positions exceed the model's {}", self.spec.max_positions)));
        }
        Ok(())
    }

    /// One forward pass: `ids`, `positions` [rows, seq], `mask` [rows, past + seq] after the caches
    /// `kv`; each row's last logits and the grown caches.
    fn run(
        &mut self,
        kv: &[DynValue],
        shape: [usize; 2],
        ids: Vec<i64>,
        positions: Vec<i64>,
        mask: Vec<i64>,
    ) -> Result<(Vec<Vec<f32>>, Vec<DynValue>), ort::Error> {
        let rows = shape[0];
        let slots = mask.len() / rows.max(1);
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(3 + kv.len());
        inputs.push(("input_ids".into(), Tensor::from_array((shape, ids))?.into()));
        inputs.push(("position_ids".into(), Tensor::from_array((shape, positions))?.into()));
        inputs.push(("attention_mask".into(), Tensor::from_array(([rows, slots], mask))?.into()));
        for (name, v) in self.input_names.iter().zip(kv) {
            inputs.push((name.as_str().into(), v.into()));
        }
        let mut outputs = self.session.run(inputs)?;
        let (_, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
        let vocab = self.spec.vocab_size;
        if logits.len() != rows * vocab {
            return Err(ort::Error::new(format!("logits hold {} values, expected {}", logits.len(), rows * vocab)));
        }
        let logits = logits.chunks(vocab).map(<[f32]>::to_vec).collect();
        let mut kv = Vec::with_capacity(self.output_names.len());
        for name in &self.output_names {
            kv.push(
                outputs
                    .remove(name.as_str())
                    .ok_or_else(|| ort::Error::new(format!("the model has no `{name}` output")))?,
            );
        }
        Ok((logits, kv))
    }

    /// The caches of several conversations as one batch (each keeps its own positions; shorter
    /// rows are padded with masked slots).
    pub fn batch(&self, caches: Vec<KvCache>) -> Result<BatchCache, ort::Error> {
        let (heads, dim) = (self.spec.n_kv_heads, self.spec.head_dim);
        let rows = caches.len();
        let slots = caches.iter().map(KvCache::len).max().unwrap_or(0);
        let mut kv = Vec::with_capacity(2 * self.spec.n_layers);
        for layer in 0..2 * self.spec.n_layers {
            let mut data = vec![0f32; rows * heads * slots * dim];
            for (r, c) in caches.iter().enumerate() {
                let len = c.len();
                if len == 0 {
                    continue;
                }
                let (_, src) = c.kv[layer].try_extract_tensor::<f32>()?;
                for h in 0..heads {
                    let to = ((r * heads + h) * slots) * dim;
                    data[to..to + len * dim].copy_from_slice(&src[h * len * dim..(h + 1) * len * dim]);
                }
            }
            kv.push(Tensor::from_array(([rows, heads, slots, dim], data))?.into_dyn());
        }
        let kept = caches.iter().map(KvCache::len).collect();
        let tokens = caches.into_iter().map(|c| c.tokens).collect();
        Ok(BatchCache { tokens, kept, joined: slots, kv })
    }

    /// Feed one token to every row of `batch`; each row's logits.
    pub fn forward_batch(&mut self, batch: &mut BatchCache, tokens: &[u32]) -> Result<Vec<Vec<f32>>, ort::Error> {
        let rows = batch.rows();
        if rows == 0 || tokens.len() != rows {
            return Err(ort::Error::new(format!("{} tokens for a batch of {rows}", tokens.len())));
        }
        for t in &batch.tokens {
            self.check_positions(t.len() + 1)?;
        }
        let slots = batch.slots() + 1;
        let ids = tokens.iter().map(|&t| t as i64).collect();
        let positions = batch.tokens.iter().map(|t| t.len() as i64).collect();
        let mut mask = Vec::with_capacity(rows * slots);
        for r in 0..rows {
            mask.extend((0..slots).map(|j| i64::from(j < batch.kept[r] || j >= batch.joined)));
        }
        let (logits, kv) = self.run(&batch.kv, [rows, 1], ids, positions, mask)?;
        batch.kv = kv;
        for (t, &token) in batch.tokens.iter_mut().zip(tokens) {
            t.push(token);
        }
        Ok(logits)
    }

    /// The rows of `batch` as conversations of their own again (their slots without the padding).
    pub fn unbatch(&self, batch: BatchCache) -> Result<Vec<KvCache>, ort::Error> {
        let (heads, dim) = (self.spec.n_kv_heads, self.spec.head_dim);
        let slots = batch.slots();
        let mut caches: Vec<KvCache> =
            batch.tokens.into_iter().map(|tokens| KvCache { tokens, kv: Vec::with_capacity(batch.kv.len()) }).collect();
        for v in &batch.kv {
            let (_, src) = v.try_extract_tensor::<f32>()?;
            for (r, c) in caches.iter_mut().enumerate() {
                let (kept, len) = (batch.kept[r], c.tokens.len());
                let mut data = Vec::with_capacity(heads * len * dim);
                for h in 0..heads {
                    let row = ((r * heads + h) * slots) * dim;
                    data.extend_from_slice(&src[row..row + kept * dim]);
                    data.extend_from_slice(&src[row + batch.joined * dim..row + slots * dim]);
                }
                c.kv.push(Tensor::from_array(([1usize, heads, len, dim], data))?.into_dyn());
            }
        }
        Ok(caches)
    }

    /// Keep only the first `n` positions (a later turn diverges from the cache there).
    pub fn truncate(&self, cache: &mut KvCache, n: usize) -> Result<(), ort::Error> {
        if n >= cache.len() {
            return Ok(());
        }
        *cache = self.clone_prefix(cache, n)?;
        Ok(())
    }

    /// A copy of the first `n` positions of `cache` (another conversation with the same prefix).
    pub fn clone_prefix(&self, cache: &KvCache, n: usize) -> Result<KvCache, ort::Error> {
        let n = n.min(cache.len());
        if n == 0 {
            return self.empty_cache();
        }
        let (heads, dim, len) = (self.spec.n_kv_heads, self.spec.head_dim, cache.len());
        let mut kv = Vec::with_capacity(cache.kv.len());
        for v in &cache.kv {
            let (_, data) = v.try_extract_tensor::<f32>()?;
            let mut kept = Vec::with_capacity(heads * n * dim);
            for h in 0..heads {
                kept.extend_from_slice(&data[h * len * dim..(h * len + n) * dim]);
            }
            kv.push(Tensor::from_array(([1usize, heads, n, dim], kept))?.into_dyn());
        }
        Ok(KvCache { tokens: cache.tokens[..n].to_vec(), kv })
    }
}
