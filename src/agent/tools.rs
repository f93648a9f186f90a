//! Tools the language model may call during a call: declared per agent in the YAML
//! (`agents.*.llm.tools`, the shape of OpenAI function tools), validated against their JSON
//! Schema before anything runs, and run off the media loop — an `http` webhook on the driver's
//! `ToolRunner`, the built-ins (`hangup`, `set_variable`, `send_dtmf`) at once, `transfer` through
//! the SIP side once the agent is quiet. The agent stays sans-IO: its runner starts a
//! `ToolJob` and the agent polls it.
//!
//! What the model gets back is always a JSON object: the webhook's answer
//! (`{"status": 200, "body": …}`, the body cut at `max_response_bytes`) or
//! `{"error": …}` — invalid arguments, a timeout, a 5xx after the retries — so
//! it can tell the caller, never leaving silence.

use crate::config::ToolConfig;
use crate::models::llm::chat::{ToolCall, ToolSpec};
use crate::models::llm::constrain::{Check, ToolGrammar};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::mpsc;

pub use super::tool_load::check_config;

/// A tool ready to run: its config with the header secrets resolved.
#[derive(Debug, Clone)]
pub struct Tool {
    pub config: ToolConfig,
    /// Header values with `${env:…}` / `${file:…}` filled in.
    pub headers: Vec<(String, String)>,
}

/// An agent's tools (shared by its calls).
#[derive(Debug, Clone, Default)]
pub struct ToolSet {
    pub(super) tools: Vec<Tool>,
}

/// The digits of a `send_dtmf` call, if they are all DTMF keys.
pub fn dtmf_digits(args: &Value) -> Result<String, String> {
    let d: String = args
        .get("digits")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ',' && *c != '-')
        .collect();
    if d.is_empty()
        || d.len() > 32
        || !d.chars().all(|c| matches!(c.to_ascii_uppercase(), '0'..='9' | '*' | '#' | 'A'..='D'))
    {
        return Err(format!("`{d}` is not 1-32 DTMF keys (0-9, *, #, A-D)"));
    }
    Ok(d.to_ascii_uppercase())
}

impl ToolSet {
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.config.name == name)
    }

    /// The tools offered now: those whose `when` holds for the call's variables.
    pub fn offered(&self, vars: &BTreeMap<String, String>) -> Vec<ToolSpec> {
        self.tools
            .iter()
            .filter(|t| t.config.when.iter().all(|(k, v)| vars.get(k) == Some(v)))
            .map(|t| ToolSpec {
                name: t.config.name.clone(),
                description: t.config.description.clone(),
                parameters: t.config.parameters.clone(),
            })
            .collect()
    }

    /// The tool a call names and its arguments, if the tool is offered now and the arguments match
    /// its schema; otherwise the error the model is told.
    pub fn validate(&self, call: &ToolCall, vars: &BTreeMap<String, String>) -> Result<(&Tool, Value), String> {
        let tool = self
            .tools
            .iter()
            .find(|t| t.config.name == call.name)
            .ok_or_else(|| format!("there is no tool named `{}`", call.name))?;
        if !tool.config.when.iter().all(|(k, v)| vars.get(k) == Some(v)) {
            return Err(format!("`{}` is not available yet", call.name));
        }
        let args: Value = if call.arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&call.arguments).map_err(|e| format!("the arguments are not JSON: {e}"))?
        };
        // The same checker the embedded model decodes with, on a canonical rendering.
        let text = format!(
            "{{\"name\": {}, \"arguments\": {}}}",
            json!(call.name),
            serde_json::to_string(&args).unwrap_or_default()
        );
        let g = ToolGrammar { tools: vec![(tool.config.name.as_str(), &tool.config.parameters)] };
        match g.check(text.as_bytes()) {
            Check::Complete => Ok((tool, args)),
            _ => Err(format!(
                "the arguments {} do not match the parameters schema of `{}`",
                redact(&args, &tool.config.secret_arguments),
                call.name
            )),
        }
    }
}

impl ToolSet {
    /// A call's arguments as the record and the log may show them, also when they are invalid:
    /// the named tool's secret fields replaced, text that is not JSON not shown at all.
    pub fn shown_arguments(&self, call: &ToolCall) -> String {
        let secret =
            self.tools.iter().find(|t| t.config.name == call.name).map_or(&[][..], |t| &t.config.secret_arguments[..]);
        match serde_json::from_str::<Value>(&call.arguments) {
            Ok(v) => redact(&v, secret),
            Err(_) => "(not JSON; not shown)".into(),
        }
    }
}

