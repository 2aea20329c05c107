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

mod svg;

use std::collections::BTreeSet;
use std::fmt::Write;

use base64::Engine;

use svg::{Chart, Ticks};

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
    /// Anomalies flagged.
    pub tp: usize,
    /// Normals flagged.
    pub fp: usize,
    /// Normals passed.
    pub tn: usize,
    /// Anomalies passed (missed).
    pub fn_: usize,
    /// Share of the flagged images that are anomalies; `None` when nothing is flagged.
    pub precision: Option<f64>,
    /// Share of the anomalies that are flagged; `None` without anomalies.
    pub recall: Option<f64>,
    /// Harmonic mean of precision and recall; `None` when either is undefined or both are 0.
    pub f1: Option<f64>,
    /// Share of the normals that are flagged; `None` without normals.
    pub fpr: Option<f64>,
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
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        escape(&report.title)
    );
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
         </main>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    page
}

/// Escapes text for HTML content and attribute values, and for inline SVG (which the HTML
/// parser reads with the same rules).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
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
    let _ = write!(page, "<header><h1>{}</h1>", escape(&report.title));
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
                escape(key),
                escape(value)
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
        let _ = write!(page, "<li>{}</li>", escape(note));
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
        escape(name),
        escape(value),
        escape(explanation)
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
        escape(&number(d.threshold)),
        escape(&origin)
    );
    let _ = write!(
        page,
        "<div class=\"decision\"><table class=\"confusion\">\
         <tr><td></td><th>flagged anomalous</th><th>passed as normal</th></tr>\
         <tr><th>anomalous ({})</th><td class=\"good\"><b>{}</b><br><span>true positives</span></td>\
         <td class=\"bad\"><b>{}</b><br><span>false negatives</span></td></tr>\
         <tr><th>normal ({})</th><td class=\"bad\"><b>{}</b><br><span>false positives</span></td>\
         <td class=\"good\"><b>{}</b><br><span>true negatives</span></td></tr></table>",
        d.tp + d.fn_,
        d.tp,
        d.fn_,
        d.fp + d.tn,
        d.fp,
        d.tn
    );
    let rates = [
        (
            "precision",
            percent(d.precision),
            "of the flagged images are anomalies",
        ),
        ("recall", percent(d.recall), "of the anomalies are flagged"),
        (
            "F1",
            d.f1.map_or("—".into(), metric),
            "harmonic mean of precision and recall",
        ),
        (
            "false positive rate",
            percent(d.fpr),
            "of the normals are flagged",
        ),
    ];
    page.push_str("<table class=\"rates\">");
    for (name, value, what) in rates {
        let _ = write!(
            page,
            "<tr><th>{}<div class=\"e\">{}</div></th><td class=\"num\">{}</td></tr>",
            escape(name),
            escape(what),
            escape(&value)
        );
    }
    page.push_str("</table></div></section>\n");
}

/// A legend under a plot, in HTML rather than in the SVG so that it wraps instead of
/// covering the data: a swatch and a label per entry.
fn legend<S: AsRef<str>>(page: &mut String, entries: &[(&str, Swatch, S)]) {
    page.push_str("<div class=\"legend\">");
    for (colour, swatch, label) in entries {
        let class = match swatch {
            Swatch::Line => "sw",
            Swatch::Dashed => "sw dash",
            Swatch::Box => "sw box",
            Swatch::Dot => "sw dot",
        };
        let _ = write!(
            page,
            "<span><i class=\"{class}\" style=\"color:{colour}\"></i>{}</span>",
            escape(label.as_ref())
        );
    }
    page.push_str("</div>");
}

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Swatch {
    Line,
    Dashed,
    Box,
    Dot,
}

