//! The report's plots as SVG written by hand: a [`Chart`] maps data to a plot area framed by
//! axes with round-numbered ticks, and draws lines, bars and markers on it. Hand-written
//! because the page must be one self-contained file with no script, and these few shapes do
//! not justify a plotting library.
//!
//! Every text is escaped; points that are not finite are left out, and values outside the
//! axes are clamped to the frame, so that a bad number bends a line instead of breaking the
//! page.

use std::fmt::Write;

use crate::html::escape_html;

/// Room around the plot area, in SVG units: tick labels and the axis titles live there.
const LEFT: f64 = 58.0;
const RIGHT: f64 = 18.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 46.0;

/// Ticks of one axis: round values and the number of decimals that tells them apart.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Ticks {
    /// The tick positions, ascending.
    pub(super) values: Vec<f64>,
    /// Decimals to print each value with (0 for steps of 1 and more).
    pub(super) decimals: usize,
}

impl Ticks {
    /// About `target` round ticks (steps of 1, 2 or 5 times a power of ten) inside `[lo, hi]`.
    /// An empty or non-finite range gets the ticks of a unit range around it.
    pub(super) fn inside(lo: f64, hi: f64, target: usize) -> Self {
        let (lo, hi) = widen(lo, hi);
        let step = round_step((hi - lo) / target.max(1) as f64);
        let first = (lo / step - 1e-9).ceil();
        let values = (0..)
            .map(|i| (first + i as f64) * step)
            .take_while(|v| *v <= hi + step * 1e-9)
            // A guard against a pathological step; a plot never wants more ticks.
            .take(64)
            .collect();
        Self {
            values,
            decimals: decimals_of(step),
        }
    }

    /// Like [`Ticks::inside`], on `[lo, hi]` widened outwards to the nearest ticks, so that the
    /// axis starts and ends on a labelled value. Returns the widened range too.
    pub(super) fn covering(lo: f64, hi: f64, target: usize) -> ((f64, f64), Self) {
        let (lo, hi) = widen(lo, hi);
        let step = round_step((hi - lo) / target.max(1) as f64);
        let (lo, hi) = (
            (lo / step + 1e-9).floor() * step,
            (hi / step - 1e-9).ceil() * step,
        );
        ((lo, hi), Self::inside(lo, hi, target))
    }

    /// A tick value as printed on the axis.
    pub(super) fn label(&self, value: f64) -> String {
        // `-0.0` prints as "-0"; a tick at zero should not.
        let value = if value == 0.0 { 0.0 } else { value };
        format!("{value:.0$}", self.decimals)
    }
}

/// A usable range: finite, and of positive width (a single value gets a unit range centred
/// on it), so that the map from data to pixels never divides by zero.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    match (lo.is_finite(), hi.is_finite()) {
        (true, true) if hi > lo => (lo, hi),
        (true, true) => (lo.min(hi) - 0.5, lo.max(hi) + 0.5),
        (true, false) => (lo - 0.5, lo + 0.5),
        (false, true) => (hi - 0.5, hi + 0.5),
        (false, false) => (0.0, 1.0),
    }
}

/// The round step (1, 2 or 5 times a power of ten) nearest to `raw`, on a log scale: the
/// number of ticks stays within about ±40% of the number asked for.
fn round_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let distance = |f: f64| (f * magnitude / raw).ln().abs();
    let nearest = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .min_by(|a, b| distance(*a).total_cmp(&distance(*b)));
    nearest.unwrap_or(1.0) * magnitude
}

/// Decimals that print every multiple of `step` exactly enough to tell them apart.
fn decimals_of(step: f64) -> usize {
    let d = (-step.log10() - 1e-9).ceil();
    d.clamp(0.0, 10.0) as usize
}

/// One plot: a fixed-size SVG whose inner area maps the data ranges `x` and `y` linearly.
pub(super) struct Chart {
    width: f64,
    height: f64,
    x: (f64, f64),
    y: (f64, f64),
    body: String,
}

impl Chart {
    /// A chart of `width` × `height` SVG units showing `x` and `y` (each `(low, high)`).
    pub(super) fn new(width: f64, height: f64, x: (f64, f64), y: (f64, f64)) -> Self {
        Self {
            width,
            height,
            x: widen(x.0, x.1),
            y: widen(y.0, y.1),
            body: String::new(),
        }
    }

    fn left(&self) -> f64 {
        LEFT
    }
    fn right(&self) -> f64 {
        self.width - RIGHT
    }
    fn top(&self) -> f64 {
        TOP
    }
    fn bottom(&self) -> f64 {
        self.height - BOTTOM
    }

