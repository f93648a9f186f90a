//! The speculative start on a real call (embedded models, SIPp caller, capture): a caller who pauses
//! in the middle of a question and goes on. The pause (1.1 s) is long enough for the appliance to
//! recognise the words so far and start answering them on speculation (`speculate_after_ms`, 200;
//! the shipped recogniser's fitted window) and shorter than what ends the turn here
//! (`silence_duration_ms`, 1500). The dropped speculation must leave no trace: nothing of it
//! is heard, it is not in the conversation the next replies are asked on, and the call record has
//! only the whole question and its one answer. The finished questions' speculations are used, and
//! the answer spoken phrase by phrase is heard as written (the joins clip and double nothing).

mod common;

use std::time::Duration;

const INSTRUCTIONS: &str = "You are the friendly phone receptionist of Sunny Bakery. Answer the caller in one short sentence that sounds natural when spoken aloud. \
Only use these facts. Opening hours: Monday to Friday 7:00 to 18:00, Saturday 8:00 to 14:00. Closed on Sunday. Phone number: 555-0100.";

/// The first question has a 1.1 s pause after "I would like to know".
const TURNS: [(f64, &str); 2] =
    [(1.0, "I would like to know [pause 1100] what time you open on Saturday?"), (15.0, "And what about Sunday?")];
const CALL_S: f64 = 28.0;

fn any_word(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| {
        fancy_regex::Regex::new(&format!(r"(?i)\b{}\b", fancy_regex::escape(w))).unwrap().is_match(text).unwrap()
    })
}

