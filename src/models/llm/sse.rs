//! Server-sent events (the `text/event-stream` of streaming chat completions),
//! sans-IO: bytes in as they arrive (split anywhere, even inside a UTF-8
//! character or a CRLF), complete events out. Per the HTML standard: lines
//! end in CRLF, LF or CR; `data:` lines accumulate (joined by LF); an empty
//! line dispatches; `:` lines are comments (keep-alives); one leading space
//! after the colon is dropped. Only `data` and `event` matter to us.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` field, `message` when absent.
    pub event: String,
    pub data: String,
}

#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
    event: Option<String>,
    /// The last byte was a CR: a following LF belongs to the same line end.
    after_cr: bool,
    /// A line longer than this is an error (a hostile or broken server must not grow memory).
    max_line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event-stream line is longer than {0} bytes")]
    LineTooLong(usize),
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser { max_line: 1 << 20, ..Default::default() }
    }

    /// Feed bytes; complete events are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.buf);
                    self.line(&String::from_utf8_lossy(&line), out);
                }
                _ => {
                    if self.buf.len() >= self.max_line {
                        return Err(SseError::LineTooLong(self.max_line));
                    }
                    self.buf.push(b);
                }
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent { event: self.event.take().unwrap_or_else(|| "message".into()), data });
            }
            self.event = None;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => (&line[..i], line[i + 1..].strip_prefix(' ').unwrap_or(&line[i + 1..])),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in input.chunks(piece) {
            p.push(c, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn events_whatever_the_chunking() {
        let input =
            "data: {\"a\":1}\r\n\r\n: keep-alive\n\nevent: x\ndata: line1\ndata:line2\n\ndata: [DONE]\r\rdata: é\n\n"
                .as_bytes();
        let want = vec![
            SseEvent { event: "message".into(), data: "{\"a\":1}".into() },
            SseEvent { event: "x".into(), data: "line1\nline2".into() },
            SseEvent { event: "message".into(), data: "[DONE]".into() },
            SseEvent { event: "message".into(), data: "é".into() },
        ];
        for piece in [1, 2, 3, 7, 1000] {
            assert_eq!(parse_in_pieces(input, piece), want, "pieces of {piece}");
        }
    }

    #[test]
    fn a_huge_line_is_an_error() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let big = vec![b'a'; (1 << 20) + 1];
        assert_eq!(p.push(&big, &mut out), Err(SseError::LineTooLong(1 << 20)));
    }
}
