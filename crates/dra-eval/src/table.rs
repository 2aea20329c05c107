//! Paper-style result tables: a row per data set, a column per setting, cells `mean±std`,
//! held in a polars `DataFrame` and written as Markdown, HTML and CSV.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;

use crate::html::escape_html;
use crate::summary::MeanStd;

/// Builds a table cell by cell; rows and columns keep their order of first appearance.
#[derive(Clone, Debug, Default)]
pub struct TableBuilder {
    first_column: String,
    rows: Vec<String>,
    columns: Vec<String>,
    cells: BTreeMap<(usize, usize), String>,
}

impl TableBuilder {
    /// `first_column` names the row labels, e.g. `Dataset`.
    pub fn new(first_column: impl Into<String>) -> Self {
        Self {
            first_column: first_column.into(),
            ..Default::default()
        }
    }

    fn index(list: &mut Vec<String>, key: &str) -> usize {
        match list.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                list.push(key.to_string());
                list.len() - 1
            }
        }
    }

    /// Declares a column so that it appears (in this position) even if it stays empty.
    pub fn column(&mut self, column: &str) -> &mut Self {
        Self::index(&mut self.columns, column);
        self
    }

    /// Sets a cell to free text.
    pub fn text(&mut self, row: &str, column: &str, text: impl Into<String>) -> &mut Self {
        let r = Self::index(&mut self.rows, row);
        let c = Self::index(&mut self.columns, column);
        self.cells.insert((r, c), text.into());
        self
    }

    /// Sets a cell to `mean±std`.
    pub fn mean_std(&mut self, row: &str, column: &str, value: MeanStd) -> &mut Self {
        self.text(row, column, value.to_string())
    }

    /// The table as a `DataFrame` of strings; empty cells are `-`.
    pub fn build(&self) -> PolarsResult<DataFrame> {
        let mut columns = vec![Column::new(
            self.first_column.as_str().into(),
            self.rows.clone(),
        )];
        for (c, name) in self.columns.iter().enumerate() {
            let values: Vec<String> = (0..self.rows.len())
                .map(|r| {
                    self.cells
                        .get(&(r, c))
                        .cloned()
                        .unwrap_or_else(|| "-".into())
                })
                .collect();
            columns.push(Column::new(name.as_str().into(), values));
        }
        DataFrame::new_infer_height(columns)
    }
}

/// Renders a table of string columns as GitHub Markdown.
pub fn to_markdown(df: &DataFrame) -> PolarsResult<String> {
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| markdown_cell(n))
        .collect();
    let mut out = format!("| {} |\n", names.join(" | "));
    out += &format!("|{}\n", "---|".repeat(names.len()));
    let columns: Vec<&StringChunked> = df
        .columns()
        .iter()
        .map(|c| c.str())
        .collect::<PolarsResult<_>>()?;
    for r in 0..df.height() {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| markdown_cell(c.get(r).unwrap_or("-")))
            .collect();
        out += &format!("| {} |\n", cells.join(" | "));
    }
    Ok(out)
}

/// A cell's text that cannot break the table: `|` escaped, line breaks as spaces (a data set's
/// or class's name comes from a folder name, which may hold either).
fn markdown_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// Renders a table of string columns as an HTML `<table>` fragment (a header row in `<thead>`,
/// the rows in `<tbody>`), every cell escaped: names come from folder names, which may hold
/// anything, and the page must show them as text, never run them as markup.
pub fn to_html(df: &DataFrame) -> PolarsResult<String> {
    let mut out = String::from("<table>\n<thead>\n<tr>");
    for name in df.get_column_names() {
        out += &format!("<th>{}</th>", escape_html(name));
    }
    out += "</tr>\n</thead>\n<tbody>\n";
    let columns: Vec<&StringChunked> = df
        .columns()
        .iter()
        .map(|c| c.str())
        .collect::<PolarsResult<_>>()?;
    for r in 0..df.height() {
        out += "<tr>";
        for c in &columns {
            out += &format!("<td>{}</td>", escape_html(c.get(r).unwrap_or("-")));
        }
        out += "</tr>\n";
    }
    out += "</tbody>\n</table>\n";
    Ok(out)
}

