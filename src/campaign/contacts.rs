//! The contact list: a CSV file with a header row.
//!
//! Column `number` (required) is whom to call: a phone number
//! (`+441632960001`; spaces, dots, dashes and brackets are dropped) or a
//! `sip:`/`sips:` URI. Column `timezone` (optional) is the contact's IANA
//! zone for the calling window; empty means the campaign's zone. Every other
//! column is a variable: its header is the name a `{name}` placeholder in the
//! agent's instructions uses, its cell the value for that contact.
//!
//! A number twice in one file is an error naming both lines: the campaign's
//! promise is that nobody is dialled twice, and a duplicate row is the most
//! likely way to break it. Errors name the file, the line and the column.

use chrono_tz::Tz;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most rows a list may have by default; `load_with_limit` takes another.
pub const MAX_ROWS: usize = 1_000_000;
/// The longest row, in bytes: a bigger one is not a contact, it is a mistake.
pub const MAX_ROW_BYTES: usize = 64 * 1024;
/// The biggest file read (a million rows of a few variables fit easily).
pub const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// Names the agent fills in itself for every call (`agent::call_variables`):
/// a column of the same name would be ambiguous.
pub const RESERVED_VARIABLES: [&str; 5] = ["caller", "called", "agent", "date", "time"];

/// One row of the list.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    /// The line of the file the row starts on (1 is the header).
    pub line: u64,
    /// Normalised: `+441632960001`, or a URI with its scheme in lower case.
    pub number: String,
    /// `None`: the campaign's zone.
    pub timezone: Option<Tz>,
    pub variables: BTreeMap<String, String>,
}

/// A parsed list.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactList {
    pub path: PathBuf,
    /// The variable columns, in the file's order.
    pub columns: Vec<String>,
    pub contacts: Vec<Contact>,
}

/// `contacts.csv:7: column timezone: unknown time zone "Mars/Base"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactsError {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for ContactsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(c) = &self.column {
            write!(f, ": column {c}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ContactsError {}

/// Read and check a contact list of at most [`MAX_ROWS`] rows.
pub fn load(path: &Path) -> Result<ContactList, ContactsError> {
    load_with_limit(path, MAX_ROWS)
}

pub fn load_with_limit(path: &Path, max_rows: usize) -> Result<ContactList, ContactsError> {
    let fail = |message: String| ContactsError { file: path.to_path_buf(), line: None, column: None, message };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read file: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| fail(format!("cannot read file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!("bigger than {} MiB: split the list into several campaigns", MAX_FILE_BYTES >> 20)));
    }
    parse(path, &bytes, max_rows)
}

/// Parse a list; `path` is only used in messages.
pub fn parse(path: &Path, input: &[u8], max_rows: usize) -> Result<ContactList, ContactsError> {
    let err = |line: Option<u64>, column: Option<&str>, message: String| ContactsError {
        file: path.to_path_buf(),
        line,
        column: column.map(str::to_string),
        message,
    };
    let mut reader =
        csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).flexible(false).from_reader(input);
    let headers = reader.headers().map_err(|e| csv_error(path, input, e))?.clone();
    if headers.iter().all(str::is_empty) {
        return Err(err(
            Some(1),
            None,
            "the file is empty: the first line must name the columns (`number` at least)".into(),
        ));
    }
    let mut number_col = None;
    let mut tz_col = None;
    let mut variables: Vec<(usize, String)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        if let Some(prev) = seen.insert(h.to_ascii_lowercase(), i) {
            return Err(err(
                Some(1),
                Some(h),
                format!("a second column named `{h}` (columns {} and {})", prev + 1, i + 1),
            ));
        }
        match h.to_ascii_lowercase().as_str() {
            "number" => number_col = Some(i),
            "timezone" => tz_col = Some(i),
            _ => {
                check_variable_name(h).map_err(|m| err(Some(1), Some(h), m))?;
                variables.push((i, h.to_string()));
            }
        }
    }
    let Some(number_col) = number_col else {
        let found: Vec<&str> = headers.iter().collect();
        return Err(err(Some(1), None, format!("no `number` column (the header has: {})", found.join(", "))));
    };

    let mut contacts = Vec::new();
    let mut first_line_of: HashMap<String, u64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, input, e)),
        }
        let line = record.position().map(|p| true_line(input, p)).unwrap_or(0);
        if contacts.len() >= max_rows {
            return Err(err(
                Some(line),
                None,
                format!("more than {max_rows} contacts: split the list into several campaigns"),
            ));
        }
        if record.as_slice().len() > MAX_ROW_BYTES {
            return Err(err(Some(line), None, format!("the row is longer than {MAX_ROW_BYTES} bytes")));
        }
        let cell = |i: usize| record.get(i).unwrap_or("");
        let number = normalise_number(cell(number_col)).map_err(|m| err(Some(line), Some("number"), m))?;
        if let Some(first) = first_line_of.insert(number.clone(), line) {
            return Err(err(
                Some(line),
                Some("number"),
                format!("{number} is already on line {first}: a contact must appear once (nobody is dialled twice)"),
            ));
        }
        let timezone = match tz_col.map(cell) {
            None | Some("") => None,
            Some(name) => Some(name.parse::<Tz>().map_err(|_| {
                err(
                    Some(line),
                    Some("timezone"),
                    format!("unknown time zone {name:?} (an IANA name like Europe/London)"),
                )
            })?),
        };
        let variables = variables.iter().map(|(i, name)| (name.clone(), cell(*i).to_string())).collect();
        contacts.push(Contact { line, number, timezone, variables });
    }
    Ok(ContactList { path: path.to_path_buf(), columns: variables.into_iter().map(|(_, n)| n).collect(), contacts })
}

