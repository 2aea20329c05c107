//! What the page shows, checked without a browser.

use super::format::png_uri;
use super::plots::{bin_edges, histogram};
use super::*;
use crate::Confusion;

/// A tiny PNG of one colour, as the gallery holds.
fn png(shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(4, 4, image::Rgb([shade, 40, 200]));
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .expect("a 4x4 PNG encodes");
    bytes
}

fn scored(path: &str, class: &str, score: f64) -> ScoredImage {
    ScoredImage {
        path: path.into(),
        class: class.into(),
        anomalous: class != "good",
        score,
    }
}

fn sample() -> Report {
    let scores = vec![
        scored("good/1.png", "good", 0.1),
        scored("good/2.png", "good", 0.2),
        scored("good/3.png", "good", 0.45),
        scored("crack/1.png", "crack", 0.9),
        scored("crack/2.png", "crack", 0.3),
        scored("a<b&c\".png", "hole", 0.8),
    ];
    Report {
        title: "dra on synthetic/weave".into(),
        facts: vec![
            ("method".into(), "dra".into()),
            ("data folder".into(), "/data/<weave>".into()),
        ],
        notes: vec!["AUC-ROC below 0.5 & other news".into()],
        auc_roc: 0.8889,
        auc_pr: 0.8056,
        pixel: None,
        roc: vec![
            (0.0, 0.0),
            (0.0, 0.667),
            (0.333, 0.667),
            (0.333, 1.0),
            (1.0, 1.0),
        ],
        pr: vec![(0.0, 1.0), (0.667, 1.0), (0.667, 0.667), (1.0, 0.75)],
        scores,
        per_class: vec![
            ClassAuc {
                class: "crack".into(),
                n: 2,
                auc_roc: 0.833,
                auc_pr: 0.75,
            },
            ClassAuc {
                class: "hole".into(),
                n: 1,
                auc_roc: 1.0,
                auc_pr: 1.0,
            },
        ],
        decision: Some(Decision {
            threshold: 0.4321,
            target_fpr: Some(0.05),
            source: "12 held-out training normals".into(),
            counts: Confusion {
                tp: 2,
                fp: 1,
                tn: 2,
                fn_: 1,
            },
        }),
        loss: (0..10)
            .map(|i| LossPoint {
                step: i * 5,
                epoch: i / 4,
                total: 2.0 / (1.0 + i as f64),
                heads: Some([0.5, 0.4, 0.3, 0.2]),
                lr: if i < 6 { 2e-4 } else { 2e-5 },
            })
            .collect(),
        gallery: vec![
            GallerySection {
                title: "Worst false positives".into(),
                explanation: "normals with the highest scores".into(),
                items: vec![
                    GalleryItem {
                        caption: "a<b&c\".png · hole · 0.8".into(),
                        image_png: png(10),
                        overlay_png: Some(png(20)),
                        mask_png: Some(png(30)),
                    },
                    GalleryItem {
                        caption: "good/3.png".into(),
                        image_png: png(40),
                        overlay_png: None,
                        mask_png: None,
                    },
                ],
            },
            GallerySection {
                title: "Worst false negatives".into(),
                explanation: "none".into(),
                items: vec![],
            },
        ],
    }
}

/// The checks every page must pass: self-contained, no script, no unescaped input.
fn assert_self_contained(html: &str) {
    for banned in [
        "http://", "https://", "<script", "src=\"/", "src='/", "<link", "@import",
    ] {
        assert!(!html.contains(banned), "the page holds {banned:?}");
    }
    // `url(` may only appear inside a data URI (it never does today; a picture's base64
    // cannot hold parentheses).
    let without_data: String = html.split("data:image/png;base64,").collect();
    assert!(!without_data.contains("url("));
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
}

