//! AUTOMATIC1111's prompt emphasis syntax, as its
//! [`modules/prompt_parser.py`](https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/82a973c04367123ae98bd9abdf80d9eda9b910e2/modules/prompt_parser.py)
//! (`parse_prompt_attention`) reads it, so prompts copied from Civitai pages and from
//! A1111's PNG `parameters` mean what their authors meant:
//!
//! - `(text)` multiplies the attention to `text` by 1.1, `[text]` divides it by 1.1, and
//!   they nest: `((text))` is 1.21;
//! - `(text:1.5)` sets a factor (any number, negative too);
//! - `\(`, `\)`, `\[`, `\]`, `\\` are the characters themselves; a lone `\` is dropped;
//! - `BREAK` (a whole word, capitals) starts a new 75-token chunk;
//! - unbalanced brackets are accepted: a bracket never closed applies to the end, a
//!   closing bracket without an opening one is text;
//! - neighbouring pieces of equal weight are merged.
//!
//! ComfyUI reads `(text:w)` the same way but does not rescale the weighted embedding to
//! its former mean (see [`super::emphasis`]).

/// One piece of a parsed prompt.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// Text and the factor its tokens' embeddings are multiplied by.
    Text(String, f64),
    /// `BREAK`: the next text starts a new chunk.
    Break,
}

const UP: f64 = 1.1;
const DOWN: f64 = 1.0 / 1.1;

/// Parses A1111's emphasis syntax. An empty prompt is one empty piece of weight 1.
pub fn parse(prompt: &str) -> Vec<Piece> {
    // Pieces as (text, weight), `BREAK` as weight -1 exactly as A1111 marks it: its merge
    // of equal weights then treats a `BREAK` next to text weighted -1 the way A1111 does.
    let mut out: Vec<(String, f64)> = Vec::new();
    let (mut round, mut square): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let multiply = |out: &mut Vec<(String, f64)>, from: usize, by: f64| {
        for piece in &mut out[from..] {
            piece.1 *= by;
        }
    };
    let mut rest = prompt;
    while !rest.is_empty() {
        let (token, after) = next_token(rest);
        let raw = &rest[..rest.len() - after.len()];
        rest = after;
        match token {
            Token::Escaped(s) => out.push((s.to_string(), 1.0)),
            Token::Open('(') => round.push(out.len()),
            Token::Open(_) => square.push(out.len()),
            Token::Weight(Some(w)) if !round.is_empty() => {
                let from = round.pop().expect("non-empty");
                multiply(&mut out, from, w);
            }
            Token::Close(')') if !round.is_empty() => {
                let from = round.pop().expect("non-empty");
                multiply(&mut out, from, UP);
            }
            Token::Close(']') if !square.is_empty() => {
                let from = square.pop().expect("non-empty");
                multiply(&mut out, from, DOWN);
            }
            // Text, and brackets or weights with nothing to apply to (a weight A1111 could
            // not read as a number, `1.2.3`, is text too: A1111 itself fails there).
            _ => push_text(&mut out, raw),
        }
    }
    for from in round {
        multiply(&mut out, from, UP);
    }
    for from in square {
        multiply(&mut out, from, DOWN);
    }
    if out.is_empty() {
        out.push((String::new(), 1.0));
    }
    let mut merged: Vec<(String, f64)> = Vec::with_capacity(out.len());
    for (text, w) in out {
        match merged.last_mut() {
            Some(last) if last.1 == w => last.0.push_str(&text),
            _ => merged.push((text, w)),
        }
    }
    merged
        .into_iter()
        .map(|(text, w)| {
            if w == -1.0 && text == "BREAK" {
                Piece::Break
            } else {
                Piece::Text(text, w)
            }
        })
        .collect()
}

/// The syntax's tokens, A1111's alternatives in its order of preference.
enum Token<'a> {
    /// `\(` and the like: the character itself (a lone `\`: nothing).
    Escaped(&'a str),
    /// `(` or `[`.
    Open(char),
    /// `:w)` with `w` read as a number (`None` when it is not one).
    Weight(Option<f64>),
    /// `)` or `]`.
    Close(char),
    /// A run of other characters, or a `:` that starts no weight.
    Text,
}

