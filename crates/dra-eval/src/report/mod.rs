//! A run's `report.html`: one self-contained page that shows what a run did and how well its
//! model separates normals from anomalies, for a reader who has only a browser.
//!
//! The page carries everything inline (plots as `<svg>`, pictures as `data:` PNG URIs, its
//! style in a `<style>` element) and no script, so that it can be mailed, archived with the
//! run, or opened years later with no network. The caller computes every number (curves,
//! confusion counts, gallery pictures); [`render`] only lays them out, and cannot fail.
//!
//! Numbers are assumed finite: a run whose scores hold a NaN has already failed its metrics.
//! A non-finite value that slips through prints as "n/a" and is left out of the plots, rather
//! than panicking. Every text of the input is escaped: paths may hold `<`, `&` and quotes.
//!
//! The page is written into a `String`, which cannot fail to grow: the `fmt::Result`s of
//! `write!` are dropped with `let _`.

mod content;
mod format;
mod gallery;
mod plots;
mod sections;
mod svg;

use std::fmt::Write;

pub use content::{
    ClassAuc, Decision, GalleryItem, GallerySection, LossPoint, Report, ScoredImage,
};
use gallery::gallery;
use plots::{curves, histograms, loss};
use sections::{class_table, decision, header, headline, notes};

use crate::html;

/// The page as one HTML document.
pub fn render(report: &Report) -> String {
    let mut page = String::with_capacity(64 * 1024);
    page.push_str("<main>\n");
    header(&mut page, report);
    notes(&mut page, &report.notes);
    headline(&mut page, report);
    decision(&mut page, report);
    curves(&mut page, report);
    histograms(&mut page, report);
    class_table(&mut page, report);
    loss(&mut page, &report.loss);
    gallery(&mut page, &report.gallery);
    let _ = write!(
        page,
        "<footer>Written by dra-rs {}. This page is self-contained: it loads nothing.</footer>\n\
         </main>\n",
        env!("CARGO_PKG_VERSION")
    );
    html::page(&report.title, STYLE, &page)
}

/// The page's style: system fonts only, so that nothing is fetched.
const STYLE: &str = "
*{box-sizing:border-box}
body{margin:0;background:#f3f4f6;color:#1d232b;font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue','DejaVu Sans',Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 24px 40px}
h1{font-size:26px;margin:0 0 2px;overflow-wrap:anywhere}
h2{font-size:19px;margin:0 0 10px}
h3{font-size:16px;margin:18px 0 2px}
header,section{background:#fff;border:1px solid #dfe3e8;border-radius:10px;padding:18px 22px;margin:0 0 18px}
code{font:13px ui-monospace,'DejaVu Sans Mono',Menlo,Consolas,monospace;background:#eef0f3;padding:1px 5px;border-radius:4px}
.sub{color:#59626d;margin:0 0 12px}
.muted{color:#6b7480}
.num{font-variant-numeric:tabular-nums}
table{border-collapse:collapse}
th,td{text-align:left;vertical-align:top;padding:4px 14px 4px 0}
.facts th{color:#59626d;font-weight:500;white-space:nowrap}
.facts td{overflow-wrap:anywhere}
.notes{background:#fff6dd;border:1px solid #f0c36d;border-left:6px solid #d99a00}
.notes h2{color:#7a4f00}
.notes ul{margin:0;padding-left:20px}
.notes li{margin:2px 0;overflow-wrap:anywhere}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 180px;border:1px solid #dfe3e8;border-radius:8px;padding:10px 14px}
.card .k{color:#59626d;font-size:13px;font-weight:600}
.card .v{font-size:30px;font-weight:650;font-variant-numeric:tabular-nums;line-height:1.25}
.card .e,.rates .e{color:#6b7480;font-size:13px}
.decision{display:grid;grid-template-columns:auto auto;justify-content:start;gap:20px 40px;align-items:center}
@media (max-width:860px){.decision{grid-template-columns:auto}}
.confusion th,.confusion td{border:1px solid #d6dae0;padding:8px 16px;text-align:center;vertical-align:middle}
.confusion tr:first-child td{border:none}
.confusion th{background:#f6f7f9;font-weight:600;font-size:14px}
.confusion td b{font-size:22px;font-variant-numeric:tabular-nums}
.confusion td span{font-size:12px;color:#59626d}
.confusion .good{background:#e7f4ec}
.confusion .bad{background:#fbe9e7}
.rates th,.rates td{padding:3px 0 5px}
.rates th{font-weight:600}
.rates .e{font-weight:400;line-height:1.3}
.rates td.num{text-align:right;font-weight:650;font-size:18px;padding-left:28px;vertical-align:middle}
.confusion th{white-space:nowrap}
.figs{display:flex;flex-wrap:wrap;gap:24px}
.figs figure{flex:1 1 440px;max-width:520px}
figure{margin:0}
figcaption{font-weight:600;font-size:14px;margin-bottom:4px;overflow-wrap:anywhere}
svg.chart{display:block;width:100%;height:auto}
svg text{font-size:12px;fill:#3b434d}
svg .axis-title{font-size:13px;fill:#1d232b}
svg .mark{font-size:11px;fill:#6b7480}
svg .grid{stroke:#edf0f3;stroke-width:1}
svg .frame{fill:none;stroke:#9aa3ad;stroke-width:1}
.legend{display:flex;flex-wrap:wrap;gap:4px 18px;font-size:13px;color:#3b434d;margin:6px 0 10px}
.legend span{white-space:nowrap}
.sw{display:inline-block;width:20px;height:0;border-top:3px solid currentColor;vertical-align:middle;margin-right:6px}
.sw.dash{border-top-style:dashed;border-top-width:2px}
.sw.box{height:12px;border:none;background:currentColor;opacity:.6}
.sw.dot{width:10px;height:10px;border:none;border-radius:50%;background:currentColor}
.hists{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:18px}
.hists figure{display:flex;flex-direction:column}
.hists figcaption{flex:1}
.classes td,.classes th{padding:5px 14px 5px 0;border-bottom:1px solid #edf0f3}
.classes .num{text-align:right}
.bar{width:120px;height:8px;margin-top:8px;background:#e6eaef;border-radius:4px;overflow:hidden}
.bar span{display:block;height:100%;background:#0072B2}
.gallery{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.item{border:1px solid #dfe3e8;border-radius:8px;padding:8px;background:#fafbfc}
.item.w1{width:158px}.item.w2{width:304px}.item.w3{width:450px}
.shots{display:flex;gap:6px}
.shot{font-size:11px;color:#6b7480;text-align:center}
.shot img{display:block;width:140px;height:140px;object-fit:contain;background:#e9ecef;border-radius:4px;margin-bottom:2px}
.item figcaption{font-weight:400;font-size:12px;margin:6px 0 0;color:#3b434d}
footer{color:#8a929c;font-size:12px;text-align:center}
";

#[cfg(test)]
mod tests;
