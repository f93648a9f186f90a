//! The checks of a config that need the agent's own code: instructions that render with the call
//! variables, tools its model can be given, greeting files that load. `config::parse` checks the
//! document itself; these run after it (start-up and `check-config` call both) and name the file,
//! the line and the key alike.

use crate::config::{locate, resolve_relative, Config, ConfigError};
use std::path::Path;
use std::time::SystemTime;

/// The first agent-level error in `c`, read from `text` at `path`.
pub fn check_config(path: &Path, text: &str, c: &Config) -> Result<(), ConfigError> {
    let err = |key: String, message: String| ConfigError {
        file: path.to_path_buf(),
        line: locate::line_of(text, &key),
        column: None,
        key,
        message,
    };
    for (name, a) in &c.agents {
        if let Some(l) = &a.llm {
            // Any time renders; the variables' names are what is checked.
            let vars = super::call_variables_with("", "", name, &a.variables, SystemTime::UNIX_EPOCH);
            if let Err(e) = super::conversation::render(&l.instructions, &vars) {
                return Err(err(format!("agents.{name}.llm.instructions"), e));
            }
            for (i, t) in l.tools.iter().enumerate() {
                if let Err((key, e)) = super::tools::check_config(t) {
                    return Err(err(format!("agents.{name}.llm.tools.{i}.{key}"), e));
                }
            }
        }
        if let Some(g) = &a.greeting {
            let file = resolve_relative(path, g);
            if let Err(e) = super::wav::load_pcm16(&file, crate::media::codec::AGENT_RATE) {
                return Err(err(format!("agents.{name}.greeting"), format!("{}: {e}", file.display())));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, read_text};

    const P: &str = "/etc/switchboard/test.yaml";

    /// The first error of the whole check: the document's, then the agents'.
    fn err(text: &str) -> ConfigError {
        let c = parse(Path::new(P), text).unwrap_or_else(|e| panic!("the document itself is fine: {e}"));
        check_config(Path::new(P), text, &c).expect_err("the agent check should refuse it")
    }

    const LLM: &str = "models:\n  vad:\n    path: v.onnx\n  tts:\n    path: p.onnx\n  asr:\n    t:\n      path: w\n  llm:\n    m:\n      type: onnx\n      path: q\nroutes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: llm\n    turn_detection:\n      type: server_vad\n    transcription: {}\n    llm:\n";

    #[test]
    fn shipped_default_config_passes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switchboard.yaml");
        let text = read_text(&path).unwrap();
        let c = parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        check_config(&path, &text, &c).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn missing_greeting_file_is_an_error() {
        let e = err("routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    greeting: nope.wav\n");
        assert_eq!((e.line, e.key.as_str()), (Some(6), "agents.a.greeting"), "{e}");
        assert!(e.message.contains("/etc/switchboard/nope.wav"), "resolved beside the config: {e}");
    }

    #[test]
    fn instructions_must_render_with_the_call_variables() {
        let ok = format!("{LLM}      instructions: Hello {{caller}}, it is {{time}}. {{first_name}}\n    variables:\n      first_name: Ann\n");
        let c = parse(Path::new(P), &ok).unwrap();
        check_config(Path::new(P), &ok, &c).unwrap_or_else(|e| panic!("{e}"));
        let e = err(&format!("{LLM}      instructions: Hello {{nope}}\n"));
        assert_eq!((e.key.as_str(), e.line), ("agents.a.llm.instructions", Some(23)), "{e}");
        assert!(e.message.contains("unknown variable `{nope}`"), "{e}");
    }

    #[test]
    fn tools_are_checked_with_the_file_line_and_key() {
        let base = format!("{LLM}      instructions: hi\n      tools:\n");
        let tool = "        - name: check_order\n          description: Look up an order\n          type: http\n          url: http://127.0.0.1:9/orders/{n}\n";
        let ok = format!("{base}{tool}");
        check_config(Path::new(P), &ok, &parse(Path::new(P), &ok).unwrap()).unwrap_or_else(|e| panic!("{e}"));
        let e = err(&format!("{base}{tool}          method: FETCH\n"));
        assert_eq!(e.key, "agents.a.llm.tools.0.method", "{e}");
        assert_eq!(e.line, Some(29), "{e}");
        let e = err(&format!(
            "{base}        - name: bye\n          description: End\n          type: hangup\n          url: http://x\n"
        ));
        assert_eq!(e.key, "agents.a.llm.tools.0.url", "{e}");
    }
}
