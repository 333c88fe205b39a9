//! A first look at YAML text, token by token, before serde_yaml parses it: the two limits of the
//! loader that a token can cross, checked where the cost of crossing them arises.
//!
//! serde_yaml runs libyaml over a whole document, collecting its events, before any of our code
//! sees one; the loader's own scan (pass 1 in `load.rs`) can only refuse afterwards. That parse
//! does work proportional to the flow nesting depth for every token (libyaml rechecks every
//! pending "simple key", one per open flow collection), so deep nesting is quadratic: a 200 KB
//! policy of `{a: [{a: [...` took 33 s to refuse (upstream: yaml/libyaml#286,
//! yaml/yaml-serde#1, unfixed in unsafe-libyaml 0.2.11). Running the same scanner token by token
//! and stopping at the first flow collection past the depth limit, or at the first value past
//! the value limit, keeps the cost of any input at (tokens × depth limit) with a bounded number
//! of tokens, and the parse then runs only on text within both limits.

use std::marker::PhantomData;
use std::mem::MaybeUninit;

use unsafe_libyaml::yaml_token_type_t as Kind;

/// Where a token starts in the text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// The first token past a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excess {
    /// A `[` or `{` that opens a flow collection nested more than the depth limit.
    Depth(Position),
    /// A value (scalar, alias or collection) past the value limit of its document. Values that
    /// have no token (an empty value) are not counted, so this never refuses a document that
    /// the loader's own count (after alias expansion) would accept.
    Values(Position),
}

/// The first token that crosses `max_depth` (nesting of flow collections) or `max_values` (per
/// document), or `None`. A text the scanner cannot read ends the look early: the parse that
/// follows reports that error in its own words.
pub fn first_excess(text: &str, max_depth: usize, max_values: usize) -> Option<Excess> {
    let mut tokens = Tokens::new(text)?;
    let (mut depth, mut values) = (0usize, 0usize);
    while let Some((kind, at)) = tokens.next_token() {
        if matches!(
            kind,
            Kind::YAML_SCALAR_TOKEN
                | Kind::YAML_ALIAS_TOKEN
                | Kind::YAML_FLOW_SEQUENCE_START_TOKEN
                | Kind::YAML_FLOW_MAPPING_START_TOKEN
                | Kind::YAML_BLOCK_SEQUENCE_START_TOKEN
                | Kind::YAML_BLOCK_MAPPING_START_TOKEN
        ) {
            values += 1;
            if values > max_values {
                return Some(Excess::Values(at));
            }
        }
        match kind {
            Kind::YAML_FLOW_SEQUENCE_START_TOKEN | Kind::YAML_FLOW_MAPPING_START_TOKEN => {
                depth += 1;
                if depth > max_depth {
                    return Some(Excess::Depth(at));
                }
            }
            Kind::YAML_FLOW_SEQUENCE_END_TOKEN | Kind::YAML_FLOW_MAPPING_END_TOKEN => {
                depth = depth.saturating_sub(1);
            }
            Kind::YAML_DOCUMENT_START_TOKEN | Kind::YAML_DOCUMENT_END_TOKEN => values = 0,
            Kind::YAML_STREAM_END_TOKEN => return None,
            _ => {}
        }
    }
    None
}

/// libyaml's token scanner over borrowed text, the one serde_yaml drives.
struct Tokens<'t> {
    /// Boxed: for string input libyaml keeps a pointer to the parser itself, so it must not move.
    parser: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>>,
    text: PhantomData<&'t str>,
}