/// The arguments for the record and the log: secret fields replaced.
pub fn redact(args: &Value, secret: &[String]) -> String {
    let mut a = args.clone();
    if let Some(o) = a.as_object_mut() {
        for k in secret {
            if let Some(v) = o.get_mut(k) {
                *v = json!("[redacted]");
            }
        }
    }
    a.to_string()
}

/// `{name}` in a URL from the arguments, then the call's variables, URL-encoded.
pub fn fill_url(template: &str, args: &Value, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').ok_or("`{` without `}` in the url")? + i;
        let key = &rest[i + 1..end];
        let value = match args.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(v) if !v.is_null() => v.to_string(),
            _ => vars.get(key).cloned().ok_or_else(|| {
                format!("the url needs `{key}`, which neither the arguments nor the call's variables have")
            })?,
        };
        out.extend(value.bytes().map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        }));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// How a tool call ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// `ok`, `error` (the backend answered badly), `timeout`, `invalid_arguments`.
    pub outcome: &'static str,
    /// What the model is given (JSON).
    pub content: String,
}

impl ToolOutcome {
    pub fn ok(content: Value) -> ToolOutcome {
        ToolOutcome { outcome: "ok", content: content.to_string() }
    }
    pub fn error(outcome: &'static str, message: &str) -> ToolOutcome {
        ToolOutcome { outcome, content: json!({ "error": message }).to_string() }
    }
}

/// A tool call in flight on its runner: the outcome arrives on a channel.
pub struct ToolJob {
    rx: mpsc::Receiver<ToolOutcome>,
    /// Stops the runner's work when the agent drops the job (the call ended, the reply was cut).
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl ToolJob {
    /// A job whose outcome `rx` will carry; `on_drop` stops its work if it is dropped first.
    pub fn new(rx: mpsc::Receiver<ToolOutcome>, on_drop: Option<Box<dyn FnOnce() + Send>>) -> ToolJob {
        ToolJob { rx, on_drop }
    }

    /// A job already done.
    pub fn ready(o: ToolOutcome) -> ToolJob {
        let (tx, rx) = mpsc::channel();
        let _ = tx.send(o);
        ToolJob { rx, on_drop: None }
    }

    /// The outcome, once there is one (never waits).
    pub fn poll(&mut self) -> Option<ToolOutcome> {
        match self.rx.try_recv() {
            Ok(o) => Some(o),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => {
                Some(ToolOutcome::error("error", "the tool's task ended without an answer"))
            }
        }
    }
}

impl Drop for ToolJob {
    fn drop(&mut self) {
        if let Some(stop) = self.on_drop.take() {
            stop();
        }
    }
}

/// Runs `http` tools for the agent: the driver implements it (`server::tools::HttpTools`, on the
/// async runtime), a test with a script. The agent starts no task and reads no clock of its own.
pub trait ToolRunner: Send + Sync + std::fmt::Debug {
    /// Start `tool`'s request with its checked `args` and the call's variables.
    fn start_http(&self, tool: &Tool, args: Value, vars: &BTreeMap<String, String>) -> ToolJob;
}

#[cfg(test)]
mod tests {
    use super::super::tool_load::resolve_secret;
    use super::*;
    use std::time::Duration;

    fn tool(yaml: &str) -> ToolConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const ORDER: &str = "name: check_order\ndescription: Look up an order\ntype: http\nurl: http://127.0.0.1:9/orders/{order_number}?agent={agent}\n\
parameters:\n  type: object\n  properties:\n    order_number: {type: string}\n    card: {type: string}\n  required: [order_number]\nsecret_arguments: [card]\n";

    #[test]
    fn arguments_are_checked_against_the_schema_before_anything_runs() {
        let set = ToolSet::load(&[tool(ORDER)]).unwrap();
        let vars = BTreeMap::new();
        let call = |args: &str| ToolCall { id: "c1".into(), name: "check_order".into(), arguments: args.into() };
        let (t, args) = set.validate(&call("{\"order_number\":  \"4711\"}"), &vars).unwrap();
        assert_eq!((t.config.name.as_str(), args), ("check_order", json!({"order_number": "4711"})));
        let e = set.validate(&call("{\"order_number\": 4711}"), &vars).unwrap_err();
        assert!(e.contains("do not match"), "{e}");
        assert!(set.validate(&call("{}"), &vars).unwrap_err().contains("do not match"), "required");
        assert!(set.validate(&call("{\"order_number\": \"1\", \"x\": 1}"), &vars).is_err(), "unknown key");
        assert!(set.validate(&call("order 4711"), &vars).unwrap_err().contains("not JSON"));
        let e = set.validate(&call("{\"order_number\": 5, \"card\": \"4111 1111\"}"), &vars).unwrap_err();
        assert!(!e.contains("4111") && e.contains("[redacted]"), "secrets never reach the message: {e}");
        let other = ToolCall { id: "c2".into(), name: "launch".into(), arguments: "{}".into() };
        assert!(set.validate(&other, &vars).unwrap_err().contains("no tool named"));
    }

