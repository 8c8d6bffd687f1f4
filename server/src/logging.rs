//! Request values in logs are escaped: a visitor must not be able to forge log lines or
//! send terminal escape sequences to an operator's console.

use std::fmt;

/// Longest request value written to a log line, in characters.
const MAX_LOGGED_CHARS: usize = 512;

/// Displays `text` with control characters (and backslashes) escaped, truncated.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX_LOGGED_CHARS {
                return f.write_str("...");
            }
            if c.is_control() || c == '\\' || c == '\u{2028}' || c == '\u{2029}' {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            Escaped("a\nb\r\x1b[31m\\").to_string(),
            "a\\nb\\r\\u{1b}[31m\\\\"
        );
        assert_eq!(Escaped(&"x".repeat(600)).to_string().len(), 515);
    }
}
