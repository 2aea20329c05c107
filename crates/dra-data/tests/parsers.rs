//! Property tests of every parser of a user's file in `dra-data`: `.npy` arrays, image files
//! through the loaders, and the label files of ELPV, Head CT and DAGM 2007. Arbitrary or
//! mutated bytes give a result or an error, never a panic, and never an allocation sized by an
//! untrusted header. A fixed number of cases each, so that CI spends seconds here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use dra_data::datasets::Family;
use dra_data::{load_rgb, Category, Listing, OnUnreadable, MAX_DECODED_BYTES};
use proptest::prelude::*;
use proptest::sample::Index;

use dra_test_support::bytes::{mutate, npy_v1 as npy};

/// The system allocator, recording the largest single request of each thread, so that a test
/// can show that a header's claims do not reach the allocator. Per thread, because the test
/// harness runs tests side by side: another test's allocations must not count.
struct Recording;

thread_local! {
    // A const-initialised `Cell` has no destructor, so the allocator may touch it at any time.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // During the thread's teardown the slot may be gone; nothing to record then.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

/// The largest allocation this thread made while `f` ran.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let value = f();
    (value, LARGEST.with(Cell::get))
}

// SAFETY: every call is forwarded unchanged to the system allocator; the bookkeeping is a
// thread-local maximum and allocates nothing.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: as for `alloc`; `ptr` and `layout` come from this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are reported with their input; nothing is written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn valid_npy() -> Vec<u8> {
    npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4, 3), }",
        &(0..36)
            .flat_map(|i| (i as f32 * 7.5).to_le_bytes())
            .collect::<Vec<u8>>(),
    )
}

fn encoded(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(9, 7, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 99]));
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

/// Valid files of every format we read, to be mutated.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("png", encoded(image::ImageFormat::Png)),
        ("jpg", encoded(image::ImageFormat::Jpeg)),
        ("bmp", encoded(image::ImageFormat::Bmp)),
        ("tif", encoded(image::ImageFormat::Tiff)),
        ("npy", valid_npy()),
    ]
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A shape entry: small, large, or near the limits where products overflow.
fn dimension() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0usize..6,
        1 => 1usize..100_000,
        2 => prop::sample::select(vec![
            1 << 20,
            1 << 31,
            1 << 32,
            (1 << 61) + 1,
            1 << 62,
            usize::MAX / 3,
            usize::MAX,
        ]),
        1 => prop::num::usize::ANY,
    ]
}

proptest! {
    #![proptest_config(config(400))]

    /// Damaged images and arrays of every format: decoding gives an image with pixels or an
    /// error naming the file.
    #[test]
    fn damaged_images_decode_or_fail_cleanly(
        which in 0usize..5,
        edits in prop::collection::vec((any::<Index>(), any::<u8>()), 0..6),
        cut in prop::option::of(any::<Index>()),
    ) {
        let (ext, seed) = seeds().swap_remove(which);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("x.{ext}"));
        write(&path, &mutate(seed, &edits, cut));
        // A mutated header may claim any size; the decoder is held to our limit (plus the
        // RGB copy of what it decoded, at most as large again).
        let (result, largest) = largest_allocation(|| load_rgb(&path));
        prop_assert!(largest as u64 <= MAX_DECODED_BYTES, "allocated {largest} bytes");
        match result {
            Ok(img) => prop_assert!(img.width() > 0 && img.height() > 0),
            Err(e) => prop_assert!(e.to_string().contains("x."), "{e}"),
        }
    }

    /// `.npy` headers of arbitrary text: parsed or refused, never trusted for an allocation.
    #[test]
    fn npy_headers_of_any_text(
        descr in prop::sample::select(vec!["<f4", "|u1", ">i8", "<f8", "?", "<c8", "u", "<u0", ""]),
        shape in prop::collection::vec(dimension(), 0..5),
        fortran in any::<bool>(),
        noise in "[ -~]{0,40}",
        body_len in 0usize..200,
    ) {
        let shape = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        let order = if fortran { "True" } else { "False" };
        let dict = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': ({shape}), {noise}}}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        write(&path, &npy(&dict, &vec![7u8; body_len]));
        let (result, largest) = largest_allocation(|| load_rgb(&path));
        // The file is at most a few hundred bytes; nothing near what a header can claim.
        prop_assert!(largest < 1 << 20, "allocated {largest} bytes");
        if let Ok(img) = result {
            prop_assert!(img.width() > 0 && img.height() > 0);
        }
    }

    /// Any bytes at all, under any image name: each file is an image, left out or unreadable,
    /// and the listing never panics.
    #[test]
    fn any_bytes_in_an_image_folder(
        files in prop::collection::vec(
            (prop::sample::select(vec!["a.png", "b.JPG", "c.npy", "d.bmp", "e.tiff", "f.dat", "README", "g.gif"]),
             prop::collection::vec(any::<u8>(), 0..64)),
            1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in &files {
            write(&dir.path().join(name), bytes);
        }
        let listing = Listing::of_inputs(&[dir.path().to_path_buf()]);
        if let Ok(listing) = listing {
            let n = listing.images.len() + listing.ignored.len() + listing.unreadable.len();
            let distinct: std::collections::HashSet<_> = files.iter().map(|f| f.0).collect();
            prop_assert_eq!(n, distinct.len());
        }
    }
}

