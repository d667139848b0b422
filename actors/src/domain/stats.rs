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

use icu_segmenter::options::WordBreakInvariantOptions;
use icu_segmenter::{GraphemeClusterSegmenter, WordSegmenter, WordSegmenterBorrowed};
use memchr::{memchr, memchr3, memmem};
use serde::Serialize;
use std::ops::Range;
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

/// Which alternative of the bot's expression matched.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A fence or inline code. The bot tells them apart by the token's first three characters,
    /// not by the alternative, so neither is this split.
    Code,
    /// `[label](url)`, with the byte ranges of both parts.
    Link {
        label: Range<usize>,
        url: Range<usize>,
    },
    /// `http://...` or `https://...`.
    Bare,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    start: usize,
    end: usize,
    kind: Kind,
}

/// The answer to "first occurrence at or after `p`", kept between questions. The split asks
/// with growing `p`, so an answer stays good until `p` passes it, and a "none" stays good for
/// good: each byte is searched over at most once per cache, which is what keeps the split
/// linear. A smaller `p` than before is searched again, so the answer is right for any order.
#[derive(Default)]
struct NextOccurrence {
    asked: Option<(usize, Option<usize>)>,
}

impl NextOccurrence {
    fn at_or_after(
        &mut self,
        p: usize,
        search: impl FnOnce(usize) -> Option<usize>,
    ) -> Option<usize> {
        match self.asked {
            Some((from, found)) if from <= p && found.is_none_or(|k| p <= k) => found,
            _ => {
                let found = search(p);
                self.asked = Some((p, found));
                found
            }
        }
    }
}

fn fence_close_finder() -> &'static memmem::Finder<'static> {
    static FINDER: OnceLock<memmem::Finder<'static>> = OnceLock::new();
    FINDER.get_or_init(|| memmem::Finder::new(b"\n```"))
}

/// The first of JavaScript's line terminators (`\n`, `\r`, U+2028, U+2029) at or after `from`.
fn find_line_terminator(hay: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let k = from + memchr3(b'\n', b'\r', 0xE2, hay.get(from..)?)?;
        // 0xE2 leads every character from U+2000 to U+2FFF; only two of them end a line.
        if hay.get(k) != Some(&0xE2) || matches!(hay.get(k + 1..k + 3), Some([0x80, 0xA8 | 0xA9])) {
            return Some(k);
        }
        from = k + 1;
    }
}

fn find_byte(hay: &[u8], byte: u8, from: usize) -> Option<usize> {
    Some(from + memchr(byte, hay.get(from..)?)?)
}

/// JavaScript's `\s`.
fn is_js_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}')
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}' | '\u{FEFF}'
        )
}

/// A character of a bare link: `[^\s>)]`.
fn is_url_char(c: char) -> bool {
    !(is_js_space(c) || c == '>' || c == ')')
}

/// The markdown constructs of a content, left to right, as the bot's expression finds them.
struct Tokens<'a> {
    content: &'a str,
    /// Where the search for the next token starts.
    pos: usize,
    fence_close: NextOccurrence,
    backtick: NextOccurrence,
    line_end: NextOccurrence,
    close_bracket: NextOccurrence,
    close_paren: NextOccurrence,
}

impl<'a> Tokens<'a> {
    fn new(content: &'a str) -> Self {
        Tokens {
            content,
            pos: 0,
            fence_close: NextOccurrence::default(),
            backtick: NextOccurrence::default(),
            line_end: NextOccurrence::default(),
            close_bracket: NextOccurrence::default(),
            close_paren: NextOccurrence::default(),
        }
    }

    /// The length of the character at `at`, if there is one.
    fn char_len_at(&self, at: usize) -> Option<usize> {
        Some(self.content.get(at..)?.chars().next()?.len_utf8())
    }

    /// ```` ```.+?\n``` ```` (`.` matching any character) at `i`: the end of the match.
    fn fence(&mut self, i: usize) -> Option<usize> {
        let hay = self.content.as_bytes();
        if !hay.get(i..)?.starts_with(b"```") {
            return None;
        }
        // `.+?` takes at least one character, then stops at the first "\n```" after it.
        let body_min_end = i + 3 + self.char_len_at(i + 3)?;
        let close = self.fence_close.at_or_after(body_min_end, |p| {
            Some(p + fence_close_finder().find(hay.get(p..)?)?)
        })?;
        Some(close + 4)
    }

    /// `` `[^\n\r\u2028\u2029]+?` `` at `i`: the end of the match.
    fn inline_code(&mut self, i: usize) -> Option<usize> {
        let hay = self.content.as_bytes();
        // At least one character (a backtick will do), then the first backtick after it,
        // provided no line ends in between (nor at that first character).
        let body_min_end = i + 1 + self.char_len_at(i + 1)?;
        let line_end = self
            .line_end
            .at_or_after(i + 1, |p| find_line_terminator(hay, p))
            .unwrap_or(hay.len());
        let close = self
            .backtick
            .at_or_after(body_min_end, |p| find_byte(hay, b'`', p))?;
        (close < line_end).then_some(close + 1)
    }