impl<'t> Tokens<'t> {
    fn new(text: &'t str) -> Option<Self> {
        let mut parser = Box::new(MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
        // SAFETY: `yaml_parser_initialize` initializes the whole struct (it fails only when
        // malloc does, and then owns nothing); the input pointer stays valid for 't, which the
        // returned value cannot outlive, and the parser is deleted exactly once, in `drop`.
        unsafe {
            let raw = parser.as_mut_ptr();
            if unsafe_libyaml::yaml_parser_initialize(raw).fail {
                return None;
            }
            unsafe_libyaml::yaml_parser_set_encoding(raw, unsafe_libyaml::YAML_UTF8_ENCODING);
            unsafe_libyaml::yaml_parser_set_input_string(raw, text.as_ptr(), text.len() as u64);
        }
        Some(Tokens {
            parser,
            text: PhantomData,
        })
    }

    /// The next token's kind and start, or `None` after the end of the stream or an error.
    fn next_token(&mut self) -> Option<(Kind, Position)> {
        let mut token = MaybeUninit::<unsafe_libyaml::yaml_token_t>::uninit();
        // SAFETY: the parser was initialized in `new`; `yaml_parser_scan` fills the token (all
        // zero after the end or an error), and the token's heap data is freed before return.
        unsafe {
            let token = token.as_mut_ptr();
            if unsafe_libyaml::yaml_parser_scan(self.parser.as_mut_ptr(), token).fail {
                return None;
            }
            let kind = (*token).type_;
            let mark = (*token).start_mark;
            unsafe_libyaml::yaml_token_delete(token);
            if kind == Kind::YAML_NO_TOKEN {
                return None;
            }
            Some((
                kind,
                Position {
                    line: mark.line as usize + 1,
                    column: mark.column as usize + 1,
                },
            ))
        }
    }
}

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new` (a `Tokens` exists only then) and deleted only here.
        unsafe { unsafe_libyaml::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(line: usize, column: usize) -> Option<Excess> {
        Some(Excess::Depth(Position { line, column }))
    }

    /// Only the depth limit.
    fn depth(text: &str, max_depth: usize) -> Option<Excess> {
        first_excess(text, max_depth, usize::MAX)
    }

    #[test]
    fn counts_flow_collections_only() {
        assert_eq!(depth("a: [[1], {b: [2]}]\n", 3), None);
        assert_eq!(depth("a: [[1], {b: [2]}]\n", 2), deep(1, 14));
        // Block nesting is not flow nesting (the loader's own scan bounds it).
        assert_eq!(depth("a:\n  b:\n    c:\n      - d\n", 0), None);
    }

    #[test]
    fn brackets_that_are_not_collections_do_not_count() {
        let text = concat!(
            "query: sum(rate(x{a=\"b\"}[1m]))  # [[[[\n",
            "quoted: \"[[[[\"\n",
            "single: '{{{{'\n",
            "block: |\n  [[[[ {{{{\n",
            "closers: \"]]]]\"\n",
            "real: [[[x]]]\n",
        );
        assert_eq!(depth(text, 3), None);
        assert_eq!(depth(text, 2), deep(7, 9));
    }

    #[test]
    fn stops_at_the_first_collection_past_the_limit() {
        let text = format!("spec:\n  x: {}", "{a: [".repeat(100_000));
        assert_eq!(depth(&text, 32), deep(2, 6 + 5 * 16));
    }

    #[test]
    fn counts_values_per_document() {
        // 1 mapping, 3 keys, 3 values (the empty one has no token): 7 values.
        let text = "a: 1\nb: [x]\nc:\n";
        assert_eq!(first_excess(text, 32, 7), None);
        assert_eq!(
            first_excess(text, 32, 6),
            Some(Excess::Values(Position { line: 3, column: 1 }))
        );
        // Each document counts from zero.
        let two = format!("{text}---\n{text}...\n{text}");
        assert_eq!(first_excess(&two, 32, 7), None);
        let aliases = "a: &x [1, 2]\nb: *x\n";
        assert_eq!(
            first_excess(aliases, 32, 6),
            Some(Excess::Values(Position { line: 2, column: 4 }))
        );
    }

    #[test]
    fn a_text_the_scanner_refuses_ends_the_look() {
        assert_eq!(depth("a: \"unterminated [[[[", 1), None);
        assert_eq!(depth("", 0), None);
    }
}
