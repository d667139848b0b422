//! A u64 as its decimal text, formatted on the stack: the canonical form of a snowflake, which
//! the TypeScript side hashes and the bot's tables store as TEXT. Both uses run once or more
//! per event, where `to_string` allocated each time.

/// Up to 20 ASCII digits, read through `Deref<Target = str>`.
#[derive(Clone, Copy)]
pub(crate) struct Decimal {
    digits: [u8; 20],
    start: u8,
}

impl Decimal {
    pub(crate) fn new(mut n: u64) -> Decimal {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal {
            digits,
            start: start as u8,
        }
    }
}

impl std::ops::Deref for Decimal {
    type Target = str;
    fn deref(&self) -> &str {
        // ASCII digits only.
        std::str::from_utf8(&self.digits[self.start as usize..]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::Decimal;

    #[test]
    fn matches_to_string() {
        for n in [0, 7, 10, 1_234_567_890, 81_384_788_765_712_384, u64::MAX] {
            assert_eq!(&*Decimal::new(n), n.to_string());
        }
    }
}