#[test]
fn the_page_holds_every_section() {
    let report = sample();
    let html = render(&report);
    assert_self_contained(&html);
    assert!(html.contains("6 test images scored: 3 normal, 3 anomalies in 2 classes."));
    // ROC, PR, one histogram per anomaly class (crack, hole), loss.
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(html.contains("aria-label=\"ROC curve · AUC-ROC 0.889\""));
    assert!(html.contains("Precision-recall curve · AUC-PR 0.806"));
    assert!(html.contains("good (3) vs crack (2) · AUC-ROC 0.833"));
    assert!(html.contains("Training loss against step"));
    // Image, overlay and mask of the first item, the image alone of the second.
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 4);
    assert!(html.contains(&png_uri(&png(30))));
    assert!(html.contains("No image in this group."));
    // The decision: threshold, counts, rates, and the threshold on every histogram.
    assert!(html.contains("<b class=\"num\">0.4321</b>"));
    assert!(html.contains("5.0% on 12 held-out training normals"));
    for cell in [
        "<b>2</b><br><span>true positives",
        "<b>1</b><br><span>false negatives",
    ] {
        assert!(html.contains(cell), "{cell}");
    }
    assert!(html.contains("<b>1</b><br><span>false positives"));
    assert!(html.contains("<b>2</b><br><span>true negatives"));
    assert!(html.contains("66.7%") && html.contains("33.3%"));
    assert_eq!(html.matches(">threshold</text>").count(), 2);
    // Headline numbers and the per-class table.
    assert!(html.contains("<div class=\"v\">0.889</div>"));
    assert!(html.contains("<div class=\"v\">no masks</div>"));
    assert!(html.contains("<td>hole</td><td class=\"num\">1</td>"));
    // The loss plot marks the epochs and the learning-rate drop.
    assert!(html.contains(">epoch 2</text>"));
    assert!(html.contains(">lr 2e-5</text>"));
    assert!(html.contains("residual head"));
}

#[test]
fn input_text_is_escaped() {
    let html = render(&sample());
    assert!(!html.contains("a<b&c\""));
    assert!(html.contains("a&lt;b&amp;c&quot;.png · hole · 0.8"));
    assert!(html.contains("/data/&lt;weave&gt;"));
    assert!(html.contains("AUC-ROC below 0.5 &amp; other news"));
}

#[test]
fn no_threshold_tells_how_to_get_one() {
    let report = Report {
        decision: None,
        ..sample()
    };
    let html = render(&report);
    assert!(html.contains("dra calibrate --model RUN --normals DIR"));
    assert!(html.contains("--calibration-fraction"));
    assert!(!html.contains("true positives"));
    assert!(!html.contains(">threshold</text>"));
}

#[test]
fn pixel_metrics_show_when_present() {
    let report = Report {
        pixel: Some((0.9712, 0.8834)),
        ..sample()
    };
    let html = render(&report);
    assert!(
        html.contains("<div class=\"v\">0.971</div>")
            && html.contains("<div class=\"v\">0.883</div>")
    );
    assert!(!html.contains("no masks"));
}

#[test]
fn degenerate_inputs_render() {
    // Nothing at all.
    let html = render(&Report::default());
    assert_self_contained(&html);
    assert!(html.contains("no ROC points") && html.contains("No test scores to show."));
    assert!(html.contains("No training log"));
    assert!(html.contains("No pictures were selected"));

    // Every score equal, one class only (normals), one loss point, an undefined rate.
    let mut report = sample();
    report.scores = (0..5)
        .map(|i| scored(&format!("good/{i}.png"), "good", 0.5))
        .collect();
    report.per_class.clear();
    report.roc.clear();
    report.pr = vec![(0.5, 0.5)];
    report.loss.truncate(1);
    report.gallery.clear();
    if let Some(d) = report.decision.as_mut() {
        // Nothing flagged and no anomalies: precision, recall and F1 are undefined.
        d.threshold = 0.5;
        d.counts = Confusion {
            tp: 0,
            fp: 0,
            tn: 5,
            fn_: 0,
        };
    }
    let html = render(&report);
    assert_self_contained(&html);
    assert!(!html.contains("NaN") && !html.contains("inf,") && !html.contains("=\"inf"));
    assert!(html.contains("5 test images scored: 5 normal, no anomalies."));
    assert!(html.contains("good (5); no anomalies"));
    assert!(html.contains("The test normals alone") && !html.contains(">anomaly class<"));
    assert_eq!(html.matches("<svg").count(), 4);
    assert!(html.contains("No per-class results"));

    // Anomalies only, and non-finite numbers where finite ones are promised.
    let mut report = sample();
    report.scores.retain(|s| s.anomalous);
    report.scores[0].score = f64::NAN;
    report.auc_roc = f64::NAN;
    report.roc.push((f64::INFINITY, 0.5));
    report.loss[3].total = f64::INFINITY;
    let html = render(&report);
    assert_self_contained(&html);
    assert!(html.contains("<div class=\"v\">n/a</div>"));
    assert!(!html.contains("NaN,") && !html.contains("=\"NaN"));
}