/// ROC and PR curves side by side, with their chance lines and the threshold's point.
fn curves(page: &mut String, report: &Report) {
    page.push_str("<section><h2>ROC and precision-recall curves</h2><div class=\"figs\">");
    let unit = Ticks::inside(0.0, 1.0, 5);
    let operating = report.decision.as_ref();

    let title = format!("ROC curve · AUC-ROC {}", metric(report.auc_roc));
    let mut roc = Chart::new(460.0, 400.0, (0.0, 1.0), (0.0, 1.0));
    roc.axes(&unit, &unit, "false positive rate", "true positive rate");
    roc.line(&[(0.0, 0.0), (1.0, 1.0)], GREY, 1.2, Some("5 4"));
    roc.line(&report.roc, BLUE, 2.2, None);
    if report.roc.is_empty() {
        roc.message("no ROC points");
    }
    let roc_dot = operating.and_then(|d| Some((d.fpr?, d.recall?)));
    if let Some(point) = roc_dot {
        roc.dot(point, ORANGE);
    }
    let _ = write!(page, "<figure><figcaption>{}</figcaption>", escape(&title));
    page.push_str(&roc.finish(&title));
    let mut entries = vec![
        (
            BLUE,
            Swatch::Line,
            format!("ROC, AUC {}", metric(report.auc_roc)),
        ),
        (GREY, Swatch::Dashed, "chance".to_string()),
    ];
    if roc_dot.is_some() {
        entries.push((
            ORANGE,
            Swatch::Dot,
            "the threshold's operating point".into(),
        ));
    }
    legend(page, &entries);
    page.push_str("</figure>");

    let title = format!("Precision-recall curve · AUC-PR {}", metric(report.auc_pr));
    let mut pr = Chart::new(460.0, 400.0, (0.0, 1.0), (0.0, 1.0));
    pr.axes(&unit, &unit, "recall", "precision");
    let prevalence = prevalence(&report.scores);
    if let Some(p) = prevalence {
        pr.line(&[(0.0, p), (1.0, p)], GREY, 1.2, Some("5 4"));
    }
    pr.line(&report.pr, BLUE, 2.2, None);
    if report.pr.is_empty() {
        pr.message("no precision-recall points");
    }
    let pr_dot = operating.and_then(|d| Some((d.recall?, d.precision?)));
    if let Some(point) = pr_dot {
        pr.dot(point, ORANGE);
    }
    let _ = write!(page, "<figure><figcaption>{}</figcaption>", escape(&title));
    page.push_str(&pr.finish(&title));
    let mut entries = vec![(
        BLUE,
        Swatch::Line,
        format!("PR, AUC {}", metric(report.auc_pr)),
    )];
    if let Some(p) = prevalence {
        entries.push((
            GREY,
            Swatch::Dashed,
            format!("chance (share of anomalies, {})", metric(p)),
        ));
    }
    if pr_dot.is_some() {
        entries.push((
            ORANGE,
            Swatch::Dot,
            "the threshold's operating point".into(),
        ));
    }
    legend(page, &entries);
    page.push_str("</figure></div></section>\n");
}

/// The anomaly classes among the scores, sorted, so that the histograms come in a fixed order.
fn anomaly_classes(scores: &[ScoredImage]) -> Vec<&str> {
    let classes: BTreeSet<&str> = scores
        .iter()
        .filter(|s| s.anomalous)
        .map(|s| s.class.as_str())
        .collect();
    classes.into_iter().collect()
}

/// Common bin edges for every histogram: equal bins over all finite scores (and the threshold,
/// so that its line lies on the axis). All scores equal give one unit-wide range around them.
fn bin_edges(scores: &[ScoredImage], threshold: Option<f64>) -> (f64, f64, usize) {
    let values = scores.iter().map(|s| s.score).chain(threshold);
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if !(lo.is_finite() && hi.is_finite()) {
        (0.0, 1.0)
    } else if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    // About √n bins: enough to show a shape on 60 scores without empty combs on 20.
    let bins = ((scores.len() as f64).sqrt().ceil() as usize).clamp(8, 30);
    (lo, hi, bins)
}

/// Counts of `values` in `bins` equal bins over `[lo, hi]`; the maximum falls in the last bin.
fn histogram(values: impl Iterator<Item = f64>, lo: f64, hi: f64, bins: usize) -> Vec<usize> {
    let mut counts = vec![0; bins];
    for v in values.filter(|v| v.is_finite()) {
        let i = ((v - lo) / (hi - lo) * bins as f64).floor();
        counts[(i.max(0.0) as usize).min(bins - 1)] += 1;
    }
    counts
}

