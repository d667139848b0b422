//! The split of a message's content at markdown constructs, in one linear pass: each "where
//! is the next X" is answered from a cached forward search (see the module above for why not
//! a regular expression).

use memchr::{memchr, memchr3, memmem};
use std::ops::Range;
use std::sync::OnceLock;

/// Which alternative of the bot's expression matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) struct Token {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) kind: Kind,
}

/// The answer to "first occurrence at or after `p`", kept between questions. The split asks
/// with growing `p`, so an answer stays good until `p` passes it, and a "none" stays good for
/// good: each byte is searched over at most once per cache, which is what keeps the split
/// linear. A smaller `p` than before is searched again, so the answer is right for any order.
#[derive(Default)]
pub(super) struct NextOccurrence {
    asked: Option<(usize, Option<usize>)>,
}

impl NextOccurrence {
    pub(super) fn at_or_after(
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

pub(super) fn find_byte(hay: &[u8], byte: u8, from: usize) -> Option<usize> {
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
pub(super) fn is_url_char(c: char) -> bool {
    !(is_js_space(c) || c == '>' || c == ')')
}

/// The markdown constructs of a content, left to right, as the bot's expression finds them.
pub(super) struct Tokens<'a> {
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
    pub(super) fn new(content: &'a str) -> Self {
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