/// The line a record's text starts on. The reader reports where it began
/// looking, which is before any blank lines it skipped: count those too.
fn true_line(input: &[u8], p: &csv::Position) -> u64 {
    let start = usize::try_from(p.byte()).unwrap_or(usize::MAX).min(input.len());
    let skipped = input[start..].iter().take_while(|&&b| b == b'\n' || b == b'\r').filter(|&&b| b == b'\n').count();
    p.line() + skipped as u64
}

fn csv_error(path: &Path, input: &[u8], e: csv::Error) -> ContactsError {
    let line = e.position().map(|p| true_line(input, p));
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8 (save the file as UTF-8 CSV)".to_string(),
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("{len} fields where the header has {expected_len} (a missing or extra comma, or an unquoted comma in a value)")
        }
        csv::ErrorKind::Io(io) => format!("cannot read file: {io}"),
        _ => e.to_string(),
    };
    ContactsError { file: path.to_path_buf(), line, column: None, message }
}

/// A header usable as `{name}`: letters, digits, `_`, `-`, `.`; not a name the agent sets itself.
fn check_variable_name(h: &str) -> Result<(), String> {
    if h.is_empty() {
        return Err("a column without a name (every column of the header needs one)".into());
    }
    if !h.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(format!("`{h}` cannot be used as a `{{name}}` variable: use letters, digits, `_`, `-` or `.`"));
    }
    if RESERVED_VARIABLES.contains(&h) {
        return Err(format!("`{h}` is set by the agent for every call: rename the column"));
    }
    Ok(())
}

