//! Rust source with its comments and the insides of its string and character literals blanked
//! out (newlines kept, so that offsets and line numbers stay those of the file): what is left
//! is code, whose `use` statements, paths and braces can be read with plain string matching.

/// `source` with every comment and literal's contents replaced by spaces.
pub fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    // Blanks `chars[from..to]`, keeping line breaks.
    let blank = |out: &mut String, from: usize, to: usize| {
        for &c in &chars[from..to.min(chars.len())] {
            out.push(if c == '\n' { '\n' } else { ' ' });
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                let end = (i..chars.len())
                    .find(|&j| chars[j] == '\n')
                    .unwrap_or(chars.len());
                blank(&mut out, i, end);
                i = end;
            }
            '/' if next == Some('*') => {
                // Block comments nest in Rust.
                let (mut depth, mut j) = (0usize, i);
                while j < chars.len() {
                    if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                        depth += 1;
                        j += 2;
                    } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            'r' | 'b' if starts_raw_string(&chars, i) && !ident_before(&chars, i) => {
                // r"…", r#"…"#, br"…": no escapes, closed by a quote and as many hashes.
                let mut j = i + 1;
                if chars[j] == 'r' {
                    j += 1;
                }
                let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
                let open = j + hashes; // the opening quote
                let mut end = open + 1;
                while end < chars.len() {
                    if chars[end] == '"'
                        && chars[end + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|&&c| c == '#')
                            .count()
                            == hashes
                    {
                        end += 1 + hashes;
                        break;
                    }
                    end += 1;
                }
                for &c in &chars[i..=open] {
                    out.push(c);
                }
                blank(&mut out, open + 1, end);
                i = end;
            }
            '"' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != '"' {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
                out.push('"');
                blank(&mut out, i + 1, j);
                if j < chars.len() {
                    out.push('"');
                }
                i = j + 1;
            }
            '\'' => match char_literal_end(&chars, i) {
                Some(end) => {
                    out.push('\'');
                    blank(&mut out, i + 1, end);
                    out.push('\'');
                    i = end + 1;
                }
                // A lifetime or a loop label.
                None => {
                    out.push(c);
                    i += 1;
                }
            },
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Whether a raw string (`r"`, `r#`, `br"`, `br#`) starts at `i`.
fn starts_raw_string(chars: &[char], i: usize) -> bool {
    let j = match (chars[i], chars.get(i + 1)) {
        ('r', _) => i + 1,
        ('b', Some('r')) => i + 2,
        _ => return false,
    };
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    chars.get(j + hashes) == Some(&'"') && (chars[i] == 'b' || hashes > 0 || chars[j] == '"')
}

/// Whether an identifier character precedes `i` (so that `r` in `for"` is not a raw string).
fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// The index of the closing quote of a character literal opening at `i`, or `None` for a
/// lifetime: `'a'`, `'\n'`, `'\u{1F600}'` are literals; `'a` and `'static` are not.
fn char_literal_end(chars: &[char], i: usize) -> Option<usize> {
    match chars.get(i + 1)? {
        // The escaped character itself may be a quote: `'\''`.
        '\\' => (i + 3..chars.len().min(i + 14)).find(|&j| chars[j] == '\''),
        _ => (chars.get(i + 2) == Some(&'\'')).then_some(i + 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_literals_are_blanked_lines_kept() {
        let src = "use a::b; // use c::d;\n/* x /* nested */ crate::e */ let s = \"crate::f\";\n\
                   let c = '{'; let r = r#\"crate::g\"#; fn f<'a>(x: &'a str) {}\n";
        let code = code_only(src);
        assert_eq!(code.lines().count(), src.lines().count());
        assert_eq!(code.len(), src.len());
        for gone in ["c::d", "crate::e", "crate::f", "crate::g", "'{'"] {
            assert!(!code.contains(gone), "{gone} in {code}");
        }
        for kept in ["use a::b;", "let s = \"", "fn f<'a>(x: &'a str) {}"] {
            assert!(code.contains(kept), "{kept} not in {code}");
        }
    }

    #[test]
    fn escaped_quotes_end_nothing() {
        let code = code_only("let s = \"a\\\"crate::x\"; crate::y;\nlet c = '\\'';");
        assert!(!code.contains("crate::x") && code.contains("crate::y"));
        assert!(code.ends_with("let c = '  ';"));
    }
}