/// Lines made of the tokens a labels file holds, plus noise, to reach past the first check.
fn label_text(
    tokens: &'static [&'static str],
    separators: &'static [&'static str],
) -> impl Strategy<Value = String> {
    let field = prop_oneof![
        4 => prop::sample::select(tokens).prop_map(str::to_string),
        1 => "[ -~]{0,8}",
        1 => ".{0,4}",
    ];
    let line = prop::collection::vec((field, prop::sample::select(separators)), 0..5)
        .prop_map(|fields| fields.into_iter().map(|(f, s)| f + s).collect::<String>());
    prop::collection::vec(line, 0..8).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(config(300))]

    /// ELPV's `labels.csv`: any text gives a category or an error, never a panic.
    #[test]
    fn elpv_labels_of_any_text(text in label_text(
        &["images/cell0000.png", "images/cell0001.png", "images/nope.png", "/etc", "..", "0.0", "1.0", "0.3333", "-1", "NaN", "inf", "mono", "poly", "1e309"],
        &["  ", " ", "\t", ",", ""],
    )) {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..2 {
            write(&dir.path().join(format!("images/cell000{i}.png")), &encoded(image::ImageFormat::Png));
        }
        write(&dir.path().join("labels.csv"), text.as_bytes());
        let _ = Family::Elpv.load(dir.path(), OnUnreadable::Skip);
    }

    /// Head CT's `labels.csv`.
    #[test]
    fn headct_labels_of_any_text(text in label_text(
        &["id", "hemorrhage", "0", "1", "2", "000", "99999999999999999999", "-0", " 1"],
        &[",", ", ", "", "\t"],
    )) {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..2 {
            write(&dir.path().join(format!("head_ct/head_ct/00{i}.png")), &encoded(image::ImageFormat::Png));
        }
        write(&dir.path().join("labels.csv"), text.as_bytes());
        let _ = Family::HeadCt.load(dir.path(), OnUnreadable::Skip);
    }

    /// DAGM 2007's `Labels.txt`.
    #[test]
    fn dagm_labels_of_any_text(text in label_text(
        &["1", "0", "2", "0001.PNG", "0002.PNG", "missing.PNG", "../x", "0001_label.PNG"],
        &["\t", " ", ""],
    )) {
        let dir = tempfile::tempdir().unwrap();
        let split = dir.path().join("Class1/Train");
        for i in 1..3 {
            write(&split.join(format!("000{i}.PNG")), &encoded(image::ImageFormat::Png));
        }
        write(&split.join("Label/Labels.txt"), text.as_bytes());
        write(&dir.path().join("Class1/Test/Label/Labels.txt"), b"1\n");
        let _ = Family::Optical.load(dir.path(), OnUnreadable::Skip);
    }

    /// Label files that are not text at all.
    #[test]
    fn label_files_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("labels.csv"), &bytes);
        write(&dir.path().join("head_ct/000.png"), &encoded(image::ImageFormat::Png));
        let _ = Family::Elpv.load(dir.path(), OnUnreadable::Skip);
        let _ = Family::HeadCt.load(dir.path(), OnUnreadable::Skip);
    }
}

#[test]
fn an_npy_claiming_a_trillion_elements_is_refused_before_any_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.npy");
    write(
        &path,
        &npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000, 3), }",
            &[0; 64],
        ),
    );
    let (result, largest) = largest_allocation(|| load_rgb(&path));
    let err = result.unwrap_err().to_string();
    assert!(largest < 1 << 20, "allocated {largest} bytes");
    assert!(
        err.contains("huge.npy") && err.contains("truncated"),
        "{err}"
    );
    // The same file in a data folder is unreadable, named with the reason.
    write(&dir.path().join("cat/train/good/a.npy"), &valid_npy());
    write(&dir.path().join("cat/test/good/b.npy"), &valid_npy());
    std::fs::rename(&path, dir.path().join("cat/test/good/huge.npy")).unwrap();
    let err = Category::open(dir.path().join("cat"), OnUnreadable::Error)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("huge.npy: cannot read the .npy array"),
        "{err}"
    );
}
