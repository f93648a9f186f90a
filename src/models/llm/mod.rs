//! Language models behind one streaming interface: text deltas, whole tool
//! calls and the end of the reply (`chat::LlmEvent`). Backends: `openai` (any
//! OpenAI-compatible endpoint, streamed over SSE); the embedded ONNX model
//! arrives with the converted Qwen2.5 graph.

pub mod chat;
pub mod openai;
pub mod sse;
