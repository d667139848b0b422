//! Null members out of serde_json's compact output, without a value tree in between.
//!
//! The relay sends every event in Discord's shape, and serenity writes each field Discord left
//! out as null. Parsing serenity's text into `serde_json::Value` (a map per object) and writing
//! it again cost the relay about as much CPU as the rest of the pod's path; one pass over the
//! text, copying what stays, costs a fraction of that.
//!
//! The input is what serde_json writes (no whitespace outside strings); anything else is
//! refused (None), never guessed at.

/// A position in compact JSON text.
struct Walk<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Walk<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Past a string (at its opening quote): its text between the quotes, still escaped.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        loop {
            match *bytes.get(self.at)? {
                // An escape is a backslash and one ASCII byte (`\uXXXX` goes on as plain bytes).
                b'\\' => self.at += 2,
                b'"' => {
                    self.at += 1;
                    return self.text.get(start..self.at - 1);
                }
                _ => self.at += 1,
            }
        }
    }

    /// After a member or an item: past the comma (true), or past `close` (false).
    fn next_or_end(&mut self, close: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(true)
            }
            byte if byte == close => {
                self.at += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// Past one value.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => {
                self.at += 1;
                if self.peek()? == b'}' {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.expect(b':')?;
                    self.skip()?;
                    if !self.next_or_end(b'}')? {
                        return Some(());
                    }
                }
            }
            b'[' => {
                self.at += 1;
                if self.peek()? == b']' {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.skip()?;
                    if !self.next_or_end(b']')? {
                        return Some(());
                    }
                }
            }
            b'"' => self.string().map(drop),
            _ => {
                let start = self.at;
                while !matches!(self.peek(), None | Some(b',' | b'}' | b']')) {
                    self.at += 1;
                }
                (self.at > start).then_some(())
            }
        }
    }

    /// Copies one value to `out`, leaving out the null members `keep` does not name.
    fn copy(&mut self, out: &mut String, keep: &dyn Fn(&str) -> bool) -> Option<()> {
        match self.peek()? {
            b'{' => {
                self.at += 1;
                out.push('{');
                if self.peek()? == b'}' {
                    self.at += 1;
                    out.push('}');
                    return Some(());
                }
                let mut first = true;
                loop {
                    let member_at = self.at;
                    let key = self.string()?;
                    self.expect(b':')?;
                    let value_at = self.at;
                    if self.text.get(value_at..)?.starts_with("null") && !keep(key) {
                        self.skip()?;
                    } else {
                        if !first {
                            out.push(',');
                        }
                        first = false;
                        out.push_str(self.text.get(member_at..value_at)?);
                        self.copy(out, keep)?;
                    }
                    if !self.next_or_end(b'}')? {
                        break;
                    }
                }
                out.push('}');
            }
            b'[' => {
                self.at += 1;
                out.push('[');
                if self.peek()? == b']' {
                    self.at += 1;
                    out.push(']');
                    return Some(());
                }
                loop {
                    self.copy(out, keep)?;
                    if !self.next_or_end(b']')? {
                        break;
                    }
                    out.push(',');
                }
                out.push(']');
            }
            _ => {
                let start = self.at;
                self.skip()?;
                out.push_str(self.text.get(start..self.at)?);
            }
        }
        Some(())
    }
}

/// The value of the top-level member `key` of the compact JSON object `text`.
pub fn member<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut walk = Walk { text, at: 0 };
    walk.expect(b'{')?;
    if walk.peek()? == b'}' {
        return None;
    }
    loop {
        let name = walk.string()?;
        walk.expect(b':')?;
        let start = walk.at;
        walk.skip()?;
        if name == key {
            return text.get(start..walk.at);
        }
        if !walk.next_or_end(b'}')? {
            return None;
        }
    }
}

/// `text` with every object member whose value is null left out, at any depth, unless
/// `keep(key)`. None if `text` is not one compact JSON value.
pub fn without_nulls(text: &str, keep: impl Fn(&str) -> bool) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut walk = Walk { text, at: 0 };
    walk.copy(&mut out, &keep)?;
    (walk.at == text.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop_all(text: &str) -> Option<String> {
        without_nulls(text, |key| key == "nick")
    }

    #[test]
    fn null_members_leave_at_every_depth_and_kept_ones_stay() {
        assert_eq!(
            drop_all(
                r#"{"a":null,"b":1,"c":{"d":null,"nick":null},"e":[{"f":null},null,"x"],"g":null}"#
            )
            .as_deref(),
            Some(r#"{"b":1,"c":{"nick":null},"e":[{},null,"x"]}"#)
        );
    }

    #[test]
    fn strings_with_quotes_braces_and_escapes_are_copied_as_they_are() {
        let text = r#"{"k\"ey":"va,l}ue\\","n":null,"u":"\u00e9 é","z":[1,-2.5e3,true,false]}"#;
        assert_eq!(
            drop_all(text).as_deref(),
            Some(r#"{"k\"ey":"va,l}ue\\","u":"\u00e9 é","z":[1,-2.5e3,true,false]}"#)
        );
        assert_eq!(drop_all("{}").as_deref(), Some("{}"));
        assert_eq!(drop_all(r#"{"a":null}"#).as_deref(), Some("{}"));
        assert_eq!(drop_all("[]").as_deref(), Some("[]"));
    }

    #[test]
    fn what_is_not_compact_json_is_refused() {
        for bad in [
            r#"{"a":1"#,
            r#"{"a" :1}"#,
            r#"{"a":1}x"#,
            r#"{"a":}"#,
            r#"{"a":"1}"#,
            "",
        ] {
            assert_eq!(drop_all(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_top_level_member_is_found_whatever_comes_before_it() {
        let text = r#"{"t":"X","s":{"d":1},"d":{"a":[1,{"d":2}]},"op":0}"#;
        assert_eq!(member(text, "d"), Some(r#"{"a":[1,{"d":2}]}"#));
        assert_eq!(member(text, "op"), Some("0"));
        assert_eq!(member(text, "missing"), None);
        assert_eq!(member("{}", "d"), None);
    }
}
