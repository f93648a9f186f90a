//! `switchboard bench-llm`: the embedded language model through a scripted
//! conversation, turn after turn, as a call uses it (one session, its cache
//! kept between turns): per turn the prompt size, the time to the first text
//! and to the first whole sentence (what the voice waits for), and the decode
//! rate; then the median and 95th percentile.

use std::time::{Duration, Instant};
use switchboard::config::{LlmKind, LoadedConfig};
use switchboard::models::llm::chat::{ChatRequest, LlmEvent, Message, Role};
use switchboard::models::llm::local::{LocalLlm, LocalSettings};
use switchboard::models::llm::qwen::Qwen;
use switchboard::models::llm::sampler::Sampling;
use switchboard::models::llm::template::{prompt_tokens, Controls};
use switchboard::models::runtime;
use switchboard::models::splitter::SentenceSplitter;

const INSTRUCTIONS: &str = "You are the friendly phone receptionist of Sunny Bakery, a small family bakery at 12 Market Street. \
Answer the caller in one or two short sentences that sound natural when spoken aloud. Only use the facts below; if you do not know \
something, say so and offer to take a message.\n\nFacts:\n- Opening hours: Monday to Friday 7:00 to 18:00, Saturday 8:00 to 14:00. \
Closed on Sunday.\n- Phone number: 555-0100.\n- We sell bread, pastries and custom cakes. Custom cakes must be ordered two days in advance.";

const QUESTIONS: [&str; 10] = [
    "Hi, what time do you open on Saturday?",
    "And when do you close that day?",
    "Are you open on Sunday?",
    "What's your phone number?",
    "Do you sell custom cakes?",
    "How far in advance do I need to order one?",
    "Where are you located?",
    "What are your hours on Wednesday?",
    "Can I order a cake for the day after tomorrow?",
    "Great, thank you. That's all.",
];

struct Turn {
    prompt_tokens: usize,
    first_text: Duration,
    first_sentence: Duration,
    total: Duration,
    words: usize,
    deltas: usize,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

pub fn bench(
    loaded: &LoadedConfig,
    model: Option<&str>,
    turns: usize,
    threads: Option<usize>,
    max_tokens: u32,
) -> Result<(), String> {
    let m = loaded.config.models.as_ref().ok_or("the config has no models section")?;
    let onnx: Vec<_> = m.llm.iter().filter(|(_, l)| l.kind == LlmKind::Onnx).collect();
    let (name, l) = match model {
        Some(n) => onnx
            .iter()
            .find(|(k, _)| k.as_str() == n)
            .copied()
            .ok_or_else(|| format!("models.llm has no onnx model `{n}`"))?,
        None => *onnx.first().ok_or("the config has no models.llm of type onnx")?,
    };
    let rt = runtime::init(&loaded.resolve(&m.runtime.library)).map_err(|e| e.to_string())?;
    let mut opts = l.session_options();
    if let Some(t) = threads {
        opts.intra_threads = t;
    }
    let dir = loaded.resolve(l.path.as_deref().ok_or("type onnx needs path")?);
    let t0 = Instant::now();
    let model = Qwen::load(rt, name, &dir, &opts).map_err(|e| e.to_string())?;
    println!(
        "model {name}: {} ({} {}), {} intra-op threads, loaded in {:.1} s",
        dir.display(),
        model.spec().name,
        model.spec().quant,
        opts.intra_threads,
        t0.elapsed().as_secs_f64()
    );
    let (tok, _) = switchboard::models::llm::qwen::load_tokenizer(&dir)?;
    let controls = Controls::of(&tok)?;
    let greedy = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 };
    let llm = LocalLlm::spawn(
        model,
        LocalSettings { sampling: greedy, cache_bytes: 1 << 30, seed: 0, step_hook: None },
        4,
        name,
    )?;