#[test]
fn histogram_bins_share_edges_and_keep_the_extremes() {
    let scores: Vec<ScoredImage> = [0.0, 0.25, 1.0]
        .iter()
        .map(|&s| scored("x", "good", s))
        .collect();
    let (lo, hi, bins) = bin_edges(&scores, Some(2.0));
    assert_eq!((lo, hi, bins), (0.0, 2.0, 8));
    let counts = histogram([0.0, 2.0, 1.0].into_iter(), lo, hi, bins);
    assert_eq!((counts[0], counts[4], counts[7]), (1, 1, 1));
    let same: Vec<ScoredImage> = (0..3).map(|_| scored("x", "good", 3.0)).collect();
    assert_eq!(bin_edges(&same, None), (2.5, 3.5, 8));
}

/// Writes a realistic page to `report_demo.html` in the temporary folder, to look at in a
/// browser: `cargo test -p dra-train --lib report::tests::demo -- --ignored`, then e.g.
/// `chromium --headless --no-sandbox --disable-gpu --screenshot=/tmp/report.png
/// --window-size=1280,3000 file:///tmp/report_demo.html`.
#[test]
#[ignore = "writes a file to look at, checks nothing"]
fn demo() {
    let path = std::env::temp_dir().join("report_demo.html");
    std::fs::write(&path, render(&demo_report())).expect("the demo page is written");
    println!("{}", path.display());
    // And the page of a run with little to show: `dra eval` of a model that scores every
    // image alike, with no threshold, no curve points and no pictures.
    let bare = Report {
        title: "dra eval on a folder of normals".into(),
        notes: vec!["Every score is equal: the model does not tell images apart.".into()],
        auc_roc: 0.5,
        auc_pr: 0.5,
        scores: (0..12)
            .map(|i| scored(&format!("good/{i}.png"), "good", 1.25))
            .collect(),
        ..Report::default()
    };
    let path = std::env::temp_dir().join("report_demo_bare.html");
    std::fs::write(&path, render(&bare)).expect("the demo page is written");
    println!("{}", path.display());
}

