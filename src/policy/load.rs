//! Reading a `ShiftPolicy` from YAML text or a file, with errors that name the file, the field
//! and the line.
//!
//! Policy files come from users and from git, so the loader treats them as hostile input: it
//! never panics and its work is bounded by the size limits below, whatever the bytes are.
//! Loading is three passes over one document, after a look at its tokens (`prescan.rs`) that
//! refuses flow collections nested deeper than [`MAX_DEPTH`] and documents with more than
//! [`MAX_NODES`] values before serde_yaml parses anything (its parse of a whole document comes
//! before pass 1 can refuse, and is quadratic in the flow nesting depth):
//! 1. a scan that counts every value (after alias expansion) and the nesting depth, and stops
//!    at the first limit crossed, so alias bombs and deep nesting cost almost nothing
//!    (`scan.rs`);
//! 2. the typed deserialization (`serde_path_to_error` gives the field path);
//! 3. [`validate`](super::validate::validate) for what types cannot say, with a best-effort
//!    line for every error (`locate.rs`).

use std::io::Read;
use std::path::Path;

use super::ShiftPolicy;
use super::locate::locate;
use super::prescan::{self, Excess};
use super::scan::{Scan, Scanner};
use super::validate::{FieldError, validate};

/// Largest policy file accepted. Real policies are a few KiB; this leaves room for long
/// comments while keeping the worst case (parse + scan) in the low milliseconds.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Deepest nesting of YAML collections. A policy needs about 6 levels; `metadata.managedFields`
/// in `kubectl get -o yaml` output needs about 12.
pub const MAX_DEPTH: usize = 32;
/// Most YAML values in one document after expanding aliases. Bounds the work an alias bomb
/// (`&a [*b, *b, ...]`) can cause; a large real policy has a few thousand.
pub const MAX_NODES: usize = 100_000;
/// Most validation errors that get a line number (each costs one more pass over the file).
const MAX_LOCATED_ERRORS: usize = 20;
/// Bytes those passes may read in all: a file of a few KiB gets every line, while a 1 MiB file
/// with thousands of errors gets 4 (20 passes took it past a second).
const LOCATE_BUDGET_BYTES: usize = 4 * MAX_FILE_BYTES;

pub const API_VERSION: &str = "tideshift.io/v1alpha1";
pub const KIND: &str = "ShiftPolicy";
const TOP_LEVEL_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// Everything that can be wrong with a policy file. `Display` is one line that starts with the
/// file (and line, where known), so `tideshift check` can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: cannot read: {cause}")]
    Io { file: String, cause: std::io::Error },
    #[error("{file}: not a regular file")]
    NotAFile { file: String },
    #[error("{file}: file is larger than {limit} bytes; a policy is a few KiB", limit = MAX_FILE_BYTES)]
    TooLarge { file: String },
    #[error("{file}: binary data (NUL byte at offset {offset}); expected a YAML ShiftPolicy")]
    Binary { file: String, offset: usize },
    #[error(
        "{file}: not UTF-8 text (invalid byte at offset {offset}); expected a YAML ShiftPolicy"
    )]
    NotUtf8 { file: String, offset: usize },
    #[error(
        "{file}: empty file; expected one ShiftPolicy (apiVersion: {API_VERSION}, kind: {KIND})"
    )]
    Empty { file: String },
    #[error("{file}: {count} YAML documents; put exactly one ShiftPolicy in each file")]
    MultipleDocuments { file: String, count: usize },
    /// YAML that cannot be read at all: syntax, nesting, alias expansion.
    #[error("{file}{}: {message}", line_suffix(*line))]
    Syntax {
        file: String,
        line: Option<usize>,
        message: String,
    },
    /// A field that does not fit its type (unknown field, wrong type, bad duration, ...).
    #[error("{file}{}: {path}: {message}", line_suffix(*line))]
    Field {
        file: String,
        path: String,
        line: Option<usize>,
        message: String,
    },
    /// Well-formed, but breaks the rules of [`validate`](super::validate::validate).
    #[error("{}", describe_all(file, errors))]
    Invalid {
        file: String,
        errors: Vec<FieldError>,
    },
    /// An event that cannot be expanded into windows.
    #[error("event {name:?}: {message}")]
    Event { name: String, message: String },
}

