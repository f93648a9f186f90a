//! Reading an agent's tools from the config, once at start-up: the checks that refuse what
//! cannot run (naming the key), and the header secrets (`${env:…}`, `${file:…}`) read in.

use super::tools::{Tool, ToolSet};
use crate::config::{ToolConfig, ToolKind};
use crate::models::llm::constrain::{Check, ToolGrammar};
use serde_json::{json, Value};

/// `Err((key under the tool, message))` for a tool the config must refuse.
pub fn check_config(t: &ToolConfig) -> Result<(), (&'static str, String)> {
    if t.name.is_empty()
        || !t.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        || t.name.len() > 64
    {
        return Err(("name", format!("`{}`: a tool name is 1-64 of a-z, A-Z, 0-9, _ and -", t.name)));
    }
    if t.parameters.get("type").and_then(Value::as_str) != Some("object") {
        return Err(("parameters", "the parameters schema must be `type: object`".into()));
    }
    // The schema must be one the constrained decoder understands: an empty call must be judged.
    let g = ToolGrammar { tools: vec![(t.name.as_str(), &t.parameters)] };
    if g.check(format!("{{\"name\": \"{}\", \"arguments\": ", t.name).as_bytes()) == Check::Invalid {
        return Err(("parameters", "this schema cannot be checked".into()));
    }
    match t.kind {
        ToolKind::Http => {
            let url = t.url.as_deref().ok_or(("url", "an http tool needs `url`".to_string()))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(("url", format!("`{url}` is not an http:// or https:// URL")));
            }
            let m = t.method.as_deref().unwrap_or("POST");
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m) {
                return Err(("method", format!("`{m}`: one of GET, POST, PUT, PATCH, DELETE")));
            }
            for v in t.headers.values() {
                resolve_secret(v).map_err(|e| ("headers", e))?;
            }
        }
        ToolKind::SendDtmf
            if t.parameters.pointer("/properties/digits/type").and_then(Value::as_str) != Some("string")
                && has_properties(&t.parameters) =>
        {
            return Err((
                "parameters",
                "send_dtmf takes a `digits` string (leave `parameters` out for the standard one)".into(),
            ));
        }
        ToolKind::Hangup | ToolKind::SetVariable | ToolKind::SendDtmf | ToolKind::Transfer => {
            if t.url.is_some() || t.method.is_some() || !t.headers.is_empty() {
                return Err(("url", "only http tools take url, method and headers".into()));
            }
        }
    }
    if t.is_async && t.kind != ToolKind::Http {
        return Err(("async", "only http tools run asynchronously".into()));
    }
    match (t.kind, t.target.as_deref()) {
        (ToolKind::Transfer, None) => return Err(("target", "a transfer tool needs `target` (a sip: URI)".into())),
        (ToolKind::Transfer, Some(u)) if !(u.starts_with("sip:") || u.starts_with("sips:")) => {
            return Err(("target", format!("`{u}` is not a sip: or sips: URI")));
        }
        (ToolKind::Transfer, Some(_)) | (_, None) => {}
        (_, Some(_)) => return Err(("target", "only transfer tools take `target`".into())),
    }
    Ok(())
}

fn has_properties(schema: &Value) -> bool {
    schema.get("properties").and_then(Value::as_object).is_some_and(|p| !p.is_empty())
}

/// The parameters of a `send_dtmf` tool declared without its own.
fn dtmf_parameters() -> Value {
    json!({"type": "object", "properties": {"digits": {"type": "string", "description": "the keys to press, in order: 0-9, *, #, A-D"}}, "required": ["digits"]})
}

/// `${env:NAME}` and `${file:PATH}` in a header value, filled in.
pub(super) fn resolve_secret(v: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').ok_or_else(|| "`${` without `}` in a header value".to_string())? + i;
        let inner = &rest[i + 2..end];
        let value = match inner.split_once(':') {
            Some(("env", name)) => {
                std::env::var(name).map_err(|_| format!("the environment variable {name} is not set"))?
            }
            Some(("file", path)) => {
                std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?.trim().to_string()
            }
            _ => return Err(format!("`${{{inner}}}`: use ${{env:NAME}} or ${{file:PATH}}")),
        };
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ToolSet {
    /// The agent's tools, with their secrets read (a missing variable or file is an error).
    pub fn load(configs: &[ToolConfig]) -> Result<ToolSet, String> {
        let tools = configs
            .iter()
            .map(|c| {
                let headers = c
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        Ok((k.clone(), resolve_secret(v).map_err(|e| format!("tool {}: header {k}: {e}", c.name))?))
                    })
                    .collect::<Result<_, String>>()?;
                let mut config = c.clone();
                if config.kind == ToolKind::SendDtmf && !has_properties(&config.parameters) {
                    config.parameters = dtmf_parameters();
                }
                Ok(Tool { config, headers })
            })
            .collect::<Result<_, String>>()?;
        Ok(ToolSet { tools })
    }
}
