//! A grouped bar chart (PNG): one group per data set, one bar per series, as seed Fig. 5.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

/// DejaVu Sans cut down to ASCII and a few symbols (licence beside it in `assets/`).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// `values[g][s]`: the value of series `s` in group `g` (`None`: no result, no bar).
pub struct BarChart<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub groups: &'a [String],
    pub series: &'a [String],
    pub values: &'a [Vec<Option<f64>>],
}

impl BarChart<'_> {
    pub fn write_png(&self, path: &Path) -> Result<()> {
        // Registering twice is harmless; the font is parsed once per call.
        register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the embedded chart font is invalid"))?;
        let (width, height) = ((200 * self.groups.len().max(2) + 320) as u32, 520u32);
        let mut pixels = vec![0u8; (width * height * 3) as usize];
        self.draw(&mut pixels, (width, height))
            .map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
        let image = image::RgbImage::from_raw(width, height, pixels)
            .expect("the buffer has width × height × 3 bytes");
        let tmp = path.with_extension("png.tmp");
        image
            .save_with_format(&tmp, image::ImageFormat::Png)
            .with_context(|| tmp.display().to_string())?;
        std::fs::rename(&tmp, path).with_context(|| path.display().to_string())
    }

    fn draw(
        &self,
        pixels: &mut [u8],
        size: (u32, u32),
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::with_buffer(pixels, size).into_drawing_area();
        root.fill(&WHITE)?;
        let lowest = self
            .values
            .iter()
            .flatten()
            .flatten()
            .fold(1.0f64, |a, &b| a.min(b));
        let y_min = ((lowest - 0.05) * 10.0).floor().clamp(0.0, 5.0) / 10.0;
        let n = self.groups.len();
        // Headroom above 1.0 for the legend, which must not hide a bar.
        let y_max = 1.0 + 0.07 * self.series.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, y_min..y_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(self.y_label)
            .y_label_formatter(&|y| {
                if *y <= 1.0 + 1e-9 {
                    format!("{y:.1}")
                } else {
                    String::new()
                }
            })
            .label_style(("sans-serif", 14))
            .draw()?;
        // Group names centred under their slots.
        let label =
            TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (g, name) in self.groups.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(g as f64 + 0.5, y_min));
            root.draw(&Text::new(name.as_str(), (x, y + 8), &label))?;
        }
        let k = self.series.len().max(1) as f64;
        for (s, name) in self.series.iter().enumerate() {
            let color = PALETTE[s % PALETTE.len()];
            // A group's bars share the middle 80 % of its unit-wide slot.
            let bars = self.values.iter().enumerate().filter_map(|(g, row)| {
                let v = row.get(s).copied().flatten()?;
                let x0 = g as f64 + 0.1 + 0.8 * s as f64 / k;
                Some(Rectangle::new(
                    [(x0, y_min), (x0 + 0.8 / k, v.max(y_min))],
                    color.filled(),
                ))
            });
            chart
                .draw_series(bars)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
        root.present()?;
        Ok(())
    }
}