    /// The horizontal pixel of data value `x`, clamped to the plot area.
    pub(super) fn px(&self, x: f64) -> f64 {
        let t = ((x - self.x.0) / (self.x.1 - self.x.0)).clamp(0.0, 1.0);
        self.left() + t * (self.right() - self.left())
    }

    /// The vertical pixel of data value `y`, clamped to the plot area (up is larger).
    pub(super) fn py(&self, y: f64) -> f64 {
        let t = ((y - self.y.0) / (self.y.1 - self.y.0)).clamp(0.0, 1.0);
        self.bottom() - t * (self.bottom() - self.top())
    }

    /// Grid lines and labels at the ticks, a frame around the plot area, and the two axis
    /// titles. Drawn first, so that the data lies on top.
    pub(super) fn axes(&mut self, x_ticks: &Ticks, y_ticks: &Ticks, x_title: &str, y_title: &str) {
        let (l, r, t, b) = (self.left(), self.right(), self.top(), self.bottom());
        let mut s = String::new();
        for &v in &x_ticks.values {
            let x = self.px(v);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{t:.1}" x2="{x:.1}" y2="{b:.1}" class="grid"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                b + 16.0,
                escape_html(&x_ticks.label(v))
            );
        }
        for &v in &y_ticks.values {
            let y = self.py(v);
            let _ = write!(
                s,
                r##"<line x1="{l:.1}" y1="{y:.1}" x2="{r:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                l - 6.0,
                y + 4.0,
                escape_html(&y_ticks.label(v))
            );
        }
        let _ = write!(
            s,
            r##"<rect x="{l:.1}" y="{t:.1}" width="{:.1}" height="{:.1}" class="frame"/>"##,
            r - l,
            b - t
        );
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="axis-title">{}</text>"##,
            (l + r) / 2.0,
            self.height - 8.0,
            escape_html(x_title)
        );
        let _ = write!(
            s,
            r##"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle" class="axis-title">{}</text>"##,
            (t + b) / 2.0,
            escape_html(y_title)
        );
        self.body.push_str(&s);
    }

    /// A line through `points` (data coordinates) in `colour`; `dash` is an SVG dash array
    /// such as `"5 4"`. Non-finite points are left out; fewer than two draw nothing.
    pub(super) fn line(
        &mut self,
        points: &[(f64, f64)],
        colour: &str,
        width: f64,
        dash: Option<&str>,
    ) {
        let mut coords = String::new();
        let mut n = 0;
        for &(x, y) in points {
            if x.is_finite() && y.is_finite() {
                let _ = write!(coords, "{:.1},{:.1} ", self.px(x), self.py(y));
                n += 1;
            }
        }
        if n < 2 {
            return;
        }
        let dash = dash.map_or(String::new(), |d| format!(r#" stroke-dasharray="{d}""#));
        let _ = write!(
            self.body,
            r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="{width}" stroke-linejoin="round" stroke-linecap="round"{dash}/>"##,
            coords.trim_end()
        );
    }

    /// A filled rectangle spanning `x0..x1` and `y0..y1` in data coordinates.
    pub(super) fn rect(
        &mut self,
        (x0, x1): (f64, f64),
        (y0, y1): (f64, f64),
        colour: &str,
        opacity: f64,
    ) {
        if ![x0, x1, y0, y1].iter().all(|v| v.is_finite()) {
            return;
        }
        let (left, right) = (self.px(x0.min(x1)), self.px(x0.max(x1)));
        let (top, bottom) = (self.py(y0.max(y1)), self.py(y0.min(y1)));
        let _ = write!(
            self.body,
            r##"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="{opacity}"/>"##,
            right - left,
            bottom - top
        );
    }

    /// A dot at data point `(x, y)`, ringed in white so that it stands out on a line.
    pub(super) fn dot(&mut self, (x, y): (f64, f64), colour: &str) {
        if !(x.is_finite() && y.is_finite()) {
            return;
        }
        let _ = write!(
            self.body,
            r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{colour}" stroke="#fff" stroke-width="1.5"/>"##,
            self.px(x),
            self.py(y)
        );
    }

    /// A vertical line across the plot area at data value `x`, with an optional label written
    /// just right of its top (`label_row` moves it down by rows, so that labels of close lines
    /// can be staggered).
    pub(super) fn vline(
        &mut self,
        x: f64,
        colour: &str,
        dash: Option<&str>,
        label: Option<(&str, usize)>,
    ) {
        if !x.is_finite() {
            return;
        }
        let (px, t, b) = (self.px(x), self.top(), self.bottom());
        let dash = dash.map_or(String::new(), |d| format!(r#" stroke-dasharray="{d}""#));
        let _ = write!(
            self.body,
            r##"<line x1="{px:.1}" y1="{t:.1}" x2="{px:.1}" y2="{b:.1}" stroke="{colour}" stroke-width="1.2"{dash}/>"##
        );
        if let Some((text, row)) = label {
            // Near the right edge the label would leave the frame: write it to the left.
            let (dx, anchor) = if px > self.right() - 90.0 {
                (-4.0, "end")
            } else {
                (4.0, "start")
            };
            let _ = write!(
                self.body,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}" class="mark" fill="{colour}">{}</text>"##,
                px + dx,
                t + 13.0 + 13.0 * row as f64,
                escape_html(text)
            );
        }
    }

    /// A small label above the plot area at data value `x` (in the top margin), e.g. an epoch
    /// number over its boundary line.
    pub(super) fn top_label(&mut self, x: f64, text: &str) {
        if !x.is_finite() {
            return;
        }
        let _ = write!(
            self.body,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="mark">{}</text>"##,
            self.px(x),
            self.top() - 6.0,
            escape_html(text)
        );
    }

    /// Text centred in the plot area, for a chart with nothing to draw.
    pub(super) fn message(&mut self, text: &str) {
        let _ = write!(
            self.body,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="axis-title">{}</text>"##,
            (self.left() + self.right()) / 2.0,
            (self.top() + self.bottom()) / 2.0,
            escape_html(text)
        );
    }

    /// The horizontal pixel span of the plot area, for callers that space labels.
    pub(super) fn plot_width(&self) -> f64 {
        self.right() - self.left()
    }

    /// The finished `<svg>` element. `title` is its accessible name (a tooltip in browsers).
    /// It carries no `xmlns`: inline SVG in HTML needs none, and the page holds no URL.
    pub(super) fn finish(self, title: &str) -> String {
        let title = escape_html(title);
        format!(
            r##"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{title}"><title>{title}</title>{body}</svg>"##,
            w = self.width,
            h = self.height,
            body = self.body
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        let t = Ticks::inside(0.0, 1.0, 5);
        assert_eq!(t.values.len(), 6);
        assert_eq!(t.decimals, 1);
        assert_eq!(t.label(t.values[3]), "0.6");
        let t = Ticks::inside(-0.13, 2.7, 5);
        assert!(t.values.iter().all(|v| (-0.13..=2.7).contains(v)));
        assert_eq!(
            t.values.iter().map(|v| t.label(*v)).collect::<Vec<_>>(),
            ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5"]
        );
    }

    #[test]
    fn covering_ticks_start_and_end_the_axis() {
        let ((lo, hi), t) = Ticks::covering(0.37, 2.9, 5);
        assert_eq!((lo, hi), (0.0, 3.0));
        assert_eq!(t.values.first(), Some(&0.0));
        assert_eq!(t.values.last(), Some(&3.0));
        let ((lo, hi), t) = Ticks::covering(120.0, 9870.0, 5);
        assert_eq!((lo, hi), (0.0, 10000.0));
        assert_eq!(t.label(2000.0), "2000");
    }

    #[test]
    fn degenerate_ranges_get_a_unit_range() {
        assert_eq!(widen(3.0, 3.0), (2.5, 3.5));
        assert_eq!(widen(f64::NAN, f64::INFINITY), (0.0, 1.0));
        let t = Ticks::inside(2.0, 2.0, 5);
        assert!(!t.values.is_empty());
        let c = Chart::new(100.0, 100.0, (1.0, 1.0), (0.0, 0.0));
        assert!(c.px(1.0).is_finite() && c.py(0.0).is_finite());
    }

    #[test]
    fn out_of_range_and_non_finite_points_stay_in_the_frame() {
        let mut c = Chart::new(200.0, 100.0, (0.0, 1.0), (0.0, 1.0));
        c.line(
            &[(0.0, 0.0), (f64::NAN, 0.5), (2.0, -1.0)],
            "#000",
            1.0,
            None,
        );
        let svg = c.finish("t");
        assert!(!svg.contains("NaN"));
        assert!(svg.contains(&format!("{:.1},{:.1}", 200.0 - RIGHT, 100.0 - BOTTOM)));
    }
}