impl PolicyError {
    /// The field errors of an `Invalid` policy, or one synthesized from a `Field` error.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            PolicyError::Invalid { errors, .. } => errors.clone(),
            PolicyError::Field {
                path,
                line,
                message,
                ..
            } => vec![FieldError {
                path: path.clone(),
                message: message.clone(),
                line: *line,
            }],
            _ => Vec::new(),
        }
    }
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn describe_all(file: &str, errors: &[FieldError]) -> String {
    match errors {
        [one] => format!(
            "{file}{}: {}: {}",
            line_suffix(one.line),
            one.path,
            one.message
        ),
        many => {
            let listed: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("{file}: {} problems: {}", many.len(), listed.join("; "))
        }
    }
}

/// Read, parse and validate one policy file. `-` reads standard input.
pub fn load_file(path: &Path) -> Result<ShiftPolicy, PolicyError> {
    let file = path.display().to_string();
    let bytes = read_capped(path, &file)?;
    load_bytes(&bytes, &file)
}

fn read_capped(path: &Path, file: &str) -> Result<Vec<u8>, PolicyError> {
    let io = |cause| PolicyError::Io {
        file: file.to_string(),
        cause,
    };
    let limit = MAX_FILE_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(io)?;
    } else {
        // Checked before opening: opening a FIFO blocks, and devices like /dev/zero never end.
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(PolicyError::NotAFile {
                file: file.to_string(),
            });
        }
        if meta.len() > MAX_FILE_BYTES as u64 {
            return Err(PolicyError::TooLarge {
                file: file.to_string(),
            });
        }
        std::fs::File::open(path)
            .map_err(io)?
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(io)?;
    }
    if bytes.len() > MAX_FILE_BYTES {
        return Err(PolicyError::TooLarge {
            file: file.to_string(),
        });
    }
    Ok(bytes)
}

/// Parse and validate a policy from raw bytes (which need not be UTF-8); `origin` names the
/// source in errors.
pub fn load_bytes(bytes: &[u8], origin: &str) -> Result<ShiftPolicy, PolicyError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(PolicyError::TooLarge {
            file: origin.to_string(),
        });
    }
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(PolicyError::Binary {
            file: origin.to_string(),
            offset,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| PolicyError::NotUtf8 {
        file: origin.to_string(),
        offset: e.valid_up_to(),
    })?;
    load_str(text, origin)
}

/// Parse and validate a policy from YAML text; `origin` names the source in errors.
pub fn load_str(text: &str, origin: &str) -> Result<ShiftPolicy, PolicyError> {
    let policy = parse_str(text, origin)?;
    if let Err(mut errors) = validate(&policy) {
        let affordable = LOCATE_BUDGET_BYTES / text.len().max(1);
        for error in errors.iter_mut().take(MAX_LOCATED_ERRORS.min(affordable)) {
            error.line = locate(text, &error.path);
        }
        return Err(PolicyError::Invalid {
            file: origin.to_string(),
            errors,
        });
    }
    Ok(policy)
}

