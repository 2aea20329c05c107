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

mod gallery;
mod plots;
mod svg;

use std::collections::BTreeSet;
use std::fmt::Write;

use base64::Engine;

use gallery::gallery;
use plots::{anomaly_classes, curves, histograms, loss};
#[cfg(test)]
use plots::{bin_edges, histogram};

use crate::html::{self, escape_html};
use crate::Confusion;

/// Everything `report.html` shows, computed by the caller.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The page's heading, e.g. `dra on synthetic/weave`.
    pub title: String,
    /// The settings table, in order: method, backbone, image size, steps, seed, data folder…
    pub facts: Vec<(String, String)>,
    /// Warnings shown in a highlighted box at the top, e.g. "AUC-ROC below 0.5: …".
    pub notes: Vec<String>,
    /// Image-level area under the ROC curve, normals against every anomaly.
    pub auc_roc: f64,
    /// Image-level average precision, normals against every anomaly.
    pub auc_pr: f64,
    /// Pixel-level (AUROC, AUPRO) when the test set has ground-truth masks.
    pub pixel: Option<(f64, f64)>,
    /// The ROC curve as (false positive rate, true positive rate) points, in drawing order.
    pub roc: Vec<(f64, f64)>,
    /// The precision-recall curve as (recall, precision) points, in drawing order.
    pub pr: Vec<(f64, f64)>,
    /// Every test image with its score: the histograms and the counts come from these.
    pub scores: Vec<ScoredImage>,
    /// One row per anomaly class: the normals against that class alone.
    pub per_class: Vec<ClassAuc>,
    /// The decision threshold and what it does on the test set, when the run has one.
    pub decision: Option<Decision>,
    /// The training log; empty for `dra eval`, which trains nothing.
    pub loss: Vec<LossPoint>,
    /// Picture sections: worst false positives, worst false negatives, best detections…
    pub gallery: Vec<GallerySection>,
}

/// One scored test image.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredImage {
    /// The image's path as the user knows it.
    pub path: String,
    /// Its class: `good` for normals, else the anomaly's class (its folder's name).
    pub class: String,
    /// Whether the image is an anomaly (the ground truth, not the model's decision).
    pub anomalous: bool,
    /// The model's anomaly score: higher is more anomalous.
    pub score: f64,
}

/// How well the scores separate the test normals from one anomaly class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassAuc {
    /// The anomaly class.
    pub class: String,
    /// Its number of test images.
    pub n: usize,
    /// AUC-ROC of the normals against this class alone.
    pub auc_roc: f64,
    /// AUC-PR of the normals against this class alone.
    pub auc_pr: f64,
}

/// A decision threshold and its confusion counts on the test set: an image scoring above the
/// threshold is flagged as anomalous (the counts are the caller's; the page only says so).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The score above which an image is flagged.
    pub threshold: f64,
    /// The false positive rate the threshold was chosen for, as a fraction (0.05 for 5%);
    /// `None` for a threshold given by hand.
    pub target_fpr: Option<f64>,
    /// The normals the threshold was set on, e.g. "12 held-out training normals".
    pub source: String,
    /// What the threshold does on the test set; the rates shown are the counts' own
    /// ([`Confusion::precision`] and the others).
    pub counts: Confusion,
}

/// One entry of the training log.
#[derive(Clone, Debug, PartialEq)]
pub struct LossPoint {
    /// Optimiser step, counted over the whole run: the loss plot's x axis.
    pub step: usize,
    /// The epoch the step belongs to; a change marks an epoch boundary on the plot.
    pub epoch: usize,
    /// The total loss.
    pub total: f64,
    /// The four heads' losses (normal, seen, pseudo, residual) for methods that have them.
    pub heads: Option<[f64; 4]>,
    /// The learning rate at this step; a change is marked on the plot.
    pub lr: f64,
}

/// A titled group of pictures, e.g. the worst false positives.
#[derive(Clone, Debug, PartialEq)]
pub struct GallerySection {
    /// The section's heading.
    pub title: String,
    /// One or two sentences on what the pictures are and how they were chosen.
    pub explanation: String,
    /// The pictures, in display order.
    pub items: Vec<GalleryItem>,
}

