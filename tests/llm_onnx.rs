//! The embedded language model (Qwen2.5-Coder-1.5B-Instruct converted to ONNX by the set-up)
//! against llama.cpp running the same GGUF: the tokenizer gives llama.cpp's ids, and the answers to
//! the fixed prompt set (tests/fixtures/llm/prompts.json) carry the same facts.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use switchboard::models::llm::chat::{ChatRequest, LlmEvent, Message, Role, Usage};
use switchboard::models::llm::local::{LocalLlm, LocalSettings};
use switchboard::models::llm::qwen::{load_tokenizer, Qwen};
use switchboard::models::llm::sampler::Sampling;
use switchboard::models::llm::template::{prompt_tokens, Controls};

const MODEL: &str = "qwen2_5_coder_1_5b";

fn model_dir() -> PathBuf {
    common::models_dir(&format!("{MODEL}/llm.json")).join(MODEL)
}

fn fixture(name: &str) -> serde_json::Value {
    let p = common::repo_root().join("tests/fixtures/llm").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn chat(prompts: &serde_json::Value, case: &serde_json::Value) -> ChatRequest {
    let mut messages = vec![Message::new(Role::System, prompts["system"].as_str().unwrap())];
    for m in case["messages"].as_array().unwrap() {
        let role = match m["role"].as_str().unwrap() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            r => panic!("role {r}"),
        };
        messages.push(Message::new(role, m["content"].as_str().unwrap()));
    }
    ChatRequest {
        messages,
        tools: vec![],
        tool_choice: Default::default(),
        temperature: Some(0.0),
        max_tokens: Some(prompts["max_new_tokens"].as_u64().unwrap() as u32),
    }
}

/// The fixture holds llama.cpp's ids (scripts/llm-reference.py tokcheck --write).
#[test]
fn tokenizer_and_chat_template_match_llama_cpp() {
    let (tok, _) = load_tokenizer(&model_dir()).unwrap();
    let fx = fixture("tokens.json");
    let mut checked = 0;
    for t in fx["texts"].as_array().unwrap() {
        let text = t["text"].as_str().unwrap();
        // llama.cpp does not NFC-normalise; the HF tokenizer (and ours) does: they differ only there.
        if unicode_normalization::is_nfc(text) {
            assert_eq!(tok.encode_with_special(text), ids(&t["ids"]), "{text:?}");
            assert_eq!(tok.decode(&tok.encode_with_special(text), true), text);
            checked += 1;
        }
    }
    assert!(checked >= 18, "only {checked} texts checked");
    let prompts = fixture("prompts.json");
    let controls = Controls::of(&tok).unwrap();
    for (case, want) in prompts["cases"].as_array().unwrap().iter().zip(fx["chats"].as_array().unwrap()) {
        assert_eq!(case["id"], want["id"]);
        let got = prompt_tokens(&tok, &controls, &chat(&prompts, case), true);
        assert_eq!(got, ids(&want["ids"]), "chat prompt of case {}", case["id"]);
    }
}

