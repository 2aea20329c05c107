//! Property tests of weight loading: damaged or arbitrary `.pth` (PyTorch zip pickles) and
//! safetensors files give an error naming the file, never a panic or an abort.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use dra_model::read_tensors;
use dra_test_support::bytes::mutate;
use proptest::prelude::*;
use proptest::sample::Index;

fn pth() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_state_dict.pth");
    std::fs::read(path).unwrap()
}

fn safetensors() -> Vec<u8> {
    let mut tensors = HashMap::new();
    tensors.insert(
        "conv1.weight".to_string(),
        Tensor::arange(0f32, 24., &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 2, 2))
            .unwrap(),
    );
    tensors.insert(
        "bn1.running_var".to_string(),
        Tensor::ones(2, candle_core::DType::F64, &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    std::fs::read(path).unwrap()
}

/// The fixture's archive with one member's bytes damaged and the archive rebuilt (stored, as
/// PyTorch writes it) with valid checksums, so that damage reaches the pickle and tensor parsers
/// rather than stopping at the zip's CRC.
fn damaged_member(member: Index, edits: &[(Index, u8)], cut: Option<Index>) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(pth())).unwrap();
    let target = member.index(archive.len());
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let name = file.name().unwrap().to_string();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        if i == target && !bytes.is_empty() {
            bytes = mutate(bytes, edits, cut);
        }
        out.start_file(name, stored).unwrap();
        out.write_all(&bytes).unwrap();
    }
    out.finish().unwrap().into_inner()
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.bin");
    std::fs::write(&path, bytes).unwrap();
    if let Err(e) = read_tensors(&path) {
        prop_assert!(e.to_string().contains("weights.bin"), "{e}");
    }
    Ok(())
}

#[test]
fn the_valid_seeds_read() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [("a.pth", pth()), ("b.safetensors", safetensors())] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        assert!(!read_tensors(&path).unwrap().is_empty(), "{name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_pth_files_fail_cleanly(
        edits in prop::collection::vec((any::<Index>(), any::<u8>()), 0..6),
        cut in prop::option::of(any::<Index>()),
    ) {
        check(&mutate(pth(), &edits, cut))?;
    }

    #[test]
    fn damaged_pickles_and_storages_fail_cleanly(
        member in any::<Index>(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<Index>()),
    ) {
        check(&damaged_member(member, &edits, cut))?;
    }

    #[test]
    fn damaged_safetensors_files_fail_cleanly(
        edits in prop::collection::vec((any::<Index>(), any::<u8>()), 0..6),
        cut in prop::option::of(any::<Index>()),
    ) {
        check(&mutate(safetensors(), &edits, cut))?;
    }

    #[test]
    fn arbitrary_bytes_fail_cleanly(
        head in prop::sample::select(vec![&b"PK\x03\x04"[..], &b""[..], &[0x40, 0, 0, 0, 0, 0, 0, 0][..]]),
        tail in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = head.to_vec();
        bytes.extend(tail);
        check(&bytes)?;
    }
}
