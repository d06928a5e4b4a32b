//! Human tables and JSON output.

use serde::Serialize;

use crate::cli::Output;

/// Prints `value` as pretty JSON.
pub fn json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints JSON or runs `human`.
pub fn emit<T: Serialize>(out: Output, value: &T, human: impl FnOnce(&T)) -> anyhow::Result<()> {
    match out {
        Output::Json => json(value),
        Output::Human => {
            human(value);
            Ok(())
        }
    }
}

/// Prints an aligned table; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Replaces control characters so stored text can't drive the terminal.
pub fn safe(s: &str) -> String {
    // Control characters (escape sequences, newlines) and the invisible
    // characters that reorder or hide text on a terminal (bidirectional
    // overrides and isolates, marks) are shown as `?`.
    let hidden = |c: char| {
        matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
    };
    s.chars()
        .map(|c| if c.is_control() || hidden(c) { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::safe;

    /// What the broker prints from names an operator or a policy chose
    /// cannot move the cursor, clear the screen or reorder the line.
    #[test]
    fn escapes_and_bidirectional_overrides_are_shown_as_question_marks() {
        assert_eq!(safe("a\u{1b}[2Jb\nc"), "a?[2Jb?c");
        assert_eq!(safe("bob\u{202e}live"), "bob?live");
        assert_eq!(safe("x\u{2066}y\u{200f}"), "x?y?");
        assert_eq!(safe("a\u{061c}b\u{2028}c\u{2029}"), "a?b?c?");
        assert_eq!(safe("plain-ünïcode"), "plain-ünïcode");
    }
}
