//! Text a peer or the command line supplied, shown safely in a log or error line.

use std::fmt;

/// Shows `text` unchanged when every character is printable ASCII other than a space, a
/// quote or a backslash, as every ordinary host name, user name and URL is; otherwise
/// quoted with Rust's escapes (`"a b"`, `"x\n"`, `"\u{202e}"`). So a peer can neither
/// break a log line (a newline, U+2028), forge the fields after its own (a space), nor
/// turn the rest of the line around (U+202E).
#[derive(Clone, Copy)]
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = |c: char| c.is_ascii_graphic() && c != '"' && c != '\\';
        if !self.0.is_empty() && self.0.chars().all(plain) { f.write_str(self.0) } else { write!(f, "{:?}", self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_shown_as_it_is_and_anything_else_quoted_and_escaped() {
        let table = [
            ("example.org", "example.org"),
            ("socks5://u:***@h:1", "socks5://u:***@h:1"),
            ("", "\"\""),
            ("evil.org up 1 B", "\"evil.org up 1 B\""),
            ("a\nb", "\"a\\nb\""),
            ("a\u{2028}b", "\"a\\u{2028}b\""),
            ("a\u{202e}b", "\"a\\u{202e}b\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            ("caf\u{e9}", "\"caf\u{e9}\""),
        ];
        for (text, shown) in table {
            assert_eq!(Printable(text).to_string(), shown, "{text:?}");
        }
    }
}