/// Parse without the semantic checks of `validate` (the daemon validates objects from the API
/// server separately; tests use it to build invalid policies).
pub fn parse_str(text: &str, origin: &str) -> Result<ShiftPolicy, PolicyError> {
    let file = || origin.to_string();
    if text.len() > MAX_FILE_BYTES {
        return Err(PolicyError::TooLarge { file: file() });
    }
    if let Some(offset) = text.bytes().position(|b| b == 0) {
        return Err(PolicyError::Binary {
            file: file(),
            offset,
        });
    }

    match prescan::first_excess(text, MAX_DEPTH, MAX_NODES) {
        None => {}
        Some(Excess::Depth(at)) => {
            return Err(PolicyError::Syntax {
                file: file(),
                line: Some(at.line),
                message: format!(
                    "nested deeper than {MAX_DEPTH} levels (the `[` or `{{` at column {}); \
                     a policy needs far fewer",
                    at.column
                ),
            });
        }
        Some(Excess::Values(at)) => {
            return Err(PolicyError::Syntax {
                file: file(),
                line: Some(at.line),
                message: format!(
                    "more than {MAX_NODES} YAML values in one document (the one at column {} \
                     is past it); a policy needs far fewer",
                    at.column
                ),
            });
        }
    }

    // Pass 1: find the one non-empty document, within the node and depth budget.
    let mut documents = 0;
    let mut chosen: Option<(usize, Scan)> = None;
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let scan = Scanner::scan(document).map_err(|e| syntax_error(origin, &e))?;
        if scan.null {
            continue;
        }
        documents += 1;
        if chosen.is_none() {
            chosen = Some((index, scan));
        }
        if index > 1_000 {
            break; // a stream of empty documents: counted enough to say it is wrong
        }
    }
    let Some((index, scan)) = chosen else {
        return Err(PolicyError::Empty { file: file() });
    };
    if documents > 1 {
        return Err(PolicyError::MultipleDocuments {
            file: file(),
            count: documents,
        });
    }
    check_envelope(text, &scan, origin)?;

    // Pass 2: the typed deserialization.
    let Some(document) = serde_yaml::Deserializer::from_str(text).nth(index) else {
        return Err(PolicyError::Empty { file: file() });
    };
    serde_path_to_error::deserialize::<_, ShiftPolicy>(document).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line());
        PolicyError::Field {
            file: file(),
            message: clean_message(&inner.to_string()),
            path,
            line,
        }
    })
}

fn check_envelope(text: &str, scan: &Scan, origin: &str) -> Result<(), PolicyError> {
    let field = |path: &str, message: String| PolicyError::Field {
        file: origin.to_string(),
        path: path.to_string(),
        line: locate(text, path),
        message,
    };
    if !scan.mapping {
        return Err(PolicyError::Syntax {
            file: origin.to_string(),
            line: None,
            message: format!(
                "expected a mapping with apiVersion: {API_VERSION}, kind: {KIND}, metadata and spec"
            ),
        });
    }
    match scan.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(field(
                "apiVersion",
                format!("is {other:?}; expected {API_VERSION:?}"),
            ));
        }
        None => {
            return Err(field(
                "apiVersion",
                format!("missing; expected {API_VERSION:?}"),
            ));
        }
    }
    match scan.kind.as_deref() {
        Some(KIND) => {}
        Some(other) => return Err(field("kind", format!("is {other:?}; expected {KIND:?}"))),
        None => return Err(field("kind", format!("missing; expected {KIND:?}"))),
    }
    // The generated root type ignores unknown keys; a misspelt `spec` must not go unnoticed.
    if let Some(unknown) = scan
        .top_level_keys
        .iter()
        .find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str()))
    {
        return Err(field(
            unknown,
            format!(
                "unknown field `{unknown}`, expected one of {}",
                TOP_LEVEL_FIELDS.join(", ")
            ),
        ));
    }
    Ok(())
}

fn syntax_error(origin: &str, e: &serde_yaml::Error) -> PolicyError {
    PolicyError::Syntax {
        file: origin.to_string(),
        line: e.location().map(|l| l.line()),
        message: clean_message(&e.to_string()),
    }
}

/// serde_yaml's messages repeat the path and end with ` at line L column C`; the error already
/// carries both, so say each once.
fn clean_message(message: &str) -> String {
    let mut message = message;
    if let Some(at) = message.rfind(" at line ") {
        let tail = &message[at + " at line ".len()..];
        if tail
            .split(" column ")
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            message = &message[..at];
        }
    }
    // serde_yaml's own path of the node (not always the field's): drop it, the error names
    // the field already.
    if let Some((head, rest)) = message.split_once(": ")
        && !head.is_empty()
        && head
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-[]".contains(&b))
        && head.contains(['.', '['])
            | ["spec", "metadata", "status", "apiVersion", "kind"].contains(&head)
    {
        message = rest;
    }
    // serde's names for Rust types mean little to someone writing YAML.
    message
        .replace(
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        )
        .replace("expected i32", "expected a whole number")
        .replace("expected f64", "expected a number")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::locate::{Segment, parse_path};

    const GOOD: &str = r#"
