//! The report's plots: ROC and precision-recall curves, score histograms per anomaly class,
//! and the training loss, as inline SVG with HTML legends.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::content::*;
use super::format::*;
use super::svg::{Chart, Ticks};
use crate::html::escape_html;

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
            escape_html(label.as_ref())
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
pub(super) fn curves(page: &mut String, report: &Report) {
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
    let roc_dot = operating.and_then(|d| Some((d.counts.fpr()?, d.counts.recall()?)));
    if let Some(point) = roc_dot {
        roc.dot(point, ORANGE);
    }
    let _ = write!(
        page,
        "<figure><figcaption>{}</figcaption>",
        escape_html(&title)
    );
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
    let pr_dot = operating.and_then(|d| Some((d.counts.recall()?, d.counts.precision()?)));
    if let Some(point) = pr_dot {
        pr.dot(point, ORANGE);
    }
    let _ = write!(
        page,
        "<figure><figcaption>{}</figcaption>",
        escape_html(&title)
    );
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
pub(super) fn anomaly_classes(scores: &[ScoredImage]) -> Vec<&str> {
    let classes: BTreeSet<&str> = scores
        .iter()
        .filter(|s| s.anomalous)
        .map(|s| s.class.as_str())
        .collect();
    classes.into_iter().collect()
}

/// Common bin edges for every histogram: equal bins over all finite scores (and the threshold,
/// so that its line lies on the axis). All scores equal give one unit-wide range around them.
pub(super) fn bin_edges(scores: &[ScoredImage], threshold: Option<f64>) -> (f64, f64, usize) {
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
pub(super) fn histogram(
    values: impl Iterator<Item = f64>,
    lo: f64,
    hi: f64,
    bins: usize,
) -> Vec<usize> {
    let mut counts = vec![0; bins];
    for v in values.filter(|v| v.is_finite()) {
        let i = ((v - lo) / (hi - lo) * bins as f64).floor();
        counts[(i.max(0.0) as usize).min(bins - 1)] += 1;
    }
    counts
}

/// One histogram per anomaly class against the normals, all on the same bins, so that the
/// panels can be compared at a glance.
pub(super) fn histograms(page: &mut String, report: &Report) {
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
        let _ = write!(
            page,
            "<figure><figcaption>{}</figcaption>",
            escape_html(&title)
        );
        page.push_str(&chart.finish(&title));
        page.push_str("</figure>");
    }
    page.push_str("</div></section>\n");
}

/// The training loss against step, each head's loss too, with epochs and learning-rate
/// changes marked; a sentence when there was no training.
pub(super) fn loss(page: &mut String, log: &[LossPoint]) {
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