/// The first token of the non-empty `s` and what follows it.
fn next_token(s: &str) -> (Token<'_>, &str) {
    let c = s.chars().next().expect("non-empty");
    let after = &s[c.len_utf8()..];
    match c {
        '\\' => match after.chars().next() {
            Some(e @ ('(' | ')' | '[' | ']' | '\\')) => {
                (Token::Escaped(&after[..1]), &after[e.len_utf8()..])
            }
            _ => (Token::Escaped(""), after),
        },
        '(' | '[' => (Token::Open(c), after),
        ')' | ']' => (Token::Close(c), after),
        ':' => match weight(after) {
            Some((w, rest)) => (Token::Weight(w), rest),
            None => (Token::Text, after),
        },
        _ => {
            let end = s.find(['\\', '(', ')', '[', ']', ':']).unwrap_or(s.len());
            (Token::Text, &s[end..])
        }
    }
}

/// After a `:`, `\s*[+-]?[.\d]+\s*\)`: the number (if it parses) and what follows.
fn weight(s: &str) -> Option<(Option<f64>, &str)> {
    let t = s.trim_start();
    let sign = usize::from(t.starts_with(['+', '-']));
    let digits = t[sign..]
        .find(|c: char| !(c == '.' || c.is_ascii_digit()))
        .unwrap_or(t.len() - sign);
    if digits == 0 {
        return None;
    }
    let number = &t[..sign + digits];
    let rest = t[sign + digits..].trim_start().strip_prefix(')')?;
    Some((number.parse().ok(), rest))
}

/// Appends text, split at `BREAK` words (the spaces around them dropped).
fn push_text(out: &mut Vec<(String, f64)>, text: &str) {
    for (i, part) in split_break(text).into_iter().enumerate() {
        if i > 0 {
            out.push(("BREAK".into(), -1.0));
        }
        out.push((part.to_string(), 1.0));
    }
}

/// `text` split at `\s*\bBREAK\b\s*` (Python's Unicode `\b` and `\s`).
fn split_break(text: &str) -> Vec<&str> {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut parts = Vec::new();
    let mut start = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find("BREAK") {
        let at = from + found;
        let end = at + "BREAK".len();
        if word(text[..at].chars().next_back()) || word(text[end..].chars().next()) {
            from = end;
            continue;
        }
        let before = text[start..at].trim_end_matches(char::is_whitespace);
        parts.push(before);
        let after = text[end..].trim_start_matches(char::is_whitespace);
        start = text.len() - after.len();
        from = start;
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str, w: f64) -> Piece {
        Piece::Text(s.into(), w)
    }

    #[test]
    fn brackets_weights_and_escapes() {
        assert_eq!(
            parse("a (b) c"),
            vec![text("a ", 1.0), text("b", 1.1), text(" c", 1.0)]
        );
        assert_eq!(parse("((b))"), vec![text("b", 1.1 * 1.1)]);
        assert_eq!(parse("[b]"), vec![text("b", 1.0 / 1.1)]);
        assert_eq!(parse("(b:1.5) c"), vec![text("b", 1.5), text(" c", 1.0)]);
        assert_eq!(parse("\\(b\\)"), vec![text("(b)", 1.0)]);
        assert_eq!(parse(""), vec![text("", 1.0)]);
    }

    #[test]
    fn unbalanced_brackets_are_accepted() {
        assert_eq!(parse("a (b"), vec![text("a ", 1.0), text("b", 1.1)]);
        assert_eq!(parse("a) b"), vec![text("a) b", 1.0)]);
        assert_eq!(parse("b:1.2) c"), vec![text("b:1.2) c", 1.0)]);
    }

    #[test]
    fn break_splits_only_as_a_word() {
        assert_eq!(
            parse("a BREAK b"),
            vec![text("a", 1.0), Piece::Break, text("b", 1.0)]
        );
        assert_eq!(parse("aBREAK b"), vec![text("aBREAK b", 1.0)]);
    }
}
