//! The paper's benchmark data sets, read from the files as their publishers ship them, or from
//! the MVTec-layout folders the official conversion scripts write. Each family has a module;
//! every loader returns a [`Category`], the MVTec-layout view the rest of the pipeline uses.
//!
//! Within this module imports run one way: `decode` (image files) ← `listing` (what a folder
//! holds) ← `category` (the [`Category`] type) ← `common` (what the loaders share) ← `mvtec`
//! and one module per raw layout ← [`Family`], here.

use std::path::Path;

use crate::error::Result;
use crate::sample::OnUnreadable;
use category::Category;
use common::missing;

pub(crate) mod category;
pub(crate) mod common;
pub(crate) mod decode;
#[cfg(test)]
pub(crate) mod fixtures;
pub(crate) mod listing;
pub(crate) mod mvtec;

mod aitex;
mod brainmri;
mod elpv;
mod headct;
mod hyperkvasir;
mod mastcam;
mod name;
mod optical;
mod sdd;

pub use common::train_test_split;
pub use mvtec::outlier_images;
pub use name::{default_data_root, names_help, DatasetName};

/// The folder under `--data-root` that holds MVTec AD's categories (MVTec's own archive name).
pub const MVTEC_FOLDER: &str = "mvtec_anomaly_detection";
/// The folder under `--data-root` that holds the embedded synthetic categories.
pub const SYNTHETIC_FOLDER: &str = "synthetic";

/// A data set family (`--dataset NAME`; MVTec AD and the synthetic set are `CATEGORY`-named).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// MVTec AD: industrial objects and textures, already in the layout every loader returns.
    Mvtec,
    /// ELPV: electroluminescence images of solar cells, anomaly classes `mono` and `poly`.
    Elpv,
    /// Mastcam: Mars rover images, typical frames normal and novel ones by class.
    Mastcam,
    /// Brain MRI: scans without and with a tumour.
    BrainMri,
    /// Head CT: scans without and with a haemorrhage.
    HeadCt,
    /// Hyper-Kvasir: upper-GI endoscopy, anatomical landmarks normal, pathological findings not.
    HyperKvasir,
    /// AITEX: fabric images cut into 256-pixel tiles, anomalies by defect code.
    Aitex,
    /// KolektorSDD: commutator surfaces cut into thirds, one anomaly class `defect`.
    Sdd,
    /// DAGM 2007 optical inspection: ten synthetic textures with labelled defects.
    Optical,
}

