//! How the page writes numbers and pictures, and the colours its plots share.

use base64::Engine;

use super::content::ScoredImage;

/// Colours (Okabe–Ito, told apart by colour-blind readers) shared by the plots and legends.
pub(super) const BLUE: &str = "#0072B2";
pub(super) const ORANGE: &str = "#D55E00";
pub(super) const GREY: &str = "#8a929c";
pub(super) const DARK: &str = "#1d232b";
pub(super) const AMBER: &str = "#C77C00";
/// The heads of [`LossPoint::heads`](super::content::LossPoint::heads), in order, with their plot colours.
pub(super) const HEADS: [(&str, &str); 4] = [
    ("normal head", BLUE),
    ("seen head", ORANGE),
    ("pseudo head", "#009E73"),
    ("residual head", "#CC79A7"),
];

/// A PNG as a `data:` URI, so that the page needs no file beside it.
pub(super) fn png_uri(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

/// An AUC or other score in [0, 1], to three decimals.
pub(super) fn metric(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "n/a".into()
    }
}

/// A score or threshold: four decimals in the usual range, scientific notation outside it,
/// so that neither 0.00012 nor 123456.7 loses its digits.
pub(super) fn number(x: f64) -> String {
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
pub(super) fn percent(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{:.1}%", 100.0 * x),
        _ => "—".into(),
    }
}

/// The share of anomalies among the scored images: the AUC-PR of a model that guesses.
pub(super) fn prevalence(scores: &[ScoredImage]) -> Option<f64> {
    let anomalies = scores.iter().filter(|s| s.anomalous).count();
    (!scores.is_empty()).then(|| anomalies as f64 / scores.len() as f64)
}

/// `n` and the noun for it: `1 class`, `3 classes`.
pub(super) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A small horizontal bar for a value in [0, 1], drawn in CSS.
pub(super) fn bar(x: f64) -> String {
    let pct = if x.is_finite() {
        (x * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    };
    format!("<div class=\"bar\"><span style=\"width:{pct:.1}%\"></span></div>")
}
