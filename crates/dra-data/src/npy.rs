//! NumPy `.npy` arrays as images, for Mastcam-style data. The official `load_image` reads them
//! with `np.load(path).astype(np.uint8)[:, :, :3]`; this reader does the same for the arrays an
//! image can be: `H × W × C` with C ≥ 3 (the first three channels are kept), and, beyond the
//! official code, `H × W` or `H × W × 1` grey arrays (replicated into RGB).
//!
//! The format (version 1 to 3): the magic `\x93NUMPY`, two version bytes, the header length
//! (2 bytes little-endian in version 1, 4 bytes after), a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (64, 64, 6), }`, then the raw data.

use std::path::Path;

use image::RgbImage;

use crate::error::{DataError, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Whether these first bytes of a file start a `.npy` array.
pub(crate) fn is_npy(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// The element types we convert to `uint8`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Bool,
    Unsigned,
    Signed,
    Float,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Dtype {
    kind: Kind,
    size: usize,
    big_endian: bool,
}

#[derive(Debug, PartialEq)]
struct Header {
    dtype: Dtype,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Writes a row-major `f32` array of `shape` as a version-1 `.npy` file (`<f4`, C order), the
/// form `numpy.load` reads without options.
pub fn write_f32(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != values.len() {
        return Err(DataError::InvalidOption {
            flag: "npy",
            message: format!(
                "{}: shape {shape:?} holds {n} values, not {}",
                path.display(),
                values.len()
            ),
        });
    }
    std::fs::write(path, f32_bytes(shape, values)).map_err(|e| DataError::io(path, e))
}

/// The bytes of the `.npy` file [`write_f32`] writes, for a caller that writes them itself
/// (atomically). `values` must hold the product of `shape`.
pub fn f32_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode("<f4", false, shape, &data)
}

/// A version-1 `.npy` file of raw `data` as `np.save` writes it: the header is padded so
/// that the data starts at a multiple of 64 bytes.
fn encode(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape = match shape {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let fortran = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' to a multiple of 64.
    while !(MAGIC.len() + 4 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend([1, 0]);
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// Reads an `.npy` file into an 8-bit RGB image.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_rgb(&bytes).map_err(|reason| DataError::BadImage {
        path: path.to_path_buf(),
        reason: format!("cannot read the .npy array: {reason}"),
    })
}

fn decode_rgb(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let (header, data) = parse(bytes)?;
    let (h, w, c) = match header.shape[..] {
        [h, w] => (h, w, 1),
        [h, w, c] if c == 1 || c >= 3 => (h, w, c),
        _ => {
            return Err(format!(
                "shape {:?} is not an image: expected H×W or H×W×C with C = 1 or C ≥ 3",
                header.shape
            ))
        }
    };
    let (width, height) = (
        u32::try_from(w).map_err(|_| "too wide")?,
        u32::try_from(h).map_err(|_| "too tall")?,
    );
    let n = h
        .checked_mul(w)
        .and_then(|x| x.checked_mul(c))
        .ok_or("the shape overflows")?;
    let size = header.dtype.size;
    // Checked against the bytes that are there before anything is allocated: a header may
    // claim any shape.
    let needed = n.checked_mul(size).ok_or("the shape overflows")?;
    if data.len() < needed {
        return Err(format!(
            "truncated: {} data bytes for {n} elements of {size} bytes",
            data.len()
        ));
    }
    if n == 0 {
        return Err(format!("shape {:?} has no pixels", header.shape));
    }
    // Offset of element (y, x, k) in C (row-major) or Fortran (column-major) order.
    let index = |y: usize, x: usize, k: usize| -> usize {
        if header.fortran_order {
            y + h * (x + w * k)
        } else {
            (y * w + x) * c + k
        }
    };
    let element = |i: usize| to_u8(&data[i * size..(i + 1) * size], header.dtype);
    Ok(RgbImage::from_fn(width, height, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let channel = |k: usize| element(index(y, x, if c == 1 { 0 } else { k }));
        image::Rgb([channel(0), channel(1), channel(2)])
    }))
}

/// One element cast to `uint8` as NumPy's `astype(np.uint8)` does: integers keep their low
/// byte (wrap modulo 256), floats are truncated toward zero and then wrapped the same way.
/// NumPy leaves out-of-range floats to the C compiler; NaN and ±∞ give 0 here, as they do on
/// x86-64.
fn to_u8(b: &[u8], dtype: Dtype) -> u8 {
    let mut raw = [0u8; 8];
    raw[..b.len()].copy_from_slice(b);
    if dtype.big_endian {
        raw[..b.len()].reverse();
    }
    let bits = u64::from_le_bytes(raw);
    match (dtype.kind, dtype.size) {
        (Kind::Bool, _) => (bits != 0) as u8,
        // The low byte of two's complement is the same for signed and unsigned integers.
        (Kind::Unsigned | Kind::Signed, _) => bits as u8,
        (Kind::Float, 4) => float_to_u8(f32::from_bits(bits as u32) as f64),
        (Kind::Float, _) => float_to_u8(f64::from_bits(bits)),
    }
}

fn float_to_u8(v: f64) -> u8 {
    if v.is_finite() && v.abs() < 9.2e18 {
        v.trunc() as i64 as u8
    } else {
        0
    }
}

/// Splits the file into its header and its data.
fn parse(bytes: &[u8]) -> std::result::Result<(Header, &[u8]), String> {
    if !is_npy(bytes) || bytes.len() < 10 {
        return Err("no .npy magic".into());
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("truncated header")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!("unknown format version {v}")),
    };
    let text = bytes
        .get(start..start.saturating_add(len))
        .ok_or("truncated header")?;
    let text = std::str::from_utf8(text).map_err(|_| "the header is not text")?;
    Ok((parse_header(text)?, &bytes[start + len..]))
}