    /// `\[([^\]]+)\]\(([^)]+)\)` at `i`. Neither part can hold its closing character, so each
    /// ends at the first one: nothing to backtrack over.
    fn markdown_link(&mut self, i: usize) -> Option<Token> {
        let hay = self.content.as_bytes();
        let label = i + 1;
        let label_end = self
            .close_bracket
            .at_or_after(label, |p| find_byte(hay, b']', p))?;
        if label_end == label || hay.get(label_end + 1) != Some(&b'(') {
            return None;
        }
        let url = label_end + 2;
        let url_end = self
            .close_paren
            .at_or_after(url, |p| find_byte(hay, b')', p))?;
        if url_end == url {
            return None;
        }
        Some(Token {
            start: i,
            end: url_end + 1,
            kind: Kind::Link {
                label: label..label_end,
                url: url..url_end,
            },
        })
    }

    /// `https?://[^\s>)]+` at `i`: the end of the match.
    fn bare_link(&self, i: usize) -> Option<usize> {
        let rest = self.content.get(i..)?;
        let scheme = if rest.starts_with("https://") {
            "https://"
        } else if rest.starts_with("http://") {
            "http://"
        } else {
            return None;
        };
        let url = &rest[scheme.len()..];
        let len = url.find(|c| !is_url_char(c)).unwrap_or(url.len());
        (len > 0).then_some(i + scheme.len() + len)
    }
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        // Every alternative starts with '`', '[' or 'h', so other bytes are skipped; the first
        // candidate where an alternative matches is the leftmost match, and at a backtick the
        // fence is tried before inline code, as in the expression.
        while let Some(offset) = memchr3(b'`', b'[', b'h', self.content.as_bytes().get(self.pos..)?)
        {
            let i = self.pos + offset;
            let token = match self.content.as_bytes().get(i) {
                Some(b'`') => self
                    .fence(i)
                    .or_else(|| self.inline_code(i))
                    .map(|end| Token {
                        start: i,
                        end,
                        kind: Kind::Code,
                    }),
                Some(b'[') => self.markdown_link(i),
                _ => self.bare_link(i).map(|end| Token {
                    start: i,
                    end,
                    kind: Kind::Bare,
                }),
            };
            match token {
                Some(token) => {
                    self.pos = token.end;
                    return Some(token);
                }
                // The candidate is an ASCII byte, so the next byte starts a character.
                None => self.pos = i + 1,
            }
        }
        self.pos = self.content.len();
        None
    }
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

    /// The split as it was: the bot's expression run by the `regex` crate (quadratic on unclosed
    /// constructs, exact otherwise). Kept as the reference the hand-written split must equal.
    mod oracle {
        use super::super::*;
        use regex::Regex;

        // JavaScript's `\s` and `.` (which excludes every line terminator, not only `\n`).
        pub const JS_SPACE: &str = r"\t\n\x0B\x0C\r \u{A0}\u{1680}\u{2000}-\u{200A}\u{2028}\u{2029}\u{202F}\u{205F}\u{3000}\u{FEFF}";

        pub fn markdown_regex() -> &'static Regex {
            static RE: OnceLock<Regex> = OnceLock::new();
            RE.get_or_init(|| {
                // In the fence, `^` right after `\n` always holds, so it is left out.
                let pattern = format!(
                    r"(?s:```.+?\n```)|`[^\n\r\u{{2028}}\u{{2029}}]+?`|\[([^\]]+)\]\(([^)]+)\)|https?://[^{JS_SPACE}>)]+"
                );
                Regex::new(&pattern).expect("the markdown pattern is a valid regex")
            })
        }

        fn markdown_link(token: &str) -> Option<(&str, &str)> {
            static RE: OnceLock<Regex> = OnceLock::new();
            let re = RE.get_or_init(|| {
                Regex::new(r"^\[([^\]]+)\]\(([^)]+)\)$").expect("the link pattern is a valid regex")
            });
            let caps = re.captures(token)?;
            Some((caps.get(1)?.as_str(), caps.get(2)?.as_str()))
        }

        pub fn spans(content: &str) -> Vec<(usize, usize)> {
            markdown_regex()
                .find_iter(content)
                .map(|m| (m.start(), m.end()))
                .collect()
        }

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
    }

    fn spans(content: &str) -> Vec<(usize, usize)> {
        Tokens::new(content).map(|t| (t.start, t.end)).collect()
    }

    /// The split and the statistics both equal the regex-based ones.
    fn assert_same_as_regex(content: &str) {
        assert_eq!(
            spans(content),
            oracle::spans(content),
            "split of {content:?}"
        );
        assert_eq!(
            message_stats(content),
            oracle::message_stats(content),
            "stats of {content:?}"
        );
    }

    fn repeat_to(unit: &str, bytes: usize) -> String {
        unit.repeat(bytes.div_ceil(unit.len()))
    }

    #[test]
    fn fixture_contents_split_as_the_regex_does() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/message_stats.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let cases: serde_json::Value = serde_json::from_str(&text).expect("fixture is valid JSON");
        let cases = cases.as_array().expect("an array");
        assert!(cases.len() >= 150, "the fixture has its cases");
        for case in cases {
            assert_same_as_regex(case["content"].as_str().expect("content"));
        }
    }

    /// Shapes that keep a construct open for long (the ones that made the regex quadratic),
    /// a few KB each so that the regex stays quick.
    #[test]
    fn hostile_shapes_split_as_the_regex_does() {
        let units = [
            "```a ",
            "```\n",
            "```a\n",
            "```\n```",
            "``` `",
            "```",
            "``",
            "`",
            "` ",
            "`a\n",
            "`a\u{2028}",
            "`\r`",
            "[",
            "[a",
            "[a]",
            "[a](",
            "[a](b",
            "](",
            "[a](`b` ",
            "[ `a` ",
            "[]()",
            "[a]()",
            "http://",
            "https://",
            "http:// ",
            "http://a)",
            "http://a> ",
            "http",
            "h",
            "```a [a]( http://x `b` ",
            "``` [\n`a http://",
        ];
        for unit in units {
            let content = repeat_to(unit, 3_000);
            assert_same_as_regex(&content);
            // A late closing fence: every earlier "```" could open a fence up to it.
            assert_same_as_regex(&format!("{content}\n```"));
            assert_same_as_regex(&format!("{content}\n```x\n```)]`"));
            assert_same_as_regex(&format!("x{content}"));
        }
        assert_same_as_regex(&format!("``` {}\n```", repeat_to("a ", 3_000)));
        assert_same_as_regex(&format!("```{}\n```", repeat_to("```a ", 3_000)));
    }

    /// xorshift64*: deterministic, so that a failure is reproducible.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        }
    }

    fn random_contents(seed: u64, alphabet: &[char], count: usize) -> Vec<String> {
        // Whole pieces as well as single characters, or the constructs would hardly ever form.
        let pieces = ["```", "\n```", "http://", "https://", "](", "[a]("];
        let mut rng = Rng(seed);
        (0..count)
            .map(|_| {
                let len = rng.below(40);
                let mut s = String::new();
                for _ in 0..len {
                    if rng.below(5) == 0 {
                        s.push_str(pieces[rng.below(pieces.len())]);
                    } else {
                        s.push(alphabet[rng.below(alphabet.len())]);
                    }
                }
                s
            })
            .collect()
    }

    const ALPHABET: [char; 18] = [
        '`', '\n', '[', ']', '(', ')', 'h', 't', 'p', ':', '/', 's', ' ', 'a', '<', '>', '\r',
        '\u{2028}',
    ];

    #[test]
    fn random_contents_split_as_the_regex_does() {
        for content in random_contents(0x9E37_79B9_7F4A_7C15, &ALPHABET, 4_000) {
            assert_same_as_regex(&content);
        }
    }

    /// Characters that share a first UTF-8 byte with U+2028 (a line end inside inline code, a
    /// space ending a bare link) or are other spaces and line ends of JavaScript's.
    #[test]
    fn random_contents_with_more_characters_split_as_the_regex_does() {
        let mut alphabet = ALPHABET.to_vec();
        alphabet.extend([
            '\u{2029}',
            '\u{2026}',
            '\u{2000}',
            '\u{200B}',
            '\u{A0}',
            '\u{FEFF}',
            '\t',
            'é',
            '日',
            '\u{1F600}',
        ]);
        for content in random_contents(0xD1B5_4A32_D192_ED03, &alphabet, 4_000) {
            assert_same_as_regex(&content);
        }
    }

    #[test]
    fn url_characters_are_the_regex_class() {
        let class = regex::Regex::new(&format!("^[^{}>)]$", oracle::JS_SPACE))
            .expect("the class is a valid regex");
        let mut buf = [0u8; 4];
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(
                is_url_char(c),
                class.is_match(c.encode_utf8(&mut buf)),
                "{c:?}"
            );
        }
    }

    /// The cache answers questions asked in any order, not only growing ones.
    #[test]
    fn next_occurrence_answers_in_any_order() {
        let hay = b"a]b]]c";
        let mut next = NextOccurrence::default();
        let mut ask = |p| next.at_or_after(p, |p| find_byte(hay, b']', p));
        assert_eq!(ask(2), Some(3));
        assert_eq!(ask(0), Some(1));
        assert_eq!(ask(4), Some(4));
        assert_eq!(ask(5), None);
        assert_eq!(ask(6), None);
        assert_eq!(ask(7), None);
        assert_eq!(ask(3), Some(3));
    }
}
