//! The little CSV that dra-rs writes and reads back (`scores.csv`, and `runs.csv` of the
//! sweeps): RFC 4180 quoting, so that any path survives the round trip, commas, quotes and
//! line breaks included. Not a general CSV reader: no other dialects, no headers logic.

/// Quotes a field when it needs it: one holding a comma, a quote or a line break is enclosed
/// in quotes, its quotes doubled.
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Splits one record into its fields, undoing [`field`]'s quoting.
pub fn split_record(record: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = record.chars().peekable();
    while let Some(c) = chars.next() {
        let last = fields.last_mut().expect("fields starts with one field");
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                last.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => last.push(c),
        }
    }
    fields
}

/// The records of a CSV text, each with the 0-based index of its first line: lines, except
/// that a line break inside a quoted field continues the record. A trailing `\r` is dropped.
pub fn records(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut start, mut first_line, mut line, mut quoted) = (0, 0, 0, false);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '\n' => {
                if !quoted {
                    out.push((first_line, text[start..i].trim_end_matches('\r')));
                    start = i + 1;
                    first_line = line + 1;
                }
                line += 1;
            }
            _ => {}
        }
    }
    if start < text.len() {
        out.push((first_line, text[start..].trim_end_matches('\r')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_through_records() {
        let values = ["plain", "a,b", "say \"hi\"", "two\nlines", "", "crlf\r\n"];
        let line: Vec<String> = values.iter().map(|v| field(v)).collect();
        let text = format!("{}\nnext,row\n", line.join(","));
        let recs = records(&text);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1], (3, "next,row"));
        assert_eq!(split_record(recs[0].1), values);
    }
}