/// `+44 (1632) 960-001` → `+441632960001`; `SIP:bob@example.com` → `sip:bob@example.com`.
pub fn normalise_number(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("empty: every contact needs a number".into());
    }
    let lower = raw.to_ascii_lowercase();
    for scheme in ["sip:", "sips:"] {
        if lower.starts_with(scheme) {
            let rest = &raw[scheme.len()..];
            // It goes into a Request-URI and a To header: no room for whitespace, quotes or brackets.
            if rest.is_empty()
                || rest.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
            {
                return Err(format!("{raw:?} is not a usable SIP URI"));
            }
            return Ok(format!("{scheme}{rest}"));
        }
    }
    let (plus, digits) = match raw.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", raw),
    };
    let digits: String = digits.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    if digits.len() < 2 || digits.len() > 32 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{raw:?} is neither a phone number (like +441632960001) nor a sip:/sips: URI"));
    }
    Ok(format!("{plus}{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<ContactList, ContactsError> {
        parse(Path::new("contacts.csv"), s.as_bytes(), MAX_ROWS)
    }

    #[test]
    fn numbers_zones_and_variables() {
        let l = parse_str("number,first_name,timezone,due\n+44 1632 960001,Ann,Europe/London,2025-06-01\nsip:bob@example.com, Bob ,,\n").unwrap();
        assert_eq!(l.columns, ["first_name", "due"]);
        assert_eq!(l.contacts.len(), 2);
        let a = &l.contacts[0];
        assert_eq!((a.line, a.number.as_str(), a.timezone), (2, "+441632960001", Some(chrono_tz::Europe::London)));
        assert_eq!(a.variables["first_name"], "Ann");
        let b = &l.contacts[1];
        assert_eq!((b.line, b.number.as_str(), b.timezone), (3, "sip:bob@example.com", None));
        assert_eq!(b.variables["first_name"], "Bob");
        assert_eq!(b.variables["due"], "");
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = parse_str("number,timezone\n+441632960001,\n+441632960002,Mars/Base\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "contacts.csv:3: column timezone: unknown time zone \"Mars/Base\" (an IANA name like Europe/London)"
        );
        let e = parse_str("number\n+441632960001\n\"  \"\n").unwrap_err();
        assert_eq!(e.to_string(), "contacts.csv:3: column number: empty: every contact needs a number");
        let e = parse_str("number\nhello\n").unwrap_err();
        assert!(e.to_string().starts_with("contacts.csv:2: column number: \"hello\" is neither"), "{e}");
    }

    #[test]
    fn duplicates_name_both_lines_even_when_written_differently() {
        let e = parse_str("number\n+441632960001\n+441632960002\n+44 1632-960001\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("already on line 2"), "{e}");
        let e = parse_str("number\nsip:a@b\nSIP:a@b\n").unwrap_err();
        assert!(e.message.contains("already on line 2"), "{e}");
    }

    #[test]
    fn header_problems() {
        assert!(parse_str("").unwrap_err().to_string().contains("first line must name the columns"));
        assert!(parse_str("name,phone\nAnn,+441632960001\n")
            .unwrap_err()
            .to_string()
            .contains("no `number` column (the header has: name, phone)"));
        assert!(parse_str("number,x,x\n1,2,3\n").unwrap_err().to_string().contains("a second column named `x`"));
        assert!(parse_str("number,first name\n")
            .unwrap_err()
            .to_string()
            .contains("cannot be used as a `{name}` variable"));
        assert!(parse_str("number,agent\n").unwrap_err().to_string().contains("set by the agent"));
        assert!(parse_str("number,\n+4411,\n").unwrap_err().to_string().contains("without a name"));
        // Case-insensitive special columns, and a header alone is an empty list.
        let l = parse_str("Number,TimeZone\n").unwrap();
        assert!(l.contacts.is_empty() && l.columns.is_empty());
    }

    #[test]
    fn ragged_rows_bad_utf8_and_bom() {
        let e = parse_str("number,a\n+4411,1\n\n+4412\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("1 fields where the header has 2"), "{e}");
        let bytes = b"number,a\n+4411,\xff\n";
        let e = parse(Path::new("c.csv"), bytes, MAX_ROWS).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("UTF-8"), "{e}");
        // Spreadsheets often start UTF-8 files with a byte-order mark.
        let l = parse_str("\u{feff}number\n+4411\n").unwrap();
        assert_eq!(l.contacts[0].number, "+4411");
    }

    #[test]
    fn quoted_cells_and_blank_lines() {
        let l = parse_str("number,note\n\"+4411\",\"a, b\"\n\n+4412,\"line\nbreak\"\n").unwrap();
        assert_eq!(l.contacts.len(), 2);
        assert_eq!(l.contacts[0].variables["note"], "a, b");
        assert_eq!(l.contacts[1].line, 4);
        assert_eq!(l.contacts[1].variables["note"], "line\nbreak");
    }

    #[test]
    fn row_cap() {
        let e = parse(Path::new("c.csv"), "number\n+4411\n+4412\n+4413\n".as_bytes(), 2).unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("more than 2 contacts"), "{e}");
    }

    #[test]
    fn uris_must_not_break_a_header() {
        assert!(normalise_number("sip:a b@c").is_err());
        assert!(normalise_number("sip:<evil>").is_err());
        assert!(normalise_number("sip:").is_err());
        assert_eq!(normalise_number("SIPS:alice@example.com").unwrap(), "sips:alice@example.com");
        assert!(normalise_number("+").is_err());
        assert!(normalise_number("tel:+4411").is_err());
    }

    #[test]
    fn missing_file_names_it() {
        let e = load(Path::new("/nonexistent/contacts.csv")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/contacts.csv: cannot read file"), "{e}");
    }
}