/// Reads the three keys of the header's dict literal.
fn parse_header(text: &str) -> std::result::Result<Header, String> {
    let descr = value_after(text, "descr")?;
    let descr = descr
        .trim_start()
        .strip_prefix(['\'', '"'])
        .and_then(|s| s.split(['\'', '"']).next())
        .ok_or("bad 'descr'")?;
    let fortran = value_after(text, "fortran_order")?.trim_start();
    let fortran_order = if fortran.starts_with("True") {
        true
    } else if fortran.starts_with("False") {
        false
    } else {
        return Err("bad 'fortran_order'".into());
    };
    let shape = value_after(text, "shape")?.trim_start();
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("bad 'shape'")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| format!("bad 'shape' ({inner})"))?;
    Ok(Header {
        dtype: parse_dtype(descr)?,
        fortran_order,
        shape,
    })
}

/// The text after `'key':` in the header.
fn value_after<'a>(text: &'a str, key: &str) -> std::result::Result<&'a str, String> {
    for quote in ['\'', '"'] {
        let pattern = format!("{quote}{key}{quote}");
        if let Some(i) = text.find(&pattern) {
            let rest = text[i + pattern.len()..].trim_start();
            return rest
                .strip_prefix(':')
                .ok_or_else(|| format!("no value for '{key}'"));
        }
    }
    Err(format!("no '{key}' in the header"))
}