fn facts_ok(text: &str, case: &serde_json::Value) -> bool {
    let re = |p: &str| fancy_regex::Regex::new(&format!("(?i){p}")).unwrap();
    let list = |k: &str| {
        case[k]
            .as_array()
            .map(|a| a.iter().map(|p| p.as_str().unwrap().to_string()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    list("expect").iter().all(|p| re(p).is_match(text).unwrap())
        && list("forbid").iter().all(|p| !re(p).is_match(text).unwrap())
}

/// llama.cpp's greedy answers to the prompt set, run now by scripts/llm-reference.py.
fn llama_cpp_answers() -> Vec<(String, String)> {
    let py = common::llama_python();
    let out = common::test_dir("llm-onnx").join("llama.json");
    let gguf = common::llm_gguf();
    let r = Command::new(&py)
        .arg(common::repo_root().join("scripts/llm-reference.py"))
        .args(["run", "--backend", "llama", "--threads", "2", "--model-dir"])
        .arg(model_dir())
        .arg("--gguf")
        .arg(&gguf)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "llm-reference.py run --backend llama failed:\n{}", String::from_utf8_lossy(&r.stderr));
    let res: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    res["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c["answer"].as_str().unwrap().to_string()))
        .collect()
}

fn ask(llm: &LocalLlm, req: &ChatRequest, session: u64) -> (String, String, Duration) {
    let (text, finish, first, _) = ask_counting(llm, req, session);
    (text, finish, first)
}

/// `ask`, with the reply's token counts.
fn ask_counting(llm: &LocalLlm, req: &ChatRequest, session: u64) -> (String, String, Duration, Usage) {
    let t0 = Instant::now();
    let mut s = llm.stream(req, session);
    let mut text = String::new();
    let mut first = None;
    loop {
        match s.wait(Duration::from_secs(120)).expect("the model answers within 120 s") {
            Ok(LlmEvent::Text(t)) => {
                first.get_or_insert_with(|| t0.elapsed());
                text.push_str(&t);
            }
            Ok(LlmEvent::ToolCall(c)) => panic!("no tools were offered, yet: {c:?}"),
            Ok(LlmEvent::Done { finish_reason, usage }) => {
                return (
                    text,
                    finish_reason,
                    first.unwrap_or_default(),
                    usage.expect("the embedded model counts tokens"),
                )
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn spawn_model() -> LocalLlm {
    let model = Qwen::load(common::ort_runtime(), "llm", &model_dir(), &common::cpu_options(2)).unwrap();
    let greedy = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 };
    LocalLlm::spawn(
        model,
        LocalSettings { sampling: greedy, cache_bytes: 256 << 20, seed: 0, step_hook: None },
        4,
        "test",
    )
    .unwrap()
}

#[test]
fn answers_carry_the_same_facts_as_llama_cpp() {
    let prompts = fixture("prompts.json");
    let llm = spawn_model();
    let theirs = llama_cpp_answers();
    let mut ours_ok = 0;
    let mut theirs_ok = 0;
    let mut lost = Vec::new();
    for (i, case) in prompts["cases"].as_array().unwrap().iter().enumerate() {
        let (text, finish, ttft) = ask(&llm, &chat(&prompts, case), 100 + i as u64);
        let (id, their_text) = &theirs[i];
        assert_eq!(id, case["id"].as_str().unwrap());
        let (a, b) = (facts_ok(&text, case), facts_ok(their_text, case));
        eprintln!("{id:20} onnx {a:5} ({finish}, first text {ttft:?}) {text:?}\n{:20} llama {b:5} {their_text:?}", "");
        ours_ok += a as usize;
        theirs_ok += b as usize;
        if b && !a {
            lost.push(id.clone());
        }
        assert!(!text.trim().is_empty(), "{id}: empty answer");
    }
    eprintln!("facts right: onnx {ours_ok}/8, llama.cpp {theirs_ok}/8; lost {lost:?}");
    // The int4 re-quantisation may flip a near-tie; it must not lose more than one fact llama.cpp knows.
    assert!(lost.len() <= 1, "the ONNX model lost facts llama.cpp got right: {lost:?}");
    assert!(ours_ok + 1 >= theirs_ok && ours_ok >= 5, "onnx {ours_ok}/8 vs llama.cpp {theirs_ok}/8");
}

/// A second turn reuses the conversation's cache: only the new tokens are computed, and the
/// answer is the same as from a cold start.
#[test]
fn later_turns_reuse_the_conversation_cache() {
    let prompts = fixture("prompts.json");
    let case = &prompts["cases"].as_array().unwrap()[5]; // followup_close: three messages
    assert_eq!(case["id"], "followup_close");
    let llm = spawn_model();
    let mut first_turn = chat(&prompts, case);
    first_turn.messages.truncate(2);
    let (a1, _, _) = ask(&llm, &first_turn, 1);
    assert!(a1.contains('8'), "{a1}");
    // Turn two in the same session, with the model's own answer in the history.
    let mut second = first_turn.clone();
    second.messages.push(Message::new(Role::Assistant, a1.trim()));
    second.messages.push(Message::new(Role::User, "And when do you close that day?"));
    let (warm_text, _, warm_first) = ask(&llm, &second, 1);
    // The same request cold, in a fresh session with nothing to share: the same answer (greedy).
    let llm_cold = spawn_model();
    let (cold_text, _, cold_first) = ask(&llm_cold, &second, 2);
    eprintln!("turn 2 warm {warm_first:?} {warm_text:?}; cold {cold_first:?} {cold_text:?}");
    assert_eq!(warm_text, cold_text);
    assert!(facts_ok(&warm_text, case), "{warm_text}");
    assert!(
        warm_first < cold_first,
        "the cached prefix makes the first text sooner: warm {warm_first:?}, cold {cold_first:?}"
    );
}

/// Wait until the worker has computed everything it was given (a warm-up is best effort, and
/// a reply sent behind it would replace it).
fn settle(llm: &LocalLlm) {
    let t0 = Instant::now();
    while !llm.is_idle() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the model did not finish its warm-ups within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Warm-ups on partial transcripts (the agent sends one per partial while the caller speaks):
/// when the turn ends, only the words after the last partial, and the template's tokens, are new
/// work; a newer warm-up replaces an older one without losing what the older one computed; the
/// answer is the one a cold start gives.
#[test]
fn a_turn_warmed_on_its_partial_transcripts_computes_only_its_last_words() {
    let prompts = fixture("prompts.json");
    let case = &prompts["cases"].as_array().unwrap()[0];
    assert_eq!(case["id"], "sat_open");
    let full = chat(&prompts, case);
    let with_words = |words: &str| {
        let mut r = full.clone();
        r.messages.last_mut().unwrap().content = words.into();
        r
    };
    let instructions = {
        let mut r = full.clone();
        r.messages.truncate(1);
        r
    };
    let llm = spawn_model();
    // Session 1: the instructions warmed as the call rang, then nothing until the turn ended.
    llm.warm(&instructions, 1);
    settle(&llm);
    let (cold_text, _, _, cold) = ask_counting(&llm, &full, 1);
    // Session 2: warmed as the caller spoke; the second warm-up is sent before the first has run,
    // and replaces it.
    llm.warm(&instructions, 2);
    llm.warm(&with_words("What time do"), 2);
    llm.warm(&with_words("What time do you open"), 2);
    settle(&llm);
    let (warm_text, _, _, warm) = ask_counting(&llm, &full, 2);
    let computed = |u: Usage| u.prompt_tokens - u.cached_tokens;
    eprintln!("instructions only: {cold:?} {cold_text:?}; warmed on partials: {warm:?} {warm_text:?}");
    assert_eq!(warm_text, cold_text, "the cache changes the time, not the answer");
    assert_eq!(warm.prompt_tokens, cold.prompt_tokens);
    // " on Saturday?" and "<|im_end|>\n<|im_start|>assistant\n": about 8 tokens, where the
    // question and the template were ~15.
    assert!(computed(warm) <= 8, "after the partials only the last words and the template are new: {warm:?}");
    assert!(computed(cold) >= computed(warm) + 4, "the partials' words were computed ahead: {cold:?} vs {warm:?}");
}

/// Tool calls from the embedded model are constrained to the offered tools and their JSON Schemas:
/// forced (`required`, a named function) and left to the model (`auto`).
#[test]
fn tool_calls_follow_the_schema() {
    use switchboard::models::llm::chat::{ToolChoice, ToolSpec};
    let llm = spawn_model();
    let days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let tools = vec![
        ToolSpec {
            name: "book_table".into(),
            description: "Book a table at the restaurant.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {
                "day": {"type": "string", "enum": days},
                "time": {"type": "string", "description": "HH:MM, 24-hour"},
                "people": {"type": "integer"}
            }, "required": ["day", "time", "people"]}),
        },
        ToolSpec {
            name: "transfer_to_human".into(),
            description: "Transfer the caller to a member of staff.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {}}),
        },
    ];
    let system = "You are the phone receptionist of Luigi's restaurant. Use the tools to act for the caller.";
    let ask_with = |choice: ToolChoice, session: u64, user: &str| {
        let req = ChatRequest {
            messages: vec![Message::new(Role::System, system), Message::new(Role::User, user)],
            tools: tools.clone(),
            tool_choice: choice,
            temperature: Some(0.0),
            max_tokens: Some(80),
        };
        let mut s = llm.stream(&req, session);
        let (mut text, mut calls) = (String::new(), Vec::new());
        loop {
            match s.wait(Duration::from_secs(120)).expect("an answer") {
                Ok(LlmEvent::Text(t)) => text.push_str(&t),
                Ok(LlmEvent::ToolCall(c)) => calls.push(c),
                Ok(LlmEvent::Done { finish_reason, .. }) => return (text, calls, finish_reason),
                Err(e) => panic!("{e}"),
            }
        }
    };
    let booking = "Hi, I'd like a table for four people on Friday at 7 pm, please.";
    let (text, calls, finish) = ask_with(ToolChoice::Required, 1, booking);
    eprintln!("required: {calls:?} {text:?} ({finish})");
    assert_eq!(calls.len(), 1, "{calls:?} {text:?}");
    assert_eq!(calls[0].name, "book_table");
    let args: serde_json::Value = serde_json::from_str(&calls[0].arguments).unwrap();
    assert!(days.contains(&args["day"].as_str().unwrap()), "{args}");
    assert!(args["people"].is_i64() && args["time"].is_string(), "{args}");
    assert_eq!(
        (args["day"].as_str(), args["people"].as_i64()),
        (Some("Friday"), Some(4)),
        "the model fills in what the caller said: {args}"
    );

    let (_, calls, _) = ask_with(ToolChoice::Function("transfer_to_human".into()), 2, booking);
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].name.as_str(), calls[0].arguments.as_str()), ("transfer_to_human", "{}"));

    let (text, calls, _) = ask_with(ToolChoice::None, 3, booking);
    assert!(calls.is_empty() && !text.trim().is_empty(), "tool_choice none: words only: {calls:?}");

    // Left to the model (`auto`): it decides to call the transfer (it writes `<tool_call>` out in
    // ordinary tokens, which is caught, never spoken, and constrained like the control token).
    let (text, calls, finish) = ask_with(ToolChoice::Auto, 4, "Can you put me through to someone from the staff?");
    eprintln!("auto: {calls:?} {text:?} ({finish})");
    assert_eq!(
        calls.iter().map(|c| (c.name.as_str(), c.arguments.as_str())).collect::<Vec<_>>(),
        vec![("transfer_to_human", "{}")],
        "{text:?}"
    );
    assert!(!text.contains("tool_call") && text.trim().is_empty(), "nothing of the call is said: {text:?}");
    assert_eq!(finish, "tool_calls");
}

/// `system` and one caller's words, answered greedily in at most `max` tokens, no tools.
fn greedy_request(system: &str, user: &str, max: u32) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::new(Role::System, system), Message::new(Role::User, user)],
        tools: vec![],
        tool_choice: Default::default(),
        temperature: Some(0.0),
        max_tokens: Some(max),
    }
}

