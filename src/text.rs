//! Shortening text that users control, always at a character boundary, so no slice can panic.

/// `text`, cut to at most `max` bytes at a character boundary, with `...` after it when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    format!("{}...", prefix_bytes(text, max))
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn prefix_bytes(text: &str, max: usize) -> &str {
    let end = (0..=max.min(text.len()))
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    &text[..end]
}

/// The first `count` characters of `text` (all of it when shorter).
pub fn prefix_chars(text: &str, count: usize) -> &str {
    match text.char_indices().nth(count) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let text = "aé€😀b";
        for max in 0..=text.len() + 1 {
            let prefix = prefix_bytes(text, max);
            assert!(prefix.len() <= max);
            assert!(text.starts_with(prefix));
        }
        assert_eq!(prefix_bytes(text, 2), "a");
        assert_eq!(cut(text, 3), "aé...");
        assert_eq!(cut("short", 10), "short");
    }

    #[test]
    fn prefixes_count_characters() {
        assert_eq!(prefix_chars("0123456789abcdef", 12), "0123456789ab");
        assert_eq!(prefix_chars("ééééééééééééé", 12), "éééééééééééé");
        assert_eq!(prefix_chars("abc", 12), "abc");
    }
}