/// A complete, self-contained HTML5 page (the shell of [`crate::html::page`]): `title`
/// (escaped there) as its title and first heading, then `body`, which must already be HTML
/// (e.g. from [`to_html`]). A small inline style makes the table readable.
pub fn html_page(title: &str, body: &str) -> String {
    let heading = format!("<h1>{}</h1>\n{body}", escape_html(title));
    crate::html::page(title, PAGE_STYLE, &heading)
}

/// The page's style: borders, padding, zebra rows and numbers that line up (tabular figures).
const PAGE_STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.3em; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
thead th { background: #eee; }
tbody tr:nth-child(even) { background: #f7f7f7; }
p { max-width: 60em; }
";

/// Writes the table as CSV with a header row (the `csv` crate: polars' own CSV writer would
/// bring its whole I/O layer into the build, for a few dozen cells).
pub fn write_csv(df: &DataFrame, path: &Path) -> std::io::Result<()> {
    let columns: Vec<&StringChunked> = df
        .columns()
        .iter()
        .map(|c| c.str())
        .collect::<PolarsResult<_>>()
        .map_err(std::io::Error::other)?;
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(df.get_column_names().iter().map(|n| n.as_str()))?;
    for r in 0..df.height() {
        w.write_record(columns.iter().map(|c| c.get(r).unwrap_or("")))?;
    }
    w.flush()
}

/// Converts a CSV file (header row, types inferred) to Parquet, through a temporary file and a
/// rename so that a reader never sees half a file.
#[cfg(feature = "parquet")]
pub fn csv_to_parquet(csv: &Path, parquet: &Path) -> PolarsResult<()> {
    let mut df = CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(csv.to_path_buf()))?
        .finish()?;
    let tmp = parquet.with_extension("parquet.tmp");
    ParquetWriter::new(std::fs::File::create(&tmp)?).finish(&mut df)?;
    std::fs::rename(&tmp, parquet)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_markdown_and_csv() {
        let mut t = TableBuilder::new("Dataset");
        t.column("10-shot").column("1-shot");
        t.mean_std("carpet", "10-shot", MeanStd::of(&[0.94, 0.96]).unwrap());
        t.text("grid", "1-shot", "absent");
        let df = t.build().unwrap();
        let md = to_markdown(&df).unwrap();
        assert_eq!(
            md,
            "| Dataset | 10-shot | 1-shot |\n|---|---|---|\n| carpet | 0.950±0.010 | - |\n| grid | - | absent |\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        write_csv(&df, &path).unwrap();
        let csv = std::fs::read_to_string(path).unwrap();
        assert_eq!(csv.lines().next().unwrap(), "Dataset,10-shot,1-shot");
        assert!(csv.contains("carpet,0.950±0.010,-"));
    }

    #[test]
    fn builds_html_with_every_cell_escaped() {
        let mut t = TableBuilder::new("Dataset");
        t.column("a<b");
        t.text("carpet", "a<b", "<b>&\"x\"");
        t.text("it's", "a<b", "0.950±0.010");
        let html = to_html(&t.build().unwrap()).unwrap();
        assert_eq!(
            html,
            "<table>\n<thead>\n<tr><th>Dataset</th><th>a&lt;b</th></tr>\n</thead>\n<tbody>\n\
             <tr><td>carpet</td><td>&lt;b&gt;&amp;&quot;x&quot;</td></tr>\n\
             <tr><td>it&#39;s</td><td>0.950±0.010</td></tr>\n</tbody>\n</table>\n"
        );
    }

    #[test]
    fn html_page_is_self_contained() {
        let page = html_page("general: <AUC> & co", "<p>x</p>\n");
        assert!(page.starts_with("<!DOCTYPE html>\n"));
        assert!(page.contains("<meta charset=\"utf-8\">"));
        assert!(page.contains("<title>general: &lt;AUC&gt; &amp; co</title>"));
        assert!(page.contains("<h1>general: &lt;AUC&gt; &amp; co</h1>\n<p>x</p>\n</body>"));
        assert!(!page.contains("<script") && !page.contains("http") && !page.contains("src="));
        assert!(page.ends_with("</html>\n"));
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        let mut t = TableBuilder::new("Dataset");
        t.column("a|b");
        t.text("odd|name\nhere", "a|b", "x");
        let md = to_markdown(&t.build().unwrap()).unwrap();
        assert_eq!(
            md,
            "| Dataset | a\\|b |\n|---|---|\n| odd\\|name here | x |\n"
        );
    }
}
