//! Text a guest controls (its failure and retry reasons, log lines, stdout,
//! panic messages) is data, never terminal control. [`escape`] renders every
//! character that could move the cursor, start a new line, recolour or
//! clear a terminal, reorder what is shown, or hide itself as a visible
//! escape, so a guest cannot forge output or log lines around its own text.
//! Every place that prints guest text to a person goes through it.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every character that is not plain visible text written as an
/// escape: `\n`, `\r`, `\t`, `\\` for a backslash (so an escape a guest typed
/// cannot pass for one made here), `\x1b` for other ASCII controls and DEL,
/// `\u{202e}` for C1 controls, bidi overrides and other invisible format
/// characters. Borrows when there is nothing to escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(needs_escape) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 16);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The lines of a multi-line text (a job's log), each escaped: split on
/// `\n` only, so a carriage return or any other separator stays inside its
/// line, visibly. A final newline ends the last line rather than starting
/// an empty one.
pub fn lines(s: &str) -> impl Iterator<Item = Cow<'_, str>> {
    let empty = s.is_empty();
    let s = s.strip_suffix('\n').unwrap_or(s);
    s.split('\n').filter(move |_| !empty).map(escape)
}

/// JSON text with every control and invisible format character outside
/// ASCII written as a `\u` escape (`\u202e`; a surrogate pair above the
/// basic plane). The same JSON value, but safe to show in a terminal: JSON
/// writers escape ASCII controls (so no value can end a line) but pass C1
/// controls and bidi overrides through raw. Such characters can only stand
/// inside JSON strings, where the escape means the same.
pub fn json_safe(json: &str) -> Cow<'_, str> {
    let hidden = |c: char| !c.is_ascii() && needs_escape(c);
    let Some(first) = json.find(hidden) else {
        return Cow::Borrowed(json);
    };
    let mut out = String::with_capacity(json.len() + 16);
    out.push_str(&json[..first]);
    for c in json[first..].chars() {
        if hidden(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether `c` is shown as an escape rather than as itself.
fn needs_escape(c: char) -> bool {
    c == '\\' || c.is_control() || is_invisible_format(c)
}

/// Characters that change how the text around them is shown, or show as
/// nothing: Unicode's format characters (bidi embeddings, overrides and
/// isolates, zero-width characters, the byte order mark, tags...), the line
/// and paragraph separators, and the fillers that render blank.
fn is_invisible_format(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in [
            "",
            "hello, Ada",
            "naïve café ✓ 日本語",
            "a \"quoted\" {json}",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(t) if t == s), "{s}");
        }
    }

    #[test]
    fn controls_and_format_characters_become_visible_escapes() {
        assert_eq!(escape("a\nb\r\tc\\d"), "a\\nb\\r\\tc\\\\d");
        assert_eq!(escape("\x1b[2J\x07\x00\x7f"), "\\x1b[2J\\x07\\x00\\x7f");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(
            escape("\u{2066}\u{200b}\u{feff}\u{2028}"),
            "\\u{2066}\\u{200b}\\u{feff}\\u{2028}"
        );
        assert_eq!(escape("tag\u{e0041}"), "tag\\u{e0041}");
    }

    #[test]
    fn no_escaped_text_holds_a_control_or_format_character() {
        let all: String = (0..0x11_0000).filter_map(char::from_u32).collect();
        let escaped = escape(&all);
        assert!(
            !escaped
                .chars()
                .any(|c| c.is_control() || is_invisible_format(c)),
            "a control or format character survived"
        );
    }

    #[test]
    fn json_keeps_its_value_and_loses_its_invisible_characters() {
        let value = "a\u{9b}31m\u{202e}b\u{e0041}\u{1f600}é\n";
        let json = serde_json::to_string(value).expect("a string");
        let safe = json_safe(&json);
        assert_eq!(safe, "\"a\\u009b31m\\u202eb\\udb40\\udc41\u{1f600}é\\n\"");
        let back: String = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back, value);
        assert!(matches!(json_safe("{\"a\":\"plain ✓\"}"), Cow::Borrowed(_)));
    }

    #[test]
    fn lines_split_on_newlines_only_and_escape_the_rest() {
        let log = "INFO one\r\nWARN \x1b[2Jtwo\n\nthree\n";
        let got: Vec<_> = lines(log).collect();
        assert_eq!(got, ["INFO one\\r", "WARN \\x1b[2Jtwo", "", "three"]);
        assert_eq!(lines("").count(), 0);
        assert_eq!(lines("\n").collect::<Vec<_>>(), [""]);
        assert_eq!(lines("no newline").collect::<Vec<_>>(), ["no newline"]);
    }
}