    #[test]
    fn tools_with_a_condition_appear_once_it_holds() {
        let mut gated = tool(ORDER);
        gated.when.insert("verified".into(), "yes".into());
        let set = ToolSet::load(&[gated]).unwrap();
        let mut vars = BTreeMap::new();
        assert!(set.offered(&vars).is_empty());
        let call =
            ToolCall { id: "c1".into(), name: "check_order".into(), arguments: "{\"order_number\":\"1\"}".into() };
        assert!(set.validate(&call, &vars).unwrap_err().contains("not available"));
        vars.insert("verified".into(), "yes".into());
        assert_eq!(set.offered(&vars).len(), 1);
        assert!(set.validate(&call, &vars).is_ok());
    }

    #[test]
    fn urls_are_filled_and_encoded_and_secrets_resolved() {
        let vars: BTreeMap<String, String> = [("agent".to_string(), "front desk".to_string())].into();
        let url =
            fill_url("http://h/orders/{order_number}?agent={agent}", &json!({"order_number": "A/1 2"}), &vars).unwrap();
        assert_eq!(url, "http://h/orders/A%2F1%202?agent=front%20desk");
        assert!(fill_url("http://h/{missing}", &json!({}), &vars).unwrap_err().contains("missing"));
        std::env::set_var("SB_TOOL_TEST_TOKEN", "s3cret");
        assert_eq!(resolve_secret("Bearer ${env:SB_TOOL_TEST_TOKEN}").unwrap(), "Bearer s3cret");
        assert!(resolve_secret("${env:SB_TOOL_TEST_NOT_SET}").unwrap_err().contains("not set"));
        assert!(resolve_secret("${vault:x}").is_err());
        assert_eq!(redact(&json!({"card": "4111", "n": 1}), &["card".into()]), "{\"card\":\"[redacted]\",\"n\":1}");
    }

    #[test]
    fn the_config_refuses_what_cannot_run() {
        assert!(check_config(&tool(ORDER)).is_ok());
        let bad = |patch: &str| check_config(&tool(&format!("{ORDER}{patch}"))).unwrap_err().0;
        assert_eq!(bad("method: FETCH\n"), "method");
        let mut t = tool(ORDER);
        t.url = Some("ftp://x".into());
        assert_eq!(check_config(&t).unwrap_err().0, "url");
        t.url = None;
        assert_eq!(check_config(&t).unwrap_err().0, "url");
        let mut t = tool(ORDER);
        t.name = "check order".into();
        assert_eq!(check_config(&t).unwrap_err().0, "name");
        let mut t = tool(ORDER);
        t.parameters = json!({"type": "string"});
        assert_eq!(check_config(&t).unwrap_err().0, "parameters");
        let h = tool("name: bye\ndescription: End the call\ntype: hangup\n");
        assert!(check_config(&h).is_ok());
        // send_dtmf: the standard `digits` parameter when none is given; a schema without it is refused.
        let d = tool("name: press\ndescription: Press keys\ntype: send_dtmf\n");
        assert!(check_config(&d).is_ok());
        let set = ToolSet::load(&[d]).unwrap();
        assert_eq!(set.offered(&BTreeMap::new())[0].parameters["required"], json!(["digits"]));
        let mut bad = tool("name: press\ndescription: Press keys\ntype: send_dtmf\n");
        bad.parameters = json!({"type": "object", "properties": {"keys": {"type": "string"}}});
        assert_eq!(check_config(&bad).unwrap_err().0, "parameters");
        // transfer: a sip: target, and only there; it waits 30 s for the target unless told otherwise.
        let tr = tool("name: human\ndescription: Put through\ntype: transfer\ntarget: \"sip:desk@pbx.example\"\n");
        assert!(check_config(&tr).is_ok());
        assert_eq!(tr.timeout(), Duration::from_secs(30));
        assert_eq!(tool(ORDER).timeout(), Duration::from_secs(5));
        let mut t = tr.clone();
        t.target = None;
        assert_eq!(check_config(&t).unwrap_err().0, "target");
        t.target = Some("https://pbx.example/desk".into());
        assert_eq!(check_config(&t).unwrap_err().0, "target");
        let mut t = tool(ORDER);
        t.target = Some("sip:desk@pbx.example".into());
        assert_eq!(check_config(&t).unwrap_err().0, "target");
        assert_eq!(dtmf_digits(&json!({"digits": "1, 2, 3#"})).unwrap(), "123#");
        assert!(dtmf_digits(&json!({"digits": "12x"})).is_err());
        assert!(dtmf_digits(&json!({})).is_err());
    }
}