#[test]
fn a_caller_who_pauses_mid_question_hears_one_answer_to_the_whole_question() {
    common::require_tools(&["sipp", "tcpdump", "sox"]);
    let m = common::models_dir("qwen2_5_coder_1_5b/llm.json");
    let ports = common::alloc_ports();
    let dir = common::test_dir("speculation");
    let ends = common::speech::caller_pcap(&m, &dir, &TURNS, CALL_S, 0.0, 0x5BEC_0001);
    let cfg = format!(
        "logging:\n  level: info,switchboard::agent::llm=debug\n\
         {models}\
         calls:\n  record_dir: {{{{run_dir}}}}/records\n\
         routes:\n  - match: \"*\"\n    agent: bakery\nagents:\n  bakery:\n    mode: llm\n    turn_detection:\n      type: server_vad\n      silence_duration_ms: 1500\n      speculate_after_ms: 200\n    transcription: {{}}\n    llm:\n      instructions: \"{INSTRUCTIONS}\"\n      max_output_tokens: 60\n",
        models = common::embedded_llm_models(&m, Some(switchboard::models::asr::TINY_FP32_WINDOW_FLOOR_S)),
    );
    let app = common::Appliance::start_in(&dir, &cfg, &ports);
    let cap = common::Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
    let xml = std::fs::read_to_string(common::scenario("uac_pcmu_turn_pause.xml"))
        .unwrap()
        .replace("<pause milliseconds=\"9000\"/>", &format!("<pause milliseconds=\"{}\"/>", (CALL_S * 1000.0) as u64));
    let scen = dir.join("speculation.xml");
    std::fs::write(&scen, xml).unwrap();
    let run = common::run_sipp(
        app.dir(),
        &scen,
        &ports.sip_addr(),
        &ports,
        &["-s", "1000", "-m", "1"],
        Duration::from_secs(70),
    );
    let pkts = cap.stop();
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
    let log = app.log();
    println!(
        "{}",
        log.lines()
            .filter(|l| l.contains("speculat")
                || l.contains("transcript")
                || l.contains("agent reply")
                || l.contains("reply requested"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The pause started a speculation that was dropped; the questions' ends started ones that were used.
    assert!(
        app.metric_value("switchboard_turn_speculations_total{outcome=\"dropped\"}").unwrap_or(0.0) >= 1.0,
        "the pause was not speculated on\n{}",
        app.log_tail(40)
    );
    assert!(
        app.metric_value("switchboard_turn_speculations_total{outcome=\"used\"}").unwrap_or(0.0) >= 1.0,
        "no finished question was answered on speculation\n{}",
        app.log_tail(40)
    );
    // Usually the pause's words were recognised and a reply to them requested before the caller went
    // on (a loaded machine may drop the speculation while it is still being recognised); either way
    // the checks below hold.
    let dropped_at = log.find("speculative work dropped").expect("a dropped speculation in the log");
    let reply_dropped = log[..dropped_at].contains("reply requested speculative=true");
    println!("the dropped speculation had a reply under way: {reply_dropped}");

    // What the caller heard: nothing from the agent until the whole question was asked, then the answer.
    let spoken = common::speech::transcribe_16k(&m, &common::speech::agent_audio_16k(&dir, &pkts, &ports));
    for t in &spoken {
        println!("agent {:>6}..{:>6} ms: {:?}", t.start_ms, t.end_ms, t.transcript.text);
    }
    let first_end = (ends[0] * 1000.0) as u64;
    let early: Vec<&str> = spoken
        .iter()
        .filter(|t| t.start_ms > 1000 && t.start_ms < first_end)
        .map(|t| t.transcript.text.as_str())
        .collect();
    assert!(early.is_empty(), "the caller heard {early:?} before they had finished the question");
    let answer: Vec<&str> = spoken
        .iter()
        .filter(|t| t.start_ms >= first_end && t.start_ms < 15_000)
        .map(|t| t.transcript.text.as_str())
        .collect();
    let answer = answer.join(" ");
    assert!(any_word(&answer, &["8", "800", "8am", "eight"]), "asked about Saturday, the caller heard {answer:?}");

    // The conversation the second answer was asked on: the whole first question, its one answer,
    // the second question — nothing of the dropped speculation.
    let last = log.lines().rfind(|l| l.contains("reply requested")).expect("requests in the debug log");
    let users = last.matches("\"User: ").count();
    let assistants = last.matches("\"Assistant: ").count();
    assert_eq!((users, assistants), (2, 1), "{last}");
    assert!(last.contains("what time you open on Saturday"), "{last}");

    // The record: two turns, two replies, none cancelled or numbered for the dropped speculation.
    let r = common::wait_call_record(&dir);
    let transcripts = r["transcripts"].as_array().unwrap();
    let replies = r["replies"].as_array().unwrap();
    // The oracle: the first answer, spoken phrase by phrase, is heard as the model wrote it — no
    // word clipped or doubled at the joins (numbers aside: "8:00" is heard as "8", "800", …).
    let written = replies[0]["text"].as_str().unwrap_or_default();
    let errors = common::wer::word_errors(written, &answer);
    let n = common::wer::words(written).len();
    println!("reply 1 written {written:?}, heard {answer:?}: {errors} word errors of {n}");
    assert!(errors <= 2.max(n / 4), "the answer as written {written:?} was heard as {answer:?}");
    assert!(
        common::wer::words(&answer).len() <= n + 1,
        "words doubled at a join? written {written:?}, heard {answer:?}"
    );
    assert_eq!(transcripts.len(), 2, "{}", serde_json::to_string_pretty(&r).unwrap());
    assert!(transcripts[0]["text"].as_str().unwrap().to_lowercase().contains("saturday"), "{}", transcripts[0]);
    assert_eq!(replies.len(), 2, "{}", serde_json::to_string_pretty(&r["replies"]).unwrap());
    assert!(replies.iter().all(|x| x["outcome"] == "done"), "{}", serde_json::to_string_pretty(&r["replies"]).unwrap());
    let numbers: Vec<u64> = replies.iter().map(|x| x["response"].as_u64().unwrap()).collect();
    assert_eq!(numbers, vec![1, 2], "replies are numbered without gaps");
}