/// A run of 60 test images in 3 classes, 100 loss points over 10 epochs, and a gallery of
/// 3 sections of 4 generated 64×64 pictures.
fn demo_report() -> Report {
    // A fixed linear congruential generator: the demo needs variety, not quality.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut scores = Vec::new();
    for i in 0..36 {
        scores.push(scored(
            &format!("test/good/{i:03}.png"),
            "good",
            0.2 + 0.35 * uniform(),
        ));
    }
    for (class, centre) in [("color", 0.75), ("cut", 0.6), ("hole & <tear>", 0.42)] {
        for i in 0..8 {
            let s = centre + 0.3 * (uniform() - 0.5);
            scores.push(scored(&format!("test/{class}/{i:03}.png"), class, s));
        }
    }
    let roc = roc_points(&scores);
    let pr = pr_points(&scores);
    let labels: Vec<bool> = scores.iter().map(|s| s.anomalous).collect();
    let values: Vec<f64> = scores.iter().map(|s| s.score).collect();
    let auc_roc = crate::auc_roc(&values, &labels).expect("two classes");
    let auc_pr = crate::auc_pr(&values, &labels).expect("two classes");
    let per_class = ["color", "cut", "hole & <tear>"]
        .iter()
        .map(|c| {
            let subset: Vec<&ScoredImage> = scores
                .iter()
                .filter(|s| !s.anomalous || s.class == *c)
                .collect();
            let l: Vec<bool> = subset.iter().map(|s| s.anomalous).collect();
            let v: Vec<f64> = subset.iter().map(|s| s.score).collect();
            ClassAuc {
                class: c.to_string(),
                n: 8,
                auc_roc: crate::auc_roc(&v, &l).expect("two classes"),
                auc_pr: crate::auc_pr(&v, &l).expect("two classes"),
            }
        })
        .collect();
    let threshold = 0.52;
    let flagged = |s: &&ScoredImage| s.score > threshold;
    let tp = scores
        .iter()
        .filter(|s| s.anomalous)
        .filter(flagged)
        .count();
    let fp = scores
        .iter()
        .filter(|s| !s.anomalous)
        .filter(flagged)
        .count();
    let (tn, fn_) = (36 - fp, 24 - tp);
    let loss = (0..100)
        .map(|i| {
            let t = i as f64;
            let decay = (-t / 30.0).exp();
            let heads = [0.9, 1.3, 0.7, 0.5].map(|h| h * decay + 0.05 + 0.04 * uniform());
            LossPoint {
                step: i * 4,
                epoch: i / 10,
                total: heads.iter().sum(),
                heads: Some(heads),
                lr: if i < 70 { 2e-4 } else { 2e-5 },
            }
        })
        .collect();
    let section = |title: &str, explanation: &str, masks: bool| GallerySection {
        title: title.into(),
        explanation: explanation.into(),
        items: (0..4)
            .map(|i| GalleryItem {
                caption: format!(
                    "test/cut/{i:03}.png · cut · score {:.3}",
                    0.5 + 0.1 * i as f64
                ),
                image_png: demo_picture(i, Picture::Texture),
                overlay_png: Some(demo_picture(i, Picture::Overlay)),
                mask_png: masks.then(|| demo_picture(i, Picture::Mask)),
            })
            .collect(),
    };
    Report {
        title: "dra on synthetic/weave".into(),
        facts: [
            ("method", "dra"),
            ("backbone", "resnet18"),
            ("image size", "224 × 224"),
            ("steps", "400 (10 epochs of 40)"),
            ("seed", "42"),
            ("data folder", "/data/synthetic/weave/a very long folder name/with spaces & symbols"),
            ("command", "dra train --data synthetic/weave --out runs/weave"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        notes: vec![
            "Only 8 test images per anomaly class: the per-class AUCs move a lot with one image.".into(),
            "The threshold was set on 12 normals: its false positive rate is a rough estimate.".into(),
        ],
        auc_roc,
        auc_pr,
        pixel: Some((0.9412, 0.8123)),
        roc,
        pr,
        scores,
        per_class,
        decision: Some(Decision {
            threshold,
            target_fpr: Some(0.05),
            source: "12 held-out training normals".into(),
            counts: Confusion { tp, fp, tn, fn_ },
        }),
        loss,
        gallery: vec![
            section(
                "Worst false positives",
                "The normal test images with the highest scores: what the model mistakes for anomalies.",
                false,
            ),
            section(
                "Worst false negatives",
                "The anomalies with the lowest scores: what the model misses.",
                true,
            ),
            section("Best detections", "The anomalies with the highest scores.", true),
        ],
    }
}

/// What a demo picture shows.
#[derive(Clone, Copy)]
enum Picture {
    Texture,
    Overlay,
    Mask,
}

/// A 64×64 picture: a woven texture with a dark blob, its heat map, or the blob's mask.
fn demo_picture(seed: usize, kind: Picture) -> Vec<u8> {
    let (cx, cy) = (20.0 + 8.0 * seed as f64, 40.0 - 5.0 * seed as f64);
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
        let weave = if (x / 4 + y / 4) % 2 == 0 { 170 } else { 140 };
        let heat = (1.0 - d / 24.0).clamp(0.0, 1.0);
        match kind {
            Picture::Texture if d < 7.0 => image::Rgb([60, 50, 45]),
            Picture::Texture => image::Rgb([weave, weave - 10, weave - 30]),
            Picture::Overlay => image::Rgb([
                (weave as f64 * (1.0 - heat) + 255.0 * heat) as u8,
                (weave as f64 * (1.0 - heat) + 80.0 * heat) as u8,
                ((weave - 30) as f64 * (1.0 - heat)) as u8,
            ]),
            Picture::Mask if d < 7.0 => image::Rgb([255, 255, 255]),
            Picture::Mask => image::Rgb([0, 0, 0]),
        }
    });
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .expect("a 64x64 PNG encodes");
    bytes
}

/// ROC points of `scores`, one per distinct score from the highest down.
fn roc_points(scores: &[ScoredImage]) -> Vec<(f64, f64)> {
    curve(scores, |tp, fp, p, n| (fp / n, tp / p), (0.0, 0.0))
}

/// Precision-recall points of `scores`, one per distinct score from the highest down.
fn pr_points(scores: &[ScoredImage]) -> Vec<(f64, f64)> {
    curve(scores, |tp, fp, p, _| (tp / p, tp / (tp + fp)), (0.0, 1.0))
}

fn curve(
    scores: &[ScoredImage],
    point: impl Fn(f64, f64, f64, f64) -> (f64, f64),
    start: (f64, f64),
) -> Vec<(f64, f64)> {
    let mut sorted: Vec<&ScoredImage> = scores.iter().collect();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let p = sorted.iter().filter(|s| s.anomalous).count() as f64;
    let n = sorted.len() as f64 - p;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut points = vec![start];
    for (i, s) in sorted.iter().enumerate() {
        if s.anomalous {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        if sorted.get(i + 1).is_none_or(|next| next.score != s.score) {
            points.push(point(tp, fp, p, n));
        }
    }
    points
}
