//! The page's text sections: the title and settings, the notes, the headline numbers, the
//! decision at the threshold and the per-class table.

use std::fmt::Write;

use super::content::Report;
use super::format::*;
use super::plots::anomaly_classes;
use crate::html::escape_html;

/// The title, a one-line count of the test set, and the settings.
pub(super) fn header(page: &mut String, report: &Report) {
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
pub(super) fn notes(page: &mut String, notes: &[String]) {
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
pub(super) fn headline(page: &mut String, report: &Report) {
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
pub(super) fn decision(page: &mut String, report: &Report) {
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
pub(super) fn class_table(page: &mut String, report: &Report) {
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
