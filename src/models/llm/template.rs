//! Qwen2.5's chat template (the jinja template in llm.json, written out in
//! Rust): a chat request becomes prompt tokens. Control tokens are inserted
//! as ids between text segments, and each text segment is encoded on its own,
//! exactly as the HF tokenizer splits the rendered template on added tokens.
//! Message text is never scanned for control tokens (see tokenizer.rs).

use super::chat::{ChatRequest, Message, Role, ToolSpec};
use super::tokenizer::QwenTokenizer;
use serde_json::Value;

pub const DEFAULT_SYSTEM: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// The ids of the control tokens the template uses.
#[derive(Debug, Clone, Copy)]
pub struct Controls {
    pub im_start: u32,
    pub im_end: u32,
    pub tool_call: u32,
    pub tool_call_end: u32,
}

impl Controls {
    pub fn of(tok: &QwenTokenizer) -> Result<Controls, String> {
        let id = |t: &str| tok.special(t).ok_or_else(|| format!("the tokenizer has no {t} token"));
        Ok(Controls {
            im_start: id("<|im_start|>")?,
            im_end: id("<|im_end|>")?,
            tool_call: id("<tool_call>")?,
            tool_call_end: id("</tool_call>")?,
        })
    }
}

enum Part {
    Text(String),
    Control(u32),
}

struct Prompt {
    parts: Vec<Part>,
}

impl Prompt {
    fn text(&mut self, s: &str) {
        match self.parts.last_mut() {
            Some(Part::Text(t)) => t.push_str(s),
            _ => self.parts.push(Part::Text(s.to_string())),
        }
    }
    fn control(&mut self, id: u32) {
        self.parts.push(Part::Control(id));
    }
    fn tokens(&self, tok: &QwenTokenizer) -> Vec<u32> {
        let mut out = Vec::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.extend(tok.encode(t)),
                Part::Control(id) => out.push(*id),
            }
        }
        out
    }
}

/// JSON as Python's `json.dumps` writes it (", " and ": " separators, non-ASCII kept), which is
/// what the template's `tojson` produced in the model's training data.
pub fn py_json(v: &Value) -> String {
    let mut s = String::new();
    write_py_json(v, &mut s);
    s
}

fn write_py_json(v: &Value, out: &mut String) {
    match v {
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_json(x, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_py_json(x, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn tools_block(tools: &[ToolSpec]) -> String {
    let mut s = String::from(
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        let mut f = serde_json::Map::new();
        f.insert("name".into(), Value::String(t.name.clone()));
        f.insert("description".into(), Value::String(t.description.clone()));
        f.insert("parameters".into(), t.parameters.clone());
        let mut o = serde_json::Map::new();
        o.insert("type".into(), Value::String("function".into()));
        o.insert("function".into(), Value::Object(f));
        s.push('\n');
        s.push_str(&py_json(&Value::Object(o)));
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// The prompt for `req`; with `generate`, it ends in the assistant's header (the reply follows).
pub fn prompt_tokens(tok: &QwenTokenizer, c: &Controls, req: &ChatRequest, generate: bool) -> Vec<u32> {
    let mut p = Prompt { parts: Vec::new() };
    let msgs: &[Message] = &req.messages;
    let (system, rest) = match msgs.first() {
        Some(m) if m.role == Role::System => (m.content.as_str(), &msgs[1..]),
        _ => (DEFAULT_SYSTEM, msgs),
    };
    p.control(c.im_start);
    p.text("system\n");
    p.text(system);
    if !req.tools.is_empty() {
        p.text(&tools_block(&req.tools));
    }
    p.control(c.im_end);
    p.text("\n");
    for (i, m) in rest.iter().enumerate() {
        match m.role {
            Role::User | Role::System => {
                p.control(c.im_start);
                p.text(role_name(m.role));
                p.text("\n");
                p.text(&m.content);
                p.control(c.im_end);
                p.text("\n");
            }
            Role::Assistant => {
                p.control(c.im_start);
                p.text("assistant");
                if m.tool_calls.is_empty() {
                    p.text("\n");
                    p.text(&m.content);
                } else {
                    if !m.content.is_empty() {
                        p.text("\n");
                        p.text(&m.content);
                    }
                    for call in &m.tool_calls {
                        p.text("\n");
                        p.control(c.tool_call);
                        // Arguments are JSON text; written back as the object they encode.
                        let args = serde_json::from_str::<Value>(&call.arguments)
                            .map(|v| py_json(&v))
                            .unwrap_or_else(|_| py_json(&Value::String(call.arguments.clone())));
                        p.text(&format!(
                            "\n{{\"name\": {}, \"arguments\": {args}}}\n",
                            Value::String(call.name.clone())
                        ));
                        p.control(c.tool_call_end);
                    }
                }
                p.control(c.im_end);
                p.text("\n");
            }
            Role::Tool => {
                if i == 0 || rest[i - 1].role != Role::Tool {
                    p.control(c.im_start);
                    p.text("user");
                }
                p.text("\n<tool_response>\n");
                p.text(&m.content);
                p.text("\n</tool_response>");
                if i + 1 == rest.len() || rest[i + 1].role != Role::Tool {
                    p.control(c.im_end);
                    p.text("\n");
                }
            }
        }
    }
    if generate {
        p.control(c.im_start);
        p.text("assistant\n");
    }
    p.tokens(tok)
}
