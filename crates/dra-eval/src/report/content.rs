//! What the page shows: the numbers, curves, counts and pictures the caller computes.

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