    let mut messages = vec![Message::new(Role::System, INSTRUCTIONS)];
    // The instructions are computed while the call rings (as the agent does); timed apart.
    let t_warm = Instant::now();
    let mut probe = llm.stream(
        &ChatRequest {
            messages: messages.clone(),
            tools: vec![],
            tool_choice: Default::default(),
            temperature: Some(0.0),
            max_tokens: Some(0),
        },
        1,
    );
    while let Some(ev) = probe.wait(Duration::from_secs(300)) {
        if matches!(ev, Ok(LlmEvent::Done { .. }) | Err(_)) {
            break;
        }
    }
    println!(
        "instructions ({} tokens) computed in {:.0} ms (while the call rings)",
        prompt_tokens(
            &tok,
            &controls,
            &ChatRequest {
                messages: messages.clone(),
                tools: vec![],
                tool_choice: Default::default(),
                temperature: None,
                max_tokens: None
            },
            false
        )
        .len(),
        t_warm.elapsed().as_secs_f64() * 1000.0
    );
    println!(
        "{:>4}  {:>6}  {:>10}  {:>14}  {:>9}  {:>6}  reply",
        "turn", "prompt", "first text", "first sentence", "total", "words"
    );
    let mut results = Vec::new();
    for i in 0..turns {
        messages.push(Message::new(Role::User, QUESTIONS[i % QUESTIONS.len()]));
        let req = ChatRequest {
            messages: messages.clone(),
            tools: vec![],
            tool_choice: Default::default(),
            temperature: Some(0.0),
            max_tokens: Some(max_tokens),
        };
        let prompt = prompt_tokens(&tok, &controls, &req, true).len();
        let t = Instant::now();
        let mut s = llm.stream(&req, 1);
        let (mut text, mut first_text, mut first_sentence, mut deltas) = (String::new(), None, None, 0);
        let mut splitter = SentenceSplitter::new();
        loop {
            match s.wait(Duration::from_secs(300)).ok_or("no answer in 300 s")? {
                Ok(LlmEvent::Text(d)) => {
                    first_text.get_or_insert_with(|| t.elapsed());
                    deltas += 1;
                    text.push_str(&d);
                    if !splitter.push(&d).is_empty() {
                        first_sentence.get_or_insert_with(|| t.elapsed());
                    }
                }
                Ok(LlmEvent::ToolCall(_)) => {}
                Ok(LlmEvent::Done { .. }) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        let total = t.elapsed();
        let turn = Turn {
            prompt_tokens: prompt,
            first_text: first_text.unwrap_or(total),
            first_sentence: first_sentence.unwrap_or(total),
            total,
            words: text.split_whitespace().count(),
            deltas,
        };
        println!(
            "{:>4}  {:>6}  {:>7.0} ms  {:>11.0} ms  {:>6.0} ms  {:>6}  {:?}",
            i + 1,
            turn.prompt_tokens,
            turn.first_text.as_secs_f64() * 1000.0,
            turn.first_sentence.as_secs_f64() * 1000.0,
            turn.total.as_secs_f64() * 1000.0,
            turn.words,
            text.trim()
        );
        messages.push(Message::new(Role::Assistant, text.trim()));
        results.push(turn);
    }
    let ms = |f: &dyn Fn(&Turn) -> Duration| results.iter().map(|t| f(t).as_secs_f64() * 1000.0).collect::<Vec<_>>();
    let (ft, fs) = (ms(&|t| t.first_text), ms(&|t| t.first_sentence));
    let tok_rate: Vec<f64> = results
        .iter()
        .filter(|t| t.total > t.first_text && t.deltas > 1)
        .map(|t| (t.deltas - 1) as f64 / (t.total - t.first_text).as_secs_f64())
        .collect();
    println!(
        "{} turns: first text p50 {:.0} ms, p95 {:.0} ms; first sentence p50 {:.0} ms, p95 {:.0} ms; decode p50 {:.1} tokens/s; prompt grew to {} tokens",
        results.len(),
        percentile(&ft, 0.5),
        percentile(&ft, 0.95),
        percentile(&fs, 0.5),
        percentile(&fs, 0.95),
        percentile(&tok_rate, 0.5),
        results.last().map(|t| t.prompt_tokens).unwrap_or(0)
    );
    Ok(())
}