impl Family {
    /// Every family, in the order `--help` lists them.
    pub const ALL: [Family; 9] = [
        Family::Mvtec,
        Family::Elpv,
        Family::Mastcam,
        Family::BrainMri,
        Family::HeadCt,
        Family::HyperKvasir,
        Family::Aitex,
        Family::Sdd,
        Family::Optical,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mvtec => "mvtec",
            Self::Elpv => "elpv",
            Self::Mastcam => "mastcam",
            Self::BrainMri => "brainmri",
            Self::HeadCt => "headct",
            Self::HyperKvasir => "hyperkvasir",
            Self::Aitex => "aitex",
            Self::Sdd => "sdd",
            Self::Optical => "optical",
        }
    }

    /// The family whose command-line name is `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The folder under `--data-root` that holds this data set.
    pub fn default_folder(self) -> &'static str {
        match self {
            Self::Mvtec => MVTEC_FOLDER,
            Self::Elpv => "elpv-dataset",
            Self::Mastcam => "mastcam",
            Self::BrainMri => "brain_tumor_dataset",
            Self::HeadCt => "head_ct",
            Self::HyperKvasir => "hyper-kvasir",
            Self::Aitex => "AITEX",
            Self::Sdd => "KolektorSDD",
            Self::Optical => "DAGM2007",
        }
    }

    /// The raw layout the loader expects, for error messages and `--help`.
    pub fn layout(self) -> &'static str {
        match self {
            Self::Mvtec => "<category>/{train/good, test/good, test/<defect>}",
            Self::Elpv => elpv::LAYOUT,
            Self::Mastcam => mastcam::LAYOUT,
            Self::BrainMri => brainmri::LAYOUT,
            Self::HeadCt => headct::LAYOUT,
            Self::HyperKvasir => hyperkvasir::LAYOUT,
            Self::Aitex => aitex::LAYOUT,
            Self::Sdd => sdd::LAYOUT,
            Self::Optical => optical::LAYOUT,
        }
    }

    /// Loads the data set in `dir`: the raw layout, or the converted MVTec layout when `dir`
    /// holds `train/good`. Image files that do not decode are an error naming them, or with
    /// [`OnUnreadable::Skip`] left out before any split is made (as if they had been deleted)
    /// and listed in [`Category::unreadable`].
    pub fn load(self, dir: &Path, on_unreadable: OnUnreadable) -> Result<Category> {
        if self == Self::Mvtec || dir.join("train").join("good").is_dir() {
            return Category::open(dir, on_unreadable);
        }
        if !dir.is_dir() {
            return Err(missing(dir, self.layout()));
        }
        let category = match self {
            Self::Mvtec => unreachable!("handled above"),
            Self::Elpv => elpv::load(dir),
            Self::Mastcam => mastcam::load(dir),
            Self::BrainMri => brainmri::load(dir),
            Self::HeadCt => headct::load(dir),
            Self::HyperKvasir => hyperkvasir::load(dir),
            Self::Aitex => aitex::load(dir),
            Self::Sdd => sdd::load(dir),
            Self::Optical => optical::load(dir),
        }?;
        category.require(on_unreadable)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::sample::{Crop, ImageRef};

    /// A named list of images: (path relative to the root, crop).
    type List = (String, Vec<(PathBuf, Option<Crop>)>);

    /// The category's lists, paths relative to `root`, for comparing two copies of a folder.
    fn lists(cat: &Category, root: &Path) -> Vec<List> {
        let rel = |list: &[ImageRef]| {
            list.iter()
                .map(|i| (i.path.strip_prefix(root).unwrap().to_path_buf(), i.crop))
                .collect::<Vec<_>>()
        };
        let mut out = vec![
            ("train/good".to_string(), rel(&cat.train_good)),
            ("test/good".to_string(), rel(&cat.test_good)),
        ];
        out.extend(cat.defects.iter().map(|(c, l)| (c.clone(), rel(l))));
        out
    }

    /// For every loader that splits the normals itself (75 % / 25 %), a normal image that
    /// does not decode, skipped, gives the category of the same folder with that file
    /// deleted (and for label files, its row): the split is drawn over what is left.
    #[test]
    fn skipping_an_unreadable_normal_is_deleting_it() {
        use fixtures::{mask, png, sized_png};
        type Build = fn(&Path, bool);
        let cases: [(Family, &str, Build); 6] = [
            (Family::BrainMri, "no/N3.jpg", |root, keep| {
                for i in 0..9 {
                    if keep || i != 3 {
                        png(&root.join(format!("no/N{i}.jpg")));
                    }
                }
                png(&root.join("yes/Y1.jpg"));
            }),
            (
                Family::HyperKvasir,
                "upper-gi-tract/anatomical-landmarks/z-line/2.jpg",
                |root, keep| {
                    for i in 0..9 {
                        if keep || i != 2 {
                            png(&root.join(format!(
                                "upper-gi-tract/anatomical-landmarks/z-line/{i}.jpg"
                            )));
                        }
                    }
                    png(&root.join("upper-gi-tract/pathological-findings/barretts/x.jpg"));
                },
            ),
            (Family::HeadCt, "head_ct/head_ct/002.png", |root, keep| {
                let mut csv = String::from("id, hemorrhage\n");
                for i in 0..10 {
                    if keep || i != 2 {
                        png(&root.join(format!("head_ct/head_ct/{i:03}.png")));
                        csv += &format!("{i},{}\n", (i >= 8) as u8);
                    }
                }
                std::fs::write(root.join("labels.csv"), csv).unwrap();
            }),
            (Family::Elpv, "images/cell0004.png", |root, keep| {
                let mut csv = String::new();
                for i in 0..10 {
                    if keep || i != 4 {
                        png(&root.join(format!("images/cell{i:04}.png")));
                        let p = if i >= 8 { "1.0" } else { "0.0" };
                        csv += &format!("images/cell{i:04}.png  {p}  mono\n");
                    }
                }
                std::fs::write(root.join("labels.csv"), csv).unwrap();
            }),
            (Family::Sdd, "kos03/Part0.jpg", |root, keep| {
                for k in 1..5 {
                    if keep || k != 3 {
                        sized_png(&root.join(format!("kos0{k}/Part0.jpg")), 4, 9);
                    }
                    let marks: &[(u32, u32, u32, u32)] = if k == 1 { &[(0, 0, 1, 1)] } else { &[] };
                    mask(&root.join(format!("kos0{k}/Part0_label.bmp")), 4, 9, marks);
                }
            }),
            (
                Family::Aitex,
                "NODefect_images/fab/0002.png",
                |root, keep| {
                    for i in 1..4 {
                        if keep || i != 2 {
                            sized_png(
                                &root.join(format!("NODefect_images/fab/000{i}.png")),
                                512,
                                16,
                            );
                        }
                    }
                    sized_png(&root.join("Defect_images/0001_002_00.png"), 32, 16);
                    mask(
                        &root.join("Mask_images/0001_002_00_mask.png"),
                        32,
                        16,
                        &[(1, 1, 1, 1)],
                    );
                },
            ),
        ];
        for (family, victim, build) in cases {
            let skipped = tempfile::tempdir().unwrap();
            build(skipped.path(), true);
            std::fs::write(skipped.path().join(victim), b"not an image at all").unwrap();
            let deleted = tempfile::tempdir().unwrap();
            build(deleted.path(), false);

            let err = family
                .load(skipped.path(), OnUnreadable::Error)
                .unwrap_err()
                .to_string();
            assert!(err.contains(victim), "{family:?}: {err}");
            let cat = family.load(skipped.path(), OnUnreadable::Skip).unwrap();
            assert_eq!(cat.unreadable.len(), 1, "{family:?}");
            assert!(cat.unreadable[0].path.ends_with(victim), "{family:?}");
            let reference = family.load(deleted.path(), OnUnreadable::Error).unwrap();
            assert_eq!(
                lists(&cat, skipped.path()),
                lists(&reference, deleted.path()),
                "{family:?}"
            );
        }
    }

    /// A label or mask that does not decode is unreadable: its image goes with it.
    #[test]
    fn an_unreadable_label_takes_its_image_with_it() {
        use fixtures::{mask, sized_png};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for k in 1..5 {
            sized_png(&root.join(format!("kos0{k}/Part0.jpg")), 4, 9);
            mask(&root.join(format!("kos0{k}/Part0_label.bmp")), 4, 9, &[]);
        }
        std::fs::write(root.join("kos02/Part0_label.bmp"), b"BM garbage").unwrap();
        let err = Family::Sdd
            .load(root, OnUnreadable::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kos02/Part0_label.bmp"), "{err}");
        let cat = Family::Sdd.load(root, OnUnreadable::Skip).unwrap();
        assert_eq!(cat.train_good.len() + cat.test_good.len(), 9);
        assert!(cat.unreadable[0].path.ends_with("kos02/Part0_label.bmp"));
        assert!(!cat
            .ignored
            .iter()
            .any(|i| i.image.path.ends_with("Part0_label.bmp")));
    }

    /// When every normal image is unreadable, the error names them, under either policy.
    #[test]
    fn no_decodable_normal_names_the_files() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            std::fs::create_dir_all(dir.path().join("no")).unwrap();
            std::fs::write(dir.path().join(format!("no/N{i}.jpg")), b"").unwrap();
        }
        fixtures::png(&dir.path().join("yes/Y.jpg"));
        for policy in [OnUnreadable::Error, OnUnreadable::Skip] {
            let err = Family::BrainMri
                .load(dir.path(), policy)
                .unwrap_err()
                .to_string();
            assert!(err.contains("N0.jpg") && err.contains("N2.jpg"), "{err}");
        }
        let mvtec = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(mvtec.path().join("train/good")).unwrap();
        std::fs::write(mvtec.path().join("train/good/a.png"), b"").unwrap();
        fixtures::png(&mvtec.path().join("test/good/b.png"));
        let err = Category::open(mvtec.path(), OnUnreadable::Skip)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no image files that decode") && err.contains("a.png"),
            "{err}"
        );
    }
}