/// Everything a stream says, with when its first text and its end came (after `t0`).
#[derive(Default)]
struct Heard {
    text: String,
    first_text: Option<Duration>,
    done: Option<Duration>,
    /// Prompt tokens found in a cache.
    cached: usize,
}

fn collect(s: &mut switchboard::models::llm::LlmStream, h: &mut Heard, t0: Instant) -> bool {
    while let Some(ev) = s.poll() {
        match ev.expect("no model error") {
            LlmEvent::Text(t) => {
                h.first_text.get_or_insert_with(|| t0.elapsed());
                h.text.push_str(&t);
            }
            LlmEvent::ToolCall(c) => panic!("no tools were offered, yet: {c:?}"),
            LlmEvent::Done { usage, .. } => {
                h.done = Some(t0.elapsed());
                h.cached = usage.map_or(0, |u| u.cached_tokens);
            }
        }
    }
    h.done.is_some()
}

/// Two callers on the one model thread: a long answer is under way when a second caller asks a
/// short question. The second caller's first words come before the long answer ends (the model
/// computes both a step at a time, the caller who waits first), and each answer is word for word
/// (greedy) what the model says to that caller alone.
#[test]
fn a_second_caller_is_answered_during_a_long_reply_and_each_answer_is_as_alone() {
    let system = "You are the phone receptionist of Sunny Bakery. Opening hours: Monday to Friday 7:00 to 18:00, Saturday 8:00 to 14:00, closed on Sunday.";
    let req = |user: &str, max: u32| greedy_request(system, user, max);
    let long = req("Please describe, in many sentences, what a good birthday cake needs, step by step.", 120);
    let short = req("When do you open on Saturday?", 30);
    let llm = spawn_model();
    let (long_alone, _, _) = ask(&llm, &long, 1);
    let (short_alone, _, _) = ask(&llm, &short, 2);
    llm.end(1);
    llm.end(2);

    let t0 = Instant::now();
    let mut a = llm.stream(&long, 3);
    let mut ha = Heard::default();
    while ha.first_text.is_none() {
        assert!(!collect(&mut a, &mut ha, t0), "the long answer ended before its first text");
        std::thread::sleep(Duration::from_millis(5));
    }
    let asked = t0.elapsed();
    let mut b = llm.stream(&short, 4);
    let mut hb = Heard::default();
    let deadline = Instant::now() + Duration::from_secs(240);
    while !(collect(&mut a, &mut ha, t0) & collect(&mut b, &mut hb, t0)) {
        assert!(Instant::now() < deadline, "both answers within 240 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "long: first text {:?}, done {:?}: {:?}\nshort (asked at {asked:?}): first text {:?}, done {:?}: {:?}",
        ha.first_text, ha.done, ha.text, hb.first_text, hb.done, hb.text
    );
    assert!(
        hb.first_text.unwrap() < ha.done.unwrap(),
        "the second caller's first words came after the long answer's end"
    );
    assert_eq!(ha.text, long_alone, "the long answer, interleaved, is the one given alone");
    assert_eq!(hb.text, short_alone, "the short answer, interleaved, is the one given alone");
}

/// Continuous batching: three callers' replies decode together, a fourth joins while they run, one
/// is cancelled (a barge-in) and leaves; every other answer is word for word (greedy) what the
/// model says to that caller alone, the cancelled one a beginning of its own, and the worker
/// counted passes with three and four replies in them.
#[test]
fn replies_decode_together_join_and_leave_and_each_is_as_alone() {
    let system = "You are the phone receptionist of Sunny Bakery. Opening hours: Monday to Friday 7:00 to 18:00, Saturday 8:00 to 14:00, closed on Sunday. Birthday cakes need two days' notice.";
    let req = |user: &str, max: u32| greedy_request(system, user, max);
    let asks = [
        req("Please describe, in many sentences, what a good birthday cake needs, step by step.", 90),
        req("Tell me at length about everything your bakery sells, one item after another.", 120),
        req("Go through your opening hours for every day of the week, one day at a time.", 80),
        req("Can I order a birthday cake for tomorrow?", 30),
    ];
    let llm = spawn_model();
    let alone: Vec<String> = asks.iter().enumerate().map(|(i, r)| ask(&llm, r, 1 + i as u64).0).collect();
    for i in 0..asks.len() {
        llm.end(1 + i as u64);
    }
    settle(&llm);
    let before = (llm.stats().passes_with(3), llm.stats().passes_with(4));

    let t0 = Instant::now();
    let mut streams: Vec<_> = asks[..3].iter().enumerate().map(|(i, r)| llm.stream(r, 10 + i as u64)).collect();
    let mut h: Vec<Heard> = (0..4).map(|_| Heard::default()).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    let pump = |streams: &mut Vec<switchboard::models::llm::LlmStream>, h: &mut Vec<Heard>| {
        assert!(Instant::now() < deadline, "the answers within 300 s");
        let mut all = true;
        for (s, h) in streams.iter_mut().zip(h.iter_mut()) {
            all &= collect(s, h, t0);
        }
        std::thread::sleep(Duration::from_millis(5));
        all
    };
    while h[..3].iter().any(|h| h.first_text.is_none()) {
        pump(&mut streams, &mut h);
    }
    streams.push(llm.stream(&asks[3], 13));
    while h[3].first_text.is_none() {
        pump(&mut streams, &mut h);
    }
    assert!(h[1].done.is_none(), "the long answer ended before the fourth caller's first words: {:?}", h[1].text);
    streams[1].cancel();
    let cut_at = h[1].text.clone();
    h[1].done = Some(t0.elapsed());
    let mut rest: Vec<usize> = vec![0, 2, 3];
    while !rest.is_empty() {
        pump(&mut streams, &mut h);
        rest.retain(|&i| h[i].done.is_none());
    }
    for (i, h) in h.iter().enumerate() {
        eprintln!("caller {i}: first text {:?}, done {:?}: {:?}", h.first_text, h.done, h.text);
    }
    for i in [0, 2, 3] {
        assert_eq!(h[i].text, alone[i], "caller {i}'s answer, batched, is the one given alone");
    }
    let system_tokens = load_tokenizer(&model_dir()).unwrap().0.encode(system).len();
    assert!(h[3].cached > system_tokens, "the fourth caller's prompt starts from the instructions the batch holds: {} cached, the instructions are {system_tokens} tokens", h[3].cached);
    assert!(
        alone[1].starts_with(&cut_at) && cut_at.len() < alone[1].len(),
        "the cancelled answer is a beginning of its own: {cut_at:?}"
    );
    let stats = llm.stats();
    let (three, four) = (stats.passes_with(3) - before.0, stats.passes_with(4) - before.1);
    eprintln!(
        "passes with 3+ replies: {three}, with 4: {four}, tokens decoded: {}",
        stats.tokens.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(three > 0, "the three replies never decoded together");
    assert!(four > 0, "the fourth reply never joined the three");
}

/// A model that hangs mid-reply (a step that never returns, made by the step hook): the watchdog
/// answers both replies in flight with an error within its limit (their callers would hear the
/// apology at once, not silence), a fresh copy of the model answers the next caller word for word
/// as the model did before the hang, and no job stays counted (`is_idle`: the appliance can stop).
#[test]
fn a_hung_step_fails_its_replies_and_a_fresh_copy_answers_the_next() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use switchboard::models::llm::local::StepHook;
    let system = "You are the phone receptionist of Sunny Bakery. Opening hours: Monday to Friday 7:00 to 18:00, Saturday 8:00 to 14:00, closed on Sunday.";
    let question = greedy_request(system, "When do you open on Saturday?", 30);
    let long = greedy_request(
        system,
        "Please describe, in many sentences, what a good birthday cake needs, step by step.",
        120,
    );
    let (armed, steps) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let hook = {
        let (armed, steps) = (armed.clone(), steps.clone());
        StepHook(Arc::new(move || {
            // Once armed, the fourth step hangs: the prompts are in and both replies are decoding.
            if armed.load(Ordering::SeqCst)
                && steps.fetch_add(1, Ordering::SeqCst) == 3
                && armed.swap(false, Ordering::SeqCst)
            {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }))
    };
    let model = Qwen::load(common::ort_runtime(), "llm", &model_dir(), &common::cpu_options(2)).unwrap();
    let greedy = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 };
    let llm = LocalLlm::spawn(
        model,
        LocalSettings { sampling: greedy, cache_bytes: 256 << 20, seed: 0, step_hook: Some(hook) },
        4,
        "test",
    )
    .unwrap();
    let limit = Duration::from_secs(3);
    llm.watch(limit, || {
        Qwen::load(common::ort_runtime(), "llm", &model_dir(), &common::cpu_options(2)).map_err(|e| e.to_string())
    });
    let (before, _, _) = ask(&llm, &question, 1);
    assert!(before.contains('8'), "the model knows the hour before the hang: {before:?}");

    armed.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let mut streams = [llm.stream(&long, 2), llm.stream(&question, 3)];
    let mut errors = Vec::new();
    for s in &mut streams {
        loop {
            match s
                .wait(Duration::from_secs(60))
                .expect("the reply ends within 60 s: the watchdog answers for a hung model")
            {
                Ok(LlmEvent::Done { .. }) => panic!("a reply finished although the model hung"),
                Ok(_) => {}
                Err(e) => {
                    errors.push((e.kind(), t0.elapsed()));
                    break;
                }
            }
        }
    }
    eprintln!("replies in flight at the hang: {errors:?}");
    assert!(!armed.load(Ordering::SeqCst), "the hook hung the model");
    for (kind, at) in &errors {
        assert_eq!(*kind, "timeout");
        assert!(*at >= limit && *at < limit * 3, "answered {at:?} after the question: the limit is {limit:?}");
    }

    let (after, finish, _) = ask(&llm, &question, 4);
    assert_eq!(after, before, "the fresh copy answers as the model did before the hang");
    assert_eq!(finish, "stop");
    assert_eq!(llm.stats().replaced.load(Ordering::Relaxed), 1);
    assert!(
        common::wait_until(Duration::from_secs(10), || llm.is_idle().then_some(())).is_some(),
        "the hung worker's jobs still count: the appliance could not stop"
    );
}
