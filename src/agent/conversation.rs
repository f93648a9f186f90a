//! One call's conversation, modelled on an OpenAI Realtime session: the
//! agent's instructions (with call variables filled in), then items in order
//! — user turns, assistant replies, tool calls and their results — and the
//! request each reply is generated from. Sans-IO.
//!
//! The context budget: when the items no longer fit (`max_context_tokens`),
//! the oldest items are left out of the request (never the instructions, and
//! never half of a tool call/result pair), like the Realtime API's default
//! truncation; it can be switched off. Token counts are estimated (4 bytes a
//! token, rounded up, plus 4 per message) until the local model's tokenizer
//! is in, which over-counts English slightly: the budget errs on the safe side.

use crate::models::llm::chat::{ChatRequest, Message, Role, ToolCall, ToolSpec};
use std::collections::BTreeMap;

/// `{name}` placeholders in instructions; `{{` and `}}` are literal braces.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        rest = &rest[i + 1..];
        if rest.as_bytes().first() == Some(&c) {
            out.push(c as char);
            rest = &rest[1..];
            continue;
        }
        if c == b'}' {
            return Err("a `}` without its `{` (write `}}` for a literal brace)".into());
        }
        let end = rest.find('}').ok_or("a `{` without its `}` (write `{{` for a literal brace)")?;
        let name = rest[..end].trim();
        let value = vars.get(name).ok_or_else(|| {
            format!(
                "unknown variable `{{{name}}}` (known: {})",
                vars.keys().map(|k| format!("{{{k}}}")).collect::<Vec<_>>().join(", ")
            )
        })?;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Estimated tokens of a message (see the module note).
pub fn estimate_tokens(m: &Message) -> usize {
    let bytes = m.content.len() + m.tool_calls.iter().map(|c| c.name.len() + c.arguments.len()).sum::<usize>();
    bytes.div_ceil(4) + 4
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: u64,
    pub message: Message,
    /// Assistant items cut short by the caller: the text they did hear.
    pub truncated: bool,
}

#[derive(Clone)]
pub struct Conversation {
    instructions: String,
    items: Vec<Item>,
    next_id: u64,
    /// `None`: no truncation (the request may exceed the model's context).
    max_context_tokens: Option<usize>,
    /// Bumped by every change, so work begun on a copy can tell whether it is still current.
    revision: u64,
}

impl Conversation {
    pub fn new(instructions: String, max_context_tokens: Option<usize>) -> Conversation {
        Conversation { instructions, items: Vec::new(), next_id: 0, max_context_tokens, revision: 0 }
    }

