//! The split against the bot's regular expression (fixtures, hostile shapes, random
//! contents) and the counts of code blocks, links and keycaps.

use super::split::{find_byte, is_url_char, NextOccurrence, Tokens};
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
    pub(super) const JS_SPACE: &str = r"\t\n\x0B\x0C\r \u{A0}\u{1680}\u{2000}-\u{200A}\u{2028}\u{2029}\u{202F}\u{205F}\u{3000}\u{FEFF}";

    pub(super) fn markdown_regex() -> &'static Regex {
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

    pub(super) fn spans(content: &str) -> Vec<(usize, usize)> {
        markdown_regex()
            .find_iter(content)
            .map(|m| (m.start(), m.end()))
            .collect()
    }

    pub(super) fn message_stats(content: &str) -> MessageStats {
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
