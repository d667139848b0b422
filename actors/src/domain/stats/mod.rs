//! Message statistics, computed exactly as the TypeScript bot computes them.
//!
//! The content is split left to right at markdown constructs (fenced code, inline code,
//! markdown links, bare links); the remaining text and link labels are counted in grapheme
//! clusters and word-like segments. The split gives the matches of the bot's JavaScript regular
//! expression
//!
//! ```text
//! /```.+?\n```/s | /`[^\n\r\u2028\u2029]+?`/ | /\[([^\]]+)\]\(([^)]+)\)/ | /https?:\/\/[^\s>)]+/
//! ```
//!
//! (one alternation, leftmost-first) but is written out by hand: a regex engine is quadratic
//! on an unclosed construct (each "```" would rescan to the end for a closing "\n```"), while
//! here every "where is the next X" is answered from a cached forward search, so the whole
//! split is linear in the content's length.
//!
//! Segmentation uses ICU4X (`icu_segmenter`, dictionary word breaking), which follows the same
//! ICU rules and dictionaries as Node's `Intl.Segmenter`; plain UAX #29 (`unicode-segmentation`)
//! has no dictionaries and splits Thai, Lao, Khmer, Burmese and CJK text differently.

mod split;

#[cfg(test)]
mod tests;

use icu_segmenter::options::WordBreakInvariantOptions;
use icu_segmenter::{GraphemeClusterSegmenter, WordSegmenter, WordSegmenterBorrowed};
use serde::Serialize;
use split::{Kind, Token, Tokens};
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
    for Token { start, end, kind } in Tokens::new(content) {
        count_text(&content[last..start], &mut chars, &mut words);
        last = end;
        let token = &content[start..end];
        match kind {
            Kind::Code if token.starts_with("```") => code.push(fenced_block(token)),
            Kind::Code => {
                let inner = &token[1..token.len() - 1];
                code.push(CodeBlock {
                    chars: count_graphemes(inner),
                    words: count_words(inner),
                    lines: 1,
                    lang: None,
                });
            }
            Kind::Link { label, url } => {
                count_text(&content[label], &mut chars, &mut words);
                links.push(strip_angle_brackets(&content[url]));
            }
            Kind::Bare => links.push(token),
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
