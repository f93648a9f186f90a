//! The OpenAI chat-completions wire format, sans-IO: the request body, and the
//! streamed chunks (`data:` JSON of an event stream) decoded into text deltas,
//! whole tool calls (their `arguments` arrive in fragments, keyed by index)
//! and the end of the reply. Garbage from the server is an error value.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text as the model wrote it (validated against the tool's schema before anything runs).
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Assistant messages that called tools.
    pub tool_calls: Vec<ToolCall>,
    /// Tool results: the call they answer.
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }

    fn to_json(&self) -> Value {
        let mut m = json!({ "role": self.role, "content": self.content });
        if !self.tool_calls.is_empty() {
            m["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }))
                .collect();
        }
        if let Some(id) = &self.tool_call_id {
            m["tool_call_id"] = json!(id);
        }
        m
    }
}

/// A function the model may call (OpenAI function-tool shape).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// Whether the model may, must or must not call a tool (OpenAI `tool_choice`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ToolChoice {
    #[default]
    Auto,
    None,
    Required,
    /// This function, by name.
    Function(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
}

/// The streaming request body for `POST {base}/chat/completions`.
pub fn request_body(model: &str, req: &ChatRequest) -> Value {
    let mut body = json!({
        "model": model,
        "stream": true,
        "messages": req.messages.iter().map(Message::to_json).collect::<Vec<_>>(),
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({ "type": "function", "function": { "name": t.name, "description": t.description, "parameters": t.parameters } }))
            .collect();
        match &req.tool_choice {
            ToolChoice::Auto => {}
            ToolChoice::None => body["tool_choice"] = json!("none"),
            ToolChoice::Required => body["tool_choice"] = json!("required"),
            ToolChoice::Function(name) => {
                body["tool_choice"] = json!({ "type": "function", "function": { "name": name } })
            }
        }
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(n) = req.max_tokens {
        body["max_tokens"] = json!(n);
    }
    body
}

#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// More of the reply's text.
    Text(String),
    /// A complete tool call.
    ToolCall(ToolCall),
    /// The reply is complete: `stop`, `length`, `tool_calls`, …; with its token counts where the
    /// backend knows them.
    Done { finish_reason: String, usage: Option<Usage> },
}

/// A reply's token counts (OpenAI's `usage`): its prompt, the part of the prompt found already
/// computed (a cache: earlier turns, a warm-up), and the tokens it generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatStreamError {
    #[error("the server sent a chunk that is not chat-completion JSON: {0}")]
    BadChunk(String),
    #[error("the server reported an error: {0}")]
    Server(String),
    #[error("tool call {index} has no {what}")]
    IncompleteToolCall { index: u64, what: &'static str },
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolDelta>,
}

#[derive(Deserialize)]
struct ToolDelta {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Default)]
struct PartialCall {
    index: u64,
    id: Option<String>,
    name: Option<String>,
    arguments: String,
}

/// Decodes the `data:` payloads of one streamed reply.
#[derive(Default)]
pub struct ChatStreamDecoder {
    calls: Vec<PartialCall>,
    done: bool,
}