/// `'<f4'`, `'|u1'`, `'>i2'`, `'?'`…: byte order, kind and size.
fn parse_dtype(descr: &str) -> std::result::Result<Dtype, String> {
    let (big_endian, rest) = match descr.as_bytes().first() {
        Some(b'>') => (true, &descr[1..]),
        Some(b'<' | b'|' | b'=') => (false, &descr[1..]),
        _ => (false, descr),
    };
    let unsupported =
        || format!("element type '{descr}' is not supported (bool, int, uint, float)");
    if rest == "?" || rest == "b1" {
        return Ok(Dtype {
            kind: Kind::Bool,
            size: 1,
            big_endian,
        });
    }
    let kind = match rest.chars().next() {
        Some('u') => Kind::Unsigned,
        Some('i') => Kind::Signed,
        Some('f') => Kind::Float,
        _ => return Err(unsupported()),
    };
    let size: usize = rest[1..].parse().map_err(|_| unsupported())?;
    let ok = match kind {
        Kind::Float => size == 4 || size == 8,
        _ => matches!(size, 1 | 2 | 4 | 8),
    };
    if !ok {
        return Err(unsupported());
    }
    Ok(Dtype {
        kind,
        size,
        big_endian,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A version-1 `.npy` file as `np.save` writes it (header padded to 64 bytes).
    pub fn npy_bytes(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
        encode(descr, fortran, shape, data)
    }

    #[test]
    fn written_f32_arrays_read_back_as_numpy_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        let values = [0.5f32, -1.0, 2.25, 3.0, 4.0, 5.0];
        write_f32(&path, &[2, 3], &values).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (header, data) = parse(&bytes).unwrap();
        assert_eq!(header.shape, [2, 3]);
        assert!(!header.fortran_order);
        assert_eq!((header.dtype.kind, header.dtype.size), (Kind::Float, 4));
        // NumPy's layout: the data starts at a multiple of 64 bytes.
        assert_eq!((bytes.len() - data.len()) % 64, 0);
        let back: Vec<f32> = data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, values);
        assert!(write_f32(&path, &[4, 2], &values).is_err());
    }

    #[test]
    fn uint8_hwc_keeps_the_first_three_channels() {
        // 1 × 2 × 4: pixel (0, 0) = [1, 2, 3, 4], pixel (1, 0) = [5, 6, 7, 8].
        let bytes = npy_bytes("|u1", false, &[1, 2, 4], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let img = decode_rgb(&bytes).unwrap();
        assert_eq!(img.dimensions(), (2, 1));
        assert_eq!(img.get_pixel(0, 0).0, [1, 2, 3]);
        assert_eq!(img.get_pixel(1, 0).0, [5, 6, 7]);
    }

    #[test]
    fn floats_are_cast_like_astype_uint8() {
        // 2 × 1 × 3 float32: truncation toward zero, wrap modulo 256, NaN → 0.
        let values: [f32; 6] = [0.9, 254.99, 300.5, -1.5, f32::NAN, 3.0];
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let img = decode_rgb(&npy_bytes("<f4", false, &[2, 1, 3], &data)).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [0, 254, 44]);
        assert_eq!(img.get_pixel(0, 1).0, [255, 0, 3]);
        // Big-endian float64 in Fortran order, 1 × 2 grey.
        let data: Vec<u8> = [7.0f64, 200.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let img = decode_rgb(&npy_bytes(">f8", true, &[1, 2], &data)).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [7, 7, 7]);
        assert_eq!(img.get_pixel(1, 0).0, [200, 200, 200]);
    }

    #[test]
    fn fortran_order_indexes_columns_first() {
        // 2 × 1 × 3 in column-major order: all of channel 0, then 1, then 2.
        let img = decode_rgb(&npy_bytes("|u1", true, &[2, 1, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [1, 3, 5]);
        assert_eq!(img.get_pixel(0, 1).0, [2, 4, 6]);
        // int16 wraps like astype: 258 → 2, -1 → 255.
        let data: Vec<u8> = [258i16, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let img = decode_rgb(&npy_bytes("<i2", false, &[1, 2], &data)).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [2, 2, 2]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 255, 255]);
    }

    #[test]
    fn shapes_at_the_limits_are_refused_without_overflow() {
        // Every combination of dimensions where sizes overflow, for each element size: an error
        // (the body is 64 bytes), never a panic or an allocation sized by the shape.
        let dims = [
            0,
            1,
            3,
            1 << 20,
            1 << 31,
            1 << 32,
            (1 << 61) + 1,
            usize::MAX / 3,
            usize::MAX,
        ];
        for descr in ["|u1", "<i2", "<f4", "<f8"] {
            for &h in &dims {
                for &w in &dims {
                    for shape in [vec![h, w], vec![1, h, w], vec![h, 1, w], vec![h, w, 3]] {
                        let bytes = npy_bytes(descr, false, &shape, &[5; 64]);
                        let ok = decode_rgb(&bytes).is_ok();
                        let small = shape.iter().all(|&d| (1..=3).contains(&d));
                        assert!(!ok || small, "{descr} {shape:?} was accepted");
                    }
                }
            }
        }
    }

    #[test]
    fn bad_arrays_say_why() {
        let two_channels = npy_bytes("|u1", false, &[1, 1, 2], &[1, 2]);
        assert!(decode_rgb(&two_channels)
            .unwrap_err()
            .contains("not an image"));
        let short = npy_bytes("|u1", false, &[2, 2, 3], &[1, 2, 3]);
        assert!(decode_rgb(&short).unwrap_err().contains("truncated"));
        let complex = npy_bytes("<c8", false, &[1, 1], &[0; 8]);
        assert!(decode_rgb(&complex).unwrap_err().contains("'<c8'"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, &short).unwrap();
        let err = read_rgb(&path).unwrap_err().to_string();
        assert!(err.contains("x.npy") && err.contains("truncated"), "{err}");
    }
}