/// One test image of the gallery, with what the model saw in it. The pictures are inlined in
/// the page (base64 adds a third to their size) and shown 140 pixels wide, so a few hundred
/// pixels a side is plenty.
#[derive(Clone, Debug, PartialEq)]
pub struct GalleryItem {
    /// The text under the pictures: file name, class, score.
    pub caption: String,
    /// The image itself, PNG-encoded.
    pub image_png: Vec<u8>,
    /// The anomaly map over the image, PNG-encoded, when the method has one.
    pub overlay_png: Option<Vec<u8>>,
    /// The ground-truth mask, PNG-encoded, when the data set has masks.
    pub mask_png: Option<Vec<u8>>,
}

/// Colours (Okabe–Ito, told apart by colour-blind readers) shared by the plots and legends.
const BLUE: &str = "#0072B2";
const ORANGE: &str = "#D55E00";
const GREY: &str = "#8a929c";
const DARK: &str = "#1d232b";
const AMBER: &str = "#C77C00";
/// The heads of [`LossPoint::heads`], in order, with their plot colours.
const HEADS: [(&str, &str); 4] = [
    ("normal head", BLUE),
    ("seen head", ORANGE),
    ("pseudo head", "#009E73"),
    ("residual head", "#CC79A7"),
];

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

/// A PNG as a `data:` URI, so that the page needs no file beside it.
fn png_uri(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

/// An AUC or other score in [0, 1], to three decimals.
fn metric(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "n/a".into()
    }
}

/// A score or threshold: four decimals in the usual range, scientific notation outside it,
/// so that neither 0.00012 nor 123456.7 loses its digits.
fn number(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "n/a".into()
    } else if a == 0.0 || (1e-3..1e4).contains(&a) {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

/// A fraction as a percentage; `None` as a dash.
fn percent(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{:.1}%", 100.0 * x),
        _ => "—".into(),
    }
}

/// The share of anomalies among the scored images: the AUC-PR of a model that guesses.
fn prevalence(scores: &[ScoredImage]) -> Option<f64> {
    let anomalies = scores.iter().filter(|s| s.anomalous).count();
    (!scores.is_empty()).then(|| anomalies as f64 / scores.len() as f64)
}

