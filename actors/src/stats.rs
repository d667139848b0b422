//! Message statistics, computed exactly as the TypeScript bot computes them.
//!
//! The content is split left to right at markdown constructs (fenced code, inline code,
//! markdown links, bare links); the remaining text and link labels are counted in grapheme
//! clusters and word-like segments. The regular expression mirrors the JavaScript one, with the
//! JavaScript meanings of `.` and `\s` spelled out, since Rust's differ.
//!
//! Segmentation uses ICU4X (`icu_segmenter`, dictionary word breaking), which follows the same
//! ICU rules and dictionaries as Node's `Intl.Segmenter`; plain UAX #29 (`unicode-segmentation`)
//! has no dictionaries and splits Thai, Lao, Khmer, Burmese and CJK text differently.

use icu_segmenter::options::WordBreakInvariantOptions;
use icu_segmenter::{GraphemeClusterSegmenter, WordSegmenter, WordSegmenterBorrowed};
use regex::Regex;
use serde::Serialize;
use std::sync::OnceLock;

/// The statistics stored in `message_stats` for one message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStats {
    pub char_count: i64,
    pub word_count: i64,
    /// JSON array of `{chars, words, lines[, lang]}`, one per code block.
    pub code_stats: String,
    /// JSON array of link urls.
    pub link_stats: String,
}

#[derive(Serialize)]
struct CodeBlock<'a> {
    chars: usize,
    words: usize,
    lines: usize,
    // Inline code has no language: JSON.stringify drops an undefined key.
    #[serde(skip_serializing_if = "Option::is_none")]
    lang: Option<&'a str>,
}

// JavaScript's `\s` and `.` (which excludes every line terminator, not only `\n`).
const JS_SPACE: &str = r"\t\n\x0B\x0C\r \u{A0}\u{1680}\u{2000}-\u{200A}\u{2028}\u{2029}\u{202F}\u{205F}\u{3000}\u{FEFF}";

fn markdown_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // Alternatives in the TypeScript order; leftmost-first matching picks the first that
        // matches at the leftmost position, as a backtracking engine does. In the fence, `^`
        // right after `\n` always holds, so it is left out.
        let pattern = format!(
            r"(?s:```.+?\n```)|`[^\n\r\u{{2028}}\u{{2029}}]+?`|\[([^\]]+)\]\(([^)]+)\)|https?://[^{JS_SPACE}>)]+"
        );
        Regex::new(&pattern).expect("the markdown pattern is a valid regex")
    })
}

/// The label and url of a token the markdown-link alternative matched.
fn markdown_link(token: &str) -> Option<(&str, &str)> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"^\[([^\]]+)\]\(([^)]+)\)$").expect("the link pattern is a valid regex")
    });
    let caps = re.captures(token)?;
    Some((caps.get(1)?.as_str(), caps.get(2)?.as_str()))
}

/// Built once: constructing a dictionary segmenter looks its data up (a measurable share of a
/// message's cost when done per call).
fn word_segmenter() -> WordSegmenterBorrowed<'static> {
    static SEGMENTER: OnceLock<WordSegmenterBorrowed<'static>> = OnceLock::new();
    *SEGMENTER.get_or_init(|| WordSegmenter::new_dictionary(WordBreakInvariantOptions::default()))
}

/// Grapheme clusters in `s`, as JavaScript's `[...new Intl.Segmenter().segment(s)].length`.
pub fn count_graphemes(s: &str) -> usize {
    if s.is_empty() {
        return 0;
    }
    // Boundaries include both ends of the string.
    GraphemeClusterSegmenter::new().segment_str(s).count() - 1
}

/// Word-like segments in `s`, as `Intl.Segmenter(..., {granularity: "word"})` with `isWordLike`.
pub fn count_words(s: &str) -> usize {
    if s.is_empty() {
        return 0;
    }
    let mut count = 0;
    let mut start = 0;
    for (end, word_type) in word_segmenter().segment_str(s).iter_with_word_type() {
        if end == 0 {
            continue;
        }
        if word_type.is_word_like() || is_keycap(&s[start..end]) {
            count += 1;
        }
        start = end;
    }
    count
}

