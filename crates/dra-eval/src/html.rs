//! The one HTML page shell and escaper of dra-rs, shared by a run's `report.html` and the
//! sweeps' `table.html`: self-contained pages (inline style, no script, no external resource)
//! that open the same anywhere, offline, years later.

/// Text made safe inside HTML elements and attribute values, and inside inline SVG (which the
/// HTML parser reads with the same rules): `&`, `<`, `>`, `"` and `'` become character
/// references.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '"' => out += "&quot;",
            '\'' => out += "&#39;",
            c => out.push(c),
        }
    }
    out
}

/// A complete HTML5 page: `title` (escaped here) in the head, `style` (CSS, as written) in an
/// inline `<style>` element, and `body`, which must already be HTML, as the document's body.
/// The page itself loads nothing; what the body holds is up to the caller.
pub fn page(title: &str, style: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{style}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape_html(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_character_that_can_break_out() {
        assert_eq!(escape_html("'<&>\" ok"), "&#39;&lt;&amp;&gt;&quot; ok");
    }

    #[test]
    fn page_is_self_contained_and_escapes_its_title() {
        let p = page("a <b> & co", "p { }", "<p>x</p>\n");
        assert!(p.starts_with("<!DOCTYPE html>\n"));
        assert!(p.contains("<meta charset=\"utf-8\">"));
        assert!(p.contains("<title>a &lt;b&gt; &amp; co</title>\n<style>p { }</style>"));
        assert!(p.ends_with("<body>\n<p>x</p>\n</body>\n</html>\n"));
        assert!(!p.contains("<script") && !p.contains("http") && !p.contains("src="));
    }
}