apiVersion: tideshift.io/v1alpha1
kind: ShiftPolicy
metadata: {name: shop, namespace: payments}
spec:
  capacity: {cpu: "32"}
  online:
    - name: web
      target: {kind: Deployment, name: web}
      demand: {query: 'sum(rate(http_requests_total[1m]))'}
      perReplica: 100
      replicas: {min: 2, max: 40}
"#;

    fn err(text: &str) -> String {
        match load_str(text, "p.yaml") {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_policy_loads() {
        let policy = load_str(GOOD, "p.yaml").unwrap();
        assert_eq!(policy.spec.online[0].name, "web");
        assert_eq!(policy.spec.online[0].replicas.max, 40);
    }

    #[test]
    fn leading_and_trailing_document_markers_are_one_document() {
        let text = format!("---\n{GOOD}\n---\n");
        assert!(load_str(&text, "p.yaml").is_ok());
    }

    #[test]
    fn type_errors_name_path_and_line() {
        let text = GOOD.replace("max: 40", "max: -3");
        let message = err(&text);
        assert!(
            message.starts_with("p.yaml:12: spec.online[0].replicas.max: "),
            "{message}"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let message = err(&GOOD.replace("perReplica", "perReplicas"));
        assert!(message.contains("unknown field `perReplicas`"), "{message}");
        let message = err(&GOOD.replace("spec:", "sepc:"));
        assert!(message.contains("sepc"), "{message}");
    }

    #[test]
    fn envelope_errors() {
        assert!(err(&GOOD.replace("kind: ShiftPolicy", "kind: Deployment")).contains("kind"));
        let message = err(&GOOD.replace("tideshift.io/v1alpha1", "apps/v1"));
        assert!(message.contains("p.yaml:2: apiVersion"), "{message}");
        assert!(err("- 1\n- 2\n").contains("expected a mapping"));
        assert!(err("just text").contains("expected a mapping"));
    }

    #[test]
    fn empty_binary_and_multi_document_inputs() {
        assert!(err("").contains("empty file"));
        assert!(err("# only a comment\n\n").contains("empty file"));
        assert!(err("---\n---\n").contains("empty file"));
        assert!(err(&format!("{GOOD}\n---\n{GOOD}")).contains("2 YAML documents"));
        let e = load_bytes(b"kind: \x00\x01", "b.bin").unwrap_err();
        assert!(e.to_string().contains("binary data"), "{e}");
        let e = load_bytes(b"kind: \xff\xfe", "b.bin").unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let message = err(&text);
        assert!(
            message.contains("alias") || message.contains("repetition limit"),
            "{message}"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let depth = 10_000;
        let text = format!("spec: {}{}", "[".repeat(depth), "]".repeat(depth));
        let message = err(&text);
        assert!(message.contains("nested deeper"), "{message}");
        let text = format!("spec:\n{}", {
            let mut s = String::new();
            for i in 0..200 {
                s.push_str(&" ".repeat(i + 2));
                s.push_str("k:\n");
            }
            s
        });
        assert!(err(&text).contains("nested deeper"));
    }

    /// Issue 12, item 7: 200 KB of nested flow collections took libyaml's scanner 33 s before
    /// pass 1 could refuse them (quadratic in the depth); they are refused at the first
    /// collection past the limit, with its line and column.
    #[test]
    fn deep_flow_nesting_is_refused_where_it_crosses_the_limit() {
        let head = "apiVersion: tideshift.io/v1alpha1\nkind: ShiftPolicy\nspec:\n  online: ";
        let text = format!("{head}{}", "{a: [".repeat(40_000));
        assert_eq!(text.len(), 200_068);
        // `{` opens levels 1, 3, 5, ...: level 33 is the 17th `{`, after 16 five-byte units.
        assert_eq!(
            err(&text),
            format!(
                "p.yaml:4: nested deeper than 32 levels (the `[` or `{{` at column {}); \
                 a policy needs far fewer",
                11 + 5 * 16
            )
        );
        let text = format!("{head}{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(
            err(&text).starts_with(
                "p.yaml:4: nested deeper than 32 levels (the `[` or `{` at column 43)"
            ),
            "{}",
            err(&text)
        );
    }

    /// Counted on the tokens, before serde_yaml parses the whole document (in any flow depth
    /// up to the limit, a parse costs tokens × depth).
    #[test]
    fn too_many_values_are_refused_before_parsing() {
        let head = "apiVersion: tideshift.io/v1alpha1\nkind: ShiftPolicy\nspec:\n  online: ";
        let text = format!("{head}[{}]", "1, ".repeat(MAX_NODES));
        // 9 values before the list's items (the mappings, keys and values of lines 1 to 4, the
        // list): item 99,992 is value 100,001, at column 12 + 3 × 99,991.
        assert_eq!(
            err(&text),
            "p.yaml:4: more than 100000 YAML values in one document (the one at column 299985 \
             is past it); a policy needs far fewer"
        );
    }

    /// Each line lookup parses the file again: a large file gets fewer of them.
    #[test]
    fn line_lookups_stay_within_their_budget() {
        let mut text = String::from(
            "apiVersion: tideshift.io/v1alpha1\nkind: ShiftPolicy\nmetadata: {name: shop}\n\
             spec:\n  capacity: {cpu: \"32\"}\n  online:\n",
        );
        for i in 0..30 {
            text.push_str(&format!(
                "    - {{name: w{i}, target: {{kind: Deployment, name: w{i}}}, \
                 demand: {{query: q}}, perReplica: 1, headroom: -1, replicas: {{min: 1, max: 2}}}}\n"
            ));
        }
        let lines = |text: &str| match load_str(text, "p.yaml") {
            Err(PolicyError::Invalid { errors, .. }) => {
                assert_eq!(errors.len(), 30, "{errors:?}");
                errors.iter().filter(|e| e.line.is_some()).count()
            }
            other => panic!("expected 30 rule violations, got {other:?}"),
        };
        assert_eq!(lines(&text), MAX_LOCATED_ERRORS);
        let padded = format!("{text}#{}", "x".repeat(MAX_FILE_BYTES - text.len() - 2));
        assert_eq!(lines(&padded), LOCATE_BUDGET_BYTES / padded.len());
        assert_eq!(lines(&padded), 4);
    }

    #[test]
    fn oversized_text_is_refused() {
        let text = format!("{GOOD}#{}", "x".repeat(MAX_FILE_BYTES));
        assert!(err(&text).contains("larger than"));
    }

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("spec.online[1].replicas.max"),
            vec![
                Segment::Key("spec".into()),
                Segment::Key("online".into()),
                Segment::Index(1),
                Segment::Key("replicas".into()),
                Segment::Key("max".into()),
            ]
        );
    }

    /// Found by `fuzz/run` (fuzz/corpus/policy_load/crash-bracket-in-top-level-key.yaml): an
    /// unknown top-level key is located by its text as a path, and `]` after `[]` sliced
    /// `rest[1..0]`.
    #[test]
    fn paths_with_stray_brackets_do_not_panic() {
        assert_eq!(parse_path("s[]]pnd"), vec![Segment::Key("s".into())]);
        assert_eq!(
            parse_path("a[1]]x[2]["),
            vec![
                Segment::Key("a".into()),
                Segment::Index(1),
                Segment::Index(2)
            ]
        );
        let text = "\napiVersion: tideshift.io/v1alpha1\nkind: ShiftPolicy\ns[]]pnd: \n";
        let message = err(text);
        assert!(message.contains("unknown field `s[]]pnd`"), "{message}");
    }

    #[test]
    fn locate_finds_lines() {
        assert_eq!(locate(GOOD, "spec.online[0].replicas.max"), Some(12));
        assert_eq!(locate(GOOD, "spec.online[0].perReplica"), Some(11));
        // A missing field points at its parent.
        assert_eq!(
            locate(GOOD, "spec.online[0].startup").map(|l| l >= 8),
            Some(true)
        );
        assert_eq!(locate(GOOD, "spec.capacity.cpu"), Some(6));
    }

    #[test]
    fn clean_message_strips_location_and_path() {
        assert_eq!(
            clean_message("spec.x: invalid value at line 3 column 7"),
            "invalid value"
        );
        assert_eq!(clean_message("plain"), "plain");
        assert_eq!(clean_message("spec: bad duration"), "bad duration");
        assert_eq!(
            clean_message("invalid type: string, expected u32"),
            "invalid type: string, expected a whole number from 0 to 4294967295"
        );
    }
}