/// A keycap emoji such as `1️⃣`: ICU (Node) reports it word-like, ICU4X does not.
fn is_keycap(segment: &str) -> bool {
    let mut chars = segment.chars();
    matches!(chars.next(), Some('0'..='9' | '#' | '*'))
        && matches!(
            (chars.next(), chars.next(), chars.next()),
            (Some('\u{FE0F}'), Some('\u{20E3}'), None) | (Some('\u{20E3}'), None, None)
        )
}

/// Computes the statistics of one message's content.
pub fn message_stats(content: &str) -> MessageStats {
    let mut chars = 0;
    let mut words = 0;
    let mut code: Vec<CodeBlock> = Vec::new();
    let mut links: Vec<&str> = Vec::new();
    let count_text = |text: &str, chars: &mut usize, words: &mut usize| {
        *chars += count_graphemes(text);
        *words += count_words(text);
    };

    let mut last = 0;
    // find_iter, not captures_iter: capture groups cost a slower engine, and only links need them.
    for m in markdown_regex().find_iter(content) {
        count_text(&content[last..m.start()], &mut chars, &mut words);
        last = m.end();
        let token = m.as_str();
        if token.starts_with("```") {
            code.push(fenced_block(token));
        } else if token.starts_with('`') {
            let inner = &token[1..token.len() - 1];
            code.push(CodeBlock {
                chars: count_graphemes(inner),
                words: count_words(inner),
                lines: 1,
                lang: None,
            });
        } else if let Some((label, url)) = markdown_link(token) {
            count_text(label, &mut chars, &mut words);
            links.push(strip_angle_brackets(url));
        } else {
            links.push(token);
        }
    }
    count_text(&content[last..], &mut chars, &mut words);

    MessageStats {
        char_count: chars as i64,
        word_count: words as i64,
        code_stats: serde_json::to_string(&code).unwrap_or_else(|_| "[]".into()),
        link_stats: serde_json::to_string(&links).unwrap_or_else(|_| "[]".into()),
    }
}

/// A block that starts with three backticks, as the TypeScript bot reads it:
/// `token.slice(3, -4)` (which clamps to "" for a bare "```" matched as inline code), the first
/// line the language, the other lines the code.
fn fenced_block(token: &str) -> CodeBlock<'_> {
    let body = if token.len() >= 7 {
        &token[3..token.len() - 4]
    } else {
        ""
    };
    let (lang, code) = match body.split_once('\n') {
        Some((lang, code)) => (lang, Some(code)),
        None => (body, None),
    };
    match code {
        Some(code) => CodeBlock {
            chars: count_graphemes(code),
            words: count_words(code),
            lines: code.split('\n').count(),
            lang: Some(lang),
        },
        None => CodeBlock {
            chars: 0,
            words: 0,
            lines: 0,
            lang: Some(lang),
        },
    }
}

fn strip_angle_brackets(url: &str) -> &str {
    url.strip_prefix('<')
        .and_then(|u| u.strip_suffix('>'))
        .unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_triple_backtick_is_an_empty_fence() {
        let s = message_stats("```unterminated\ncode");
        assert_eq!(
            s.code_stats,
            r#"[{"chars":0,"words":0,"lines":0,"lang":""}]"#
        );
        assert_eq!(s.word_count, 2);
    }

    #[test]
    fn angle_bracketed_markdown_link_loses_its_brackets() {
        let s = message_stats("[docs](<https://example.com/a>)");
        assert_eq!(s.link_stats, r#"["https://example.com/a"]"#);
        assert_eq!((s.char_count, s.word_count), (4, 1));
    }

    #[test]
    fn keycaps_count_as_words() {
        assert_eq!(count_words("1\u{FE0F}\u{20E3}"), 1);
        assert_eq!(count_words("hello, world"), 2);
    }
}