    fn push(&mut self, message: Message) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.revision += 1;
        self.items.push(Item { id, message, truncated: false });
        id
    }

    pub fn add_user(&mut self, text: &str) -> u64 {
        self.push(Message::new(Role::User, text))
    }

    pub fn add_assistant(&mut self, text: &str, tool_calls: Vec<ToolCall>) -> u64 {
        let mut m = Message::new(Role::Assistant, text);
        m.tool_calls = tool_calls;
        self.push(m)
    }

    /// A note for the model in the middle of the conversation (an asynchronous tool's result).
    pub fn add_system(&mut self, text: &str) -> u64 {
        self.push(Message::new(Role::System, text))
    }

    pub fn add_tool_result(&mut self, call_id: &str, content: &str) -> u64 {
        let mut m = Message::new(Role::Tool, content);
        m.tool_call_id = Some(call_id.to_string());
        self.push(m)
    }

    /// The caller interrupted: the assistant item keeps only what was heard
    /// (Realtime's `conversation.item.truncate`).
    pub fn truncate_assistant(&mut self, id: u64, heard: &str) -> bool {
        match self.items.iter_mut().find(|i| i.id == id && i.message.role == Role::Assistant) {
            Some(i) => {
                i.message.content = heard.to_string();
                i.truncated = true;
                self.revision += 1;
                true
            }
            None => false,
        }
    }

    /// Changes so far (items added, truncated).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The request for the next reply: instructions, then as many of the newest items as fit.
    pub fn request(&self, tools: &[ToolSpec], temperature: Option<f32>, max_tokens: Option<u32>) -> ChatRequest {
        let system = Message::new(Role::System, self.instructions.clone());
        let mut budget = self
            .max_context_tokens
            .map(|b| b.saturating_sub(estimate_tokens(&system) + max_tokens.unwrap_or(0) as usize));
        // Walk back from the newest item; a tool result is only kept with the call before it.
        let mut first = self.items.len();
        while first > 0 {
            let mut start = first - 1;
            while start > 0 && self.items[start].message.role == Role::Tool {
                start -= 1;
            }
            let cost: usize = self.items[start..first].iter().map(|i| estimate_tokens(&i.message)).sum();
            if let Some(b) = &mut budget {
                if cost > *b {
                    break;
                }
                *b -= cost;
            }
            first = start;
        }
        // Never start the context with an orphaned assistant/tool item: begin at a user turn if one fits.
        while first < self.items.len()
            && self.items[first].message.role != Role::User
            && self.items[first..].iter().any(|i| i.message.role == Role::User)
        {
            first += 1;
        }
        let mut messages = vec![system];
        messages.extend(self.items[first..].iter().map(|i| i.message.clone()));
        ChatRequest { messages, tools: tools.to_vec(), tool_choice: Default::default(), temperature, max_tokens }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("caller", "+4930123"), ("date", "2026-11-24")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn instructions_take_call_variables() {
        assert_eq!(
            render("Caller {caller} on { date }. {{braces}}", &vars()).unwrap(),
            "Caller +4930123 on 2026-11-24. {braces}"
        );
        let e = render("Hi {name}", &vars()).unwrap_err();
        assert!(e.contains("unknown variable `{name}`") && e.contains("{caller}"), "{e}");
        assert!(render("oops {caller", &vars()).is_err());
        assert!(render("oops }", &vars()).is_err());
    }

    #[test]
    fn items_in_order_and_the_request_shape() {
        let mut c = Conversation::new("You are Sunny Bakery.".into(), None);
        c.add_user("Are you open on Saturday?");
        let a = c.add_assistant("Yes, from eight to two.", vec![]);
        c.add_user("And Sunday?");
        let r = c.request(&[], Some(0.2), Some(100));
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, vec![Role::System, Role::User, Role::Assistant, Role::User]);
        assert!(c.truncate_assistant(a, "Yes, from eight"));
        assert_eq!(c.request(&[], None, None).messages[2].content, "Yes, from eight");
        assert!(c.items()[1].truncated);
        assert!(!c.truncate_assistant(0, "x"), "only assistant items are truncated");
    }

    #[test]
    fn the_oldest_items_go_first_and_tool_pairs_stay_whole() {
        let mut c = Conversation::new("sys".into(), Some(60));
        for i in 0..10 {
            c.add_user(&format!("question number {i} about the opening hours"));
            c.add_assistant(&format!("answer number {i}"), vec![]);
        }
        let r = c.request(&[], None, Some(10));
        let total: usize = r.messages.iter().map(estimate_tokens).sum();
        assert!(total + 10 <= 60, "fits the budget: {total}");
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(r.messages[1].role, Role::User, "starts at a user turn");
        assert_eq!(r.messages.last().unwrap().content, "answer number 9", "the newest is kept");

        let mut c = Conversation::new("sys".into(), Some(45));
        c.add_user("book a table for two on saturday");
        c.add_assistant(
            "",
            vec![ToolCall {
                id: "c1".into(),
                name: "book".into(),
                arguments: "{\"people\":2,\"day\":\"saturday\"}".into(),
            }],
        );
        c.add_tool_result("c1", "{\"ok\":true,\"time\":\"19:00\"}");
        let r = c.request(&[], None, None);
        let has_result = r.messages.iter().any(|m| m.role == Role::Tool);
        let has_call = r.messages.iter().any(|m| !m.tool_calls.is_empty());
        assert_eq!(has_result, has_call, "a tool result never appears without its call: {:?}", r.messages);

        // Switched off: everything, whatever the size.
        let mut c = Conversation::new("sys".into(), None);
        for i in 0..50 {
            c.add_user(&"x".repeat(100 + i));
        }
        assert_eq!(c.request(&[], None, None).messages.len(), 51);
    }
}