impl ChatStreamDecoder {
    pub fn new() -> ChatStreamDecoder {
        ChatStreamDecoder::default()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// One event's data; returns what it completes.
    pub fn push(&mut self, data: &str) -> Result<Vec<LlmEvent>, ChatStreamError> {
        let mut out = Vec::new();
        if self.done {
            return Ok(out);
        }
        if data.trim() == "[DONE]" {
            // Some servers end without a finish_reason: the reply is whatever came.
            self.finish("stop".into(), &mut out)?;
            return Ok(out);
        }
        let chunk: Chunk = serde_json::from_str(data)
            .map_err(|e| ChatStreamError::BadChunk(format!("{e}: {}", truncate(data, 200))))?;
        if let Some(e) = chunk.error {
            return Err(ChatStreamError::Server(truncate(&e.to_string(), 500)));
        }
        for choice in chunk.choices {
            if let Some(d) = choice.delta {
                if let Some(t) = d.content.filter(|t| !t.is_empty()) {
                    out.push(LlmEvent::Text(t));
                }
                for td in d.tool_calls {
                    let index = td.index.unwrap_or(0);
                    let pos = match self.calls.iter().position(|c| c.index == index) {
                        Some(p) => p,
                        None => {
                            self.calls.push(PartialCall { index, ..Default::default() });
                            self.calls.len() - 1
                        }
                    };
                    let call = &mut self.calls[pos];
                    if let Some(id) = td.id.filter(|s| !s.is_empty()) {
                        call.id = Some(id);
                    }
                    if let Some(f) = td.function {
                        if let Some(n) = f.name.filter(|s| !s.is_empty()) {
                            call.name = Some(n);
                        }
                        if let Some(a) = f.arguments {
                            call.arguments.push_str(&a);
                        }
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish(reason, &mut out)?;
            }
        }
        Ok(out)
    }

    fn finish(&mut self, finish_reason: String, out: &mut Vec<LlmEvent>) -> Result<(), ChatStreamError> {
        for (n, c) in std::mem::take(&mut self.calls).into_iter().enumerate() {
            let name = c.name.ok_or(ChatStreamError::IncompleteToolCall { index: c.index, what: "name" })?;
            // Some servers leave the id out: make one, so tool results can refer to it.
            let id = c.id.unwrap_or_else(|| format!("call_{n}"));
            out.push(LlmEvent::ToolCall(ToolCall {
                id,
                name,
                arguments: if c.arguments.is_empty() { "{}".into() } else { c.arguments },
            }));
        }
        out.push(LlmEvent::Done { finish_reason, usage: None });
        self.done = true;
        Ok(())
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_deltas_and_the_end() {
        let mut d = ChatStreamDecoder::new();
        let mut all = Vec::new();
        for data in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"We open at "},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"8 on Saturday."},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ] {
            all.extend(d.push(data).unwrap());
        }
        assert_eq!(
            all,
            vec![
                LlmEvent::Text("We open at ".into()),
                LlmEvent::Text("8 on Saturday.".into()),
                LlmEvent::Done { finish_reason: "stop".into(), usage: None }
            ]
        );
    }

    #[test]
    fn tool_call_fragments_are_joined_by_index() {
        let mut d = ChatStreamDecoder::new();
        let mut all = Vec::new();
        for data in [
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"book","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"lookup","arguments":"{\"q\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"day\": \"Sat"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"urday\"}"}},{"index":1,"function":{"arguments":"1}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
        ] {
            all.extend(d.push(data).unwrap());
        }
        assert_eq!(
            all,
            vec![
                LlmEvent::ToolCall(ToolCall {
                    id: "call_a".into(),
                    name: "book".into(),
                    arguments: "{\"day\": \"Saturday\"}".into()
                }),
                LlmEvent::ToolCall(ToolCall {
                    id: "call_b".into(),
                    name: "lookup".into(),
                    arguments: "{\"q\":1}".into()
                }),
                LlmEvent::Done { finish_reason: "tool_calls".into(), usage: None },
            ]
        );
        assert!(d.is_done());
        assert!(d.push(r#"{"choices":[{"delta":{"content":"late"}}]}"#).unwrap().is_empty(), "nothing after the end");
    }

    #[test]
    fn garbage_and_server_errors_are_values() {
        let mut d = ChatStreamDecoder::new();
        assert!(matches!(d.push("<html>502</html>"), Err(ChatStreamError::BadChunk(_))));
        assert!(
            matches!(d.push(r#"{"error":{"message":"overloaded"}}"#), Err(ChatStreamError::Server(m)) if m.contains("overloaded"))
        );
        let mut d = ChatStreamDecoder::new();
        d.push(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#).unwrap();
        assert_eq!(d.push("[DONE]"), Err(ChatStreamError::IncompleteToolCall { index: 0, what: "name" }));
    }

    #[test]
    fn the_request_body_has_the_openai_shape() {
        let mut assistant = Message::new(Role::Assistant, "");
        assistant.tool_calls.push(ToolCall { id: "c1".into(), name: "hours".into(), arguments: "{}".into() });
        let mut tool = Message::new(Role::Tool, "{\"sat\":\"8-14\"}");
        tool.tool_call_id = Some("c1".into());
        let req = ChatRequest {
            messages: vec![
                Message::new(Role::System, "You are Sunny Bakery's receptionist."),
                Message::new(Role::User, "Saturday?"),
                assistant,
                tool,
            ],
            tools: vec![ToolSpec {
                name: "hours".into(),
                description: "Opening hours".into(),
                parameters: json!({"type": "object", "properties": {}}),
            }],
            tool_choice: ToolChoice::Function("hours".into()),
            temperature: Some(0.2),
            max_tokens: Some(120),
        };
        let b = request_body("qwen", &req);
        assert_eq!(b["stream"], true);
        assert_eq!(b["messages"][0]["role"], "system");
        assert_eq!(b["messages"][2]["tool_calls"][0]["function"]["name"], "hours");
        assert_eq!(b["tool_choice"]["function"]["name"], "hours");
        assert_eq!(b["messages"][3]["tool_call_id"], "c1");
        assert_eq!(b["tools"][0]["type"], "function");
        assert_eq!(b["max_tokens"], 120);
    }
}