/// One histogram per anomaly class against the normals, all on the same bins, so that the
/// panels can be compared at a glance.
fn histograms(page: &mut String, report: &Report) {
    page.push_str("<section><h2>Score distributions</h2>");
    if report.scores.is_empty() {
        page.push_str("<p>No test scores to show.</p></section>\n");
        return;
    }
    let threshold = report.decision.as_ref().map(|d| d.threshold);
    let (lo, hi, bins) = bin_edges(&report.scores, threshold);
    let width = (hi - lo) / bins as f64;
    let normals: Vec<f64> = report
        .scores
        .iter()
        .filter(|s| !s.anomalous)
        .map(|s| s.score)
        .collect();
    let normal_counts = histogram(normals.iter().copied(), lo, hi, bins);
    let classes = anomaly_classes(&report.scores);
    let mut entries = vec![(BLUE, Swatch::Box, "normal (good)")];
    if classes.is_empty() {
        page.push_str(
            "<p class=\"sub\">The test normals alone: the test set has no anomalies.</p>",
        );
    } else {
        page.push_str(
            "<p class=\"sub\">The test normals against each anomaly class, on the same bins. \
             The less the two overlap, the better the scores separate that class.</p>",
        );
        entries.push((ORANGE, Swatch::Box, "anomaly class"));
    }
    if threshold.is_some() {
        entries.push((DARK, Swatch::Dashed, "threshold"));
    }
    legend(page, &entries);
    page.push_str("<div class=\"hists\">");
    // With no anomaly at all, one plot shows the normals alone.
    let panels: Vec<Option<&str>> = if classes.is_empty() {
        vec![None]
    } else {
        classes.iter().copied().map(Some).collect()
    };
    let x_ticks = Ticks::inside(lo, hi, 5);
    for class in panels {
        let class_counts = class.map(|c| {
            let values = report.scores.iter().filter(|s| s.anomalous && s.class == c);
            histogram(values.map(|s| s.score), lo, hi, bins)
        });
        let top = normal_counts
            .iter()
            .chain(class_counts.iter().flatten())
            .copied()
            .max()
            .unwrap_or(0)
            .max(1);
        let ((y_lo, y_hi), mut y_ticks) = Ticks::covering(0.0, top as f64, 4);
        // Counts are whole: a tick at 0.5 would be a lie.
        y_ticks.values.retain(|v| v.fract() == 0.0);
        y_ticks.decimals = 0;
        let mut chart = Chart::new(360.0, 230.0, (lo, hi), (y_lo, y_hi));
        chart.axes(&x_ticks, &y_ticks, "score", "images");
        let series =
            std::iter::once((&normal_counts, BLUE)).chain(class_counts.iter().map(|c| (c, ORANGE)));
        for (counts, colour) in series {
            for (i, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                let x0 = lo + i as f64 * width;
                chart.rect((x0, x0 + width), (0.0, n as f64), colour, 0.55);
            }
        }
        if let Some(t) = threshold {
            chart.vline(t, DARK, Some("5 4"), Some(("threshold", 0)));
        }
        let n_class = class.map_or(0, |c| {
            report
                .scores
                .iter()
                .filter(|s| s.anomalous && s.class == c)
                .count()
        });
        let title = match class {
            Some(c) => {
                let auc = report.per_class.iter().find(|a| a.class == c);
                let auc = auc.map_or(String::new(), |a| {
                    format!(" · AUC-ROC {}", metric(a.auc_roc))
                });
                format!("good ({}) vs {c} ({n_class}){auc}", normals.len())
            }
            None => format!("good ({}); no anomalies", normals.len()),
        };
        let _ = write!(page, "<figure><figcaption>{}</figcaption>", escape(&title));
        page.push_str(&chart.finish(&title));
        page.push_str("</figure>");
    }
    page.push_str("</div></section>\n");
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
            escape(&row.class),
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

/// The training loss against step, each head's loss too, with epochs and learning-rate
/// changes marked; a sentence when there was no training.
fn loss(page: &mut String, log: &[LossPoint]) {
    page.push_str("<section><h2>Training loss</h2>");
    if log.is_empty() {
        page.push_str(
            "<p>No training log: this report comes from a model that was scored without \
             training here (<code>dra eval</code>).</p></section>\n",
        );
        return;
    }
    let with_heads = log.iter().any(|p| p.heads.is_some());
    // The lines to draw, each its colour and points: the total first, then the heads.
    let mut series: Vec<(&str, Vec<(f64, f64)>)> =
        vec![(DARK, log.iter().map(|p| (p.step as f64, p.total)).collect())];
    if with_heads {
        for (i, (_, colour)) in HEADS.iter().enumerate() {
            let points = log
                .iter()
                .filter_map(|p| Some((p.step as f64, p.heads?[i])))
                .collect();
            series.push((colour, points));
        }
    }
    let ys = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .filter(|y| y.is_finite());
    let (y_min, y_max) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    // Losses are rarely negative: from 0, the plot shows how far training brought them down.
    let y_min = if y_min >= 0.0 { 0.0 } else { y_min };
    let ((y_lo, y_hi), y_ticks) = Ticks::covering(y_min, y_max, 5);
    let (x_min, x_max) = (
        log.iter().map(|p| p.step).min(),
        log.iter().map(|p| p.step).max(),
    );
    let (x_lo, x_hi) = (x_min.unwrap_or(0) as f64, x_max.unwrap_or(0) as f64);
    let x_ticks = Ticks::inside(x_lo, x_hi, 8);
    let mut chart = Chart::new(1040.0, 340.0, (x_lo, x_hi), (y_lo, y_hi));
    chart.axes(&x_ticks, &y_ticks, "step", "loss");

    // Epoch boundaries halfway between the last step of an epoch and the first of the next.
    let boundaries: Vec<(f64, usize)> = log
        .windows(2)
        .filter(|w| w[0].epoch != w[1].epoch)
        .map(|w| ((w[0].step + w[1].step) as f64 / 2.0, w[1].epoch))
        .collect();
    // Beyond this many, the lines would grey the whole plot.
    let draw_epochs = !boundaries.is_empty() && boundaries.len() <= 60;
    if draw_epochs {
        for &(x, _) in &boundaries {
            chart.vline(x, "#d3d8de", None, None);
        }
        // Each epoch's number over its span, when the spans are wide enough to hold it.
        let mut starts = vec![(x_lo, log[0].epoch)];
        starts.extend(boundaries.iter().copied());
        let span_px = chart.plot_width() / starts.len() as f64;
        for (i, &(start, epoch)) in starts.iter().enumerate() {
            let end = starts.get(i + 1).map_or(x_hi, |s| s.0);
            let text = if span_px >= 70.0 {
                format!("epoch {epoch}")
            } else if span_px >= 22.0 {
                epoch.to_string()
            } else {
                continue;
            };
            chart.top_label((start + end) / 2.0, &text);
        }
    }
    let changes: Vec<(f64, f64)> = log
        .windows(2)
        .filter(|w| (w[0].lr - w[1].lr).abs() > 1e-12 * w[0].lr.abs().max(w[1].lr.abs()))
        .map(|w| ((w[0].step + w[1].step) as f64 / 2.0, w[1].lr))
        .collect();
    // A schedule that changes the rate at every step is a curve, not a few events to mark.
    let draw_lr = !changes.is_empty() && changes.len() <= 12;
    if draw_lr {
        for (i, &(x, lr)) in changes.iter().enumerate() {
            chart.vline(x, AMBER, Some("3 3"), Some((&format!("lr {lr:e}"), i % 2)));
        }
    }
    for (colour, points) in series.iter().skip(1) {
        chart.line(points, colour, 1.4, None);
    }
    chart.line(&series[0].1, DARK, 2.2, None);

    let first = &log[0];
    let last = &log[log.len() - 1];
    let _ = write!(
        page,
        "<p class=\"sub\">{} logged over steps {}–{}; the total loss went from {} to {}; \
         learning rate {:e} at the start",
        count(log.len(), "point", "points"),
        first.step,
        last.step,
        number(first.total),
        number(last.total),
        first.lr
    );
    if changes.len() > 12 {
        let _ = write!(
            page,
            ", changed {} times, {:e} at the end",
            changes.len(),
            last.lr
        );
    }
    page.push_str(".</p><figure class=\"wide\">");
    page.push_str(&chart.finish("Training loss against step"));
    let mut entries: Vec<(&str, Swatch, &str)> = vec![(DARK, Swatch::Line, "total")];
    if with_heads {
        entries.extend(
            HEADS
                .iter()
                .map(|(name, colour)| (*colour, Swatch::Line, *name)),
        );
    }
    if draw_epochs {
        entries.push(("#c3c9d0", Swatch::Line, "epoch boundary"));
    }
    if draw_lr {
        entries.push((AMBER, Swatch::Dashed, "learning-rate change"));
    }
    legend(page, &entries);
    page.push_str("</figure></section>\n");
}

/// The picture sections: each item's image, anomaly map and mask side by side.
fn gallery(page: &mut String, sections: &[GallerySection]) {
    page.push_str("<section><h2>Gallery</h2>");
    if sections.is_empty() {
        page.push_str("<p>No pictures were selected for this report.</p>");
    }
    for section in sections {
        let _ = write!(
            page,
            "<h3>{}</h3><p class=\"sub\">{}</p>",
            escape(&section.title),
            escape(&section.explanation)
        );
        if section.items.is_empty() {
            page.push_str("<p class=\"muted\">No image in this group.</p>");
            continue;
        }
        page.push_str("<div class=\"gallery\">");
        for item in &section.items {
            let shots: Vec<(&str, &[u8])> = [
                Some(("image", item.image_png.as_slice())),
                item.overlay_png.as_deref().map(|p| ("anomaly map", p)),
                item.mask_png.as_deref().map(|p| ("ground truth", p)),
            ]
            .into_iter()
            .flatten()
            .collect();
            let caption = escape(&item.caption);
            // The figure's width is set from its pictures, so that a long caption wraps under
            // them instead of widening the figure.
            let _ = write!(
                page,
                "<figure class=\"item w{}\"><div class=\"shots\">",
                shots.len()
            );
            for (label, png) in shots {
                let _ = write!(
                    page,
                    "<div class=\"shot\"><img src=\"{}\" alt=\"{}: {label}\">{label}</div>",
                    png_uri(png),
                    caption
                );
            }
            let _ = write!(page, "</div><figcaption>{caption}</figcaption></figure>");
        }
        page.push_str("</div>");
    }
    page.push_str("</section>\n");
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
