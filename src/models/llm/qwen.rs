//! The converted Qwen2 decoder on ONNX Runtime (scripts/llm-to-onnx.py; the
//! interface is in docs/QWEN-ONNX.md): `input_ids` plus one key and one value
//! cache tensor per layer in, the last position's logits and the grown caches
//! out. The position offset is the cache's length, so a conversation's prefix
//! is computed once and every later turn only feeds its new tokens.

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

/// Read llm.json from a converted model's folder.
pub fn read_spec(dir: &Path) -> Result<QwenSpec, String> {
    let path = dir.join("llm.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec: QwenSpec = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if spec.format != "switchboard-llm-onnx" || spec.architecture != "qwen2" {
        return Err(format!("{}: format {:?} / architecture {:?}; this runtime reads switchboard-llm-onnx qwen2", path.display(), spec.format, spec.architecture));
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
        let input_names = (0..spec.n_layers).flat_map(|i| [format!("past_key_values.{i}.key"), format!("past_key_values.{i}.value")]).collect();
        let output_names = (0..spec.n_layers).flat_map(|i| [format!("present.{i}.key"), format!("present.{i}.value")]).collect();
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
            .map(|_| Ok(Tensor::from_array(([1usize, self.spec.n_kv_heads, 0usize, self.spec.head_dim], Vec::<f32>::new()))?.into_dyn()))
            .collect::<Result<_, ort::Error>>()?;
        Ok(KvCache { tokens: Vec::new(), kv })
    }

    /// Feed `tokens` after what `cache` holds; the logits of the last one.
    pub fn forward(&mut self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>, ort::Error> {
        if tokens.is_empty() {
            return Err(ort::Error::new("no tokens to feed"));
        }
        if cache.len() + tokens.len() > self.spec.max_positions {
            return Err(ort::Error::new(format!("{} positions exceed the model's {}", cache.len() + tokens.len(), self.spec.max_positions)));
        }
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(1 + cache.kv.len());
        inputs.push(("input_ids".into(), Tensor::from_array(([1usize, ids.len()], ids))?.into()));
        for (name, v) in self.input_names.iter().zip(&cache.kv) {
            inputs.push((name.as_str().into(), v.into()));
        }
        let mut outputs = self.session.run(inputs)?;
        let (_, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
        if logits.len() != self.spec.vocab_size {
            return Err(ort::Error::new(format!("logits hold {} values, expected {}", logits.len(), self.spec.vocab_size)));
        }
        let logits = logits.to_vec();
        let mut kv = Vec::with_capacity(self.output_names.len());
        for name in &self.output_names {
            kv.push(outputs.remove(name.as_str()).ok_or_else(|| ort::Error::new(format!("the model has no `{name}` output")))?);
        }
        cache.kv = kv;
        cache.tokens.extend_from_slice(tokens);
        Ok(logits)
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
