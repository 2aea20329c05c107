//! Small image files for the loaders' tests.

use std::path::Path;

/// Writes a small PNG (its content is irrelevant to the loaders).
pub fn png(path: &Path) {
    sized_png(path, 4, 4);
}

/// Writes a grey `width × height` image (the format follows the extension).
pub fn sized_png(path: &Path, width: u32, height: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(width, height, image::Luma([9]))
        .save(path)
        .unwrap();
}

/// Writes a black `width × height` mask with the given rectangles (x, y, w, h) set to 255.
pub fn mask(path: &Path, width: u32, height: u32, marks: &[(u32, u32, u32, u32)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut img = image::GrayImage::new(width, height);
    for &(x0, y0, w, h) in marks {
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                img.put_pixel(x, y, image::Luma([255]));
            }
        }
    }
    img.save(path).unwrap();
}