/// `n` and the noun for it: `1 class`, `3 classes`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The title, a one-line count of the test set, and the settings.
fn header(page: &mut String, report: &Report) {
    let _ = write!(page, "<header><h1>{}</h1>", escape_html(&report.title));
    let normals = report.scores.iter().filter(|s| !s.anomalous).count();
    let anomalies = report.scores.len() - normals;
    let classes = anomaly_classes(&report.scores).len();
    let anomalies = match anomalies {
        0 => "no anomalies".to_string(),
        n => format!(
            "{} in {}",
            count(n, "anomaly", "anomalies"),
            count(classes, "class", "classes")
        ),
    };
    let _ = write!(
        page,
        "<p class=\"sub\">{} scored: {normals} normal, {anomalies}.</p>",
        count(report.scores.len(), "test image", "test images"),
    );
    if !report.facts.is_empty() {
        page.push_str("<table class=\"facts\">");
        for (key, value) in &report.facts {
            let _ = write!(
                page,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape_html(key),
                escape_html(value)
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</header>\n");
}

/// The caller's warnings, above everything else so that no number is read without them.
fn notes(page: &mut String, notes: &[String]) {
    if notes.is_empty() {
        return;
    }
    page.push_str("<section class=\"notes\"><h2>Read this first</h2><ul>");
    for note in notes {
        let _ = write!(page, "<li>{}</li>", escape_html(note));
    }
    page.push_str("</ul></section>\n");
}

/// The headline numbers as cards, each with what it measures and its chance level.
fn headline(page: &mut String, report: &Report) {
    let prevalence = prevalence(&report.scores);
    page.push_str("<section><h2>How well the scores separate anomalies</h2><div class=\"cards\">");
    card(
        page,
        "AUC-ROC",
        &metric(report.auc_roc),
        "image level; chance is 0.5",
    );
    let chance = prevalence.map_or(String::new(), |p| format!("; chance is {}", metric(p)));
    card(
        page,
        "AUC-PR",
        &metric(report.auc_pr),
        &format!("image level{chance}"),
    );
    match report.pixel {
        Some((auroc, aupro)) => {
            card(
                page,
                "pixel AUROC",
                &metric(auroc),
                "pixel level, against the test masks",
            );
            card(page, "AUPRO", &metric(aupro), "overlap per defect region");
        }
        None => card(
            page,
            "pixel metrics",
            "no masks",
            "the test set has no ground-truth masks",
        ),
    }
    page.push_str("</div></section>\n");
}

/// One headline number with its name and a line on what it means.
fn card(page: &mut String, name: &str, value: &str, explanation: &str) {
    let _ = write!(
        page,
        "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div><div class=\"e\">{}</div></div>",
        escape_html(name),
        escape_html(value),
        escape_html(explanation)
    );
}

/// What the threshold does on the test set, or how to get a threshold when there is none.
fn decision(page: &mut String, report: &Report) {
    page.push_str("<section><h2>Decision at a threshold</h2>");
    let Some(d) = &report.decision else {
        page.push_str(
            "<p>This run has no decision threshold, so it reports scores only: no image is \
             called normal or anomalous. To get one, set it on normal images the model has not \
             trained on with <code>dra calibrate --model RUN --normals DIR</code>, or train with \
             <code>--calibration-fraction</code> to hold out part of the training normals for \
             it.</p></section>\n",
        );
        return;
    };
    let c = &d.counts;
    let origin = match d.target_fpr {
        Some(rate) => format!(
            "The threshold was chosen for a false positive rate of {} on {}",
            percent(Some(rate)),
            d.source
        ),
        None => format!("The threshold was {}", d.source),
    };
    let _ = write!(
        page,
        "<p>An image is flagged as anomalous when its score is above <b class=\"num\">{}</b>. \
         {}; below is what it does on the test set.</p>",
        escape_html(&number(d.threshold)),
        escape_html(&origin)
    );
    let _ = write!(
        page,
        "<div class=\"decision\"><table class=\"confusion\">\
         <tr><td></td><th>flagged anomalous</th><th>passed as normal</th></tr>\
         <tr><th>anomalous ({})</th><td class=\"good\"><b>{}</b><br><span>true positives</span></td>\
         <td class=\"bad\"><b>{}</b><br><span>false negatives</span></td></tr>\
         <tr><th>normal ({})</th><td class=\"bad\"><b>{}</b><br><span>false positives</span></td>\
         <td class=\"good\"><b>{}</b><br><span>true negatives</span></td></tr></table>",
        c.tp + c.fn_,
        c.tp,
        c.fn_,
        c.fp + c.tn,
        c.fp,
        c.tn
    );
    let rates = [
        (
            "precision",
            percent(c.precision()),
            "of the flagged images are anomalies",
        ),
        (
            "recall",
            percent(c.recall()),
            "of the anomalies are flagged",
        ),
        (
            "F1",
            c.f1().map_or("—".into(), metric),
            "harmonic mean of precision and recall",
        ),
        (
            "false positive rate",
            percent(c.fpr()),
            "of the normals are flagged",
        ),
    ];
    page.push_str("<table class=\"rates\">");
    for (name, value, what) in rates {
        let _ = write!(
            page,
            "<tr><th>{}<div class=\"e\">{}</div></th><td class=\"num\">{}</td></tr>",
            escape_html(name),
            escape_html(what),
            escape_html(&value)
        );
    }
    page.push_str("</table></div></section>\n");
}

/// Per-class AUCs with bars, so that a class the model misses stands out.
fn class_table(page: &mut String, report: &Report) {
    page.push_str("<section><h2>Per anomaly class</h2>");
    if report.per_class.is_empty() {
        page.push_str("<p>No per-class results: the test set has no labelled anomaly classes.</p></section>\n");
        return;
    }
    let normals = report.scores.iter().filter(|s| !s.anomalous).count();
    let _ = write!(
        page,
        "<p class=\"sub\">Each row scores the {} test normals against that class's images alone: \
         a class the model misses stands out here even when the overall AUC is high.</p>",
        normals
    );
    page.push_str(
        "<table class=\"classes\"><tr><th>anomaly class</th><th class=\"num\">images</th>\
         <th class=\"num\">AUC-ROC</th><th></th><th class=\"num\">AUC-PR</th><th></th></tr>",
    );
    for row in &report.per_class {
        let _ = write!(
            page,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            escape_html(&row.class),
            row.n,
            metric(row.auc_roc),
            bar(row.auc_roc),
            metric(row.auc_pr),
            bar(row.auc_pr)
        );
    }
    page.push_str("</table></section>\n");
}

/// A small horizontal bar for a value in [0, 1], drawn in CSS.
fn bar(x: f64) -> String {
    let pct = if x.is_finite() {
        (x * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    };
    format!("<div class=\"bar\"><span style=\"width:{pct:.1}%\"></span></div>")
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
