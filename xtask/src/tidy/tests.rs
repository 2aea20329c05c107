//! The checks on the workspace itself, and on small generated workspaces that show each check
//! failing when what it guards against is introduced.

use super::*;

/// A workspace of one crate `crates/a` whose files are `files` (path under `src/`, text), and
/// an ARCHITECTURE.md whose code map names `mapped`.
fn workspace(files: &[(&str, &str)], mapped: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("crates/a/src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(dir.path().join("xtask/src")).unwrap();
    std::fs::write(dir.path().join("crates/a/Cargo.toml"), "").unwrap();
    std::fs::write(dir.path().join("xtask/src/main.rs"), "fn main() {}\n").unwrap();
    for (path, text) in files {
        let file = src.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    let mut map = String::from("# A\n\n## Code map\n\n| what | where |\n|---|---|\n");
    for m in mapped.iter().chain(&["xtask/src/main.rs"]) {
        map += &format!("| x | `{m}` |\n");
    }
    map += "\n## After\n\n`crates/not/mapped/here.rs`\n";
    std::fs::write(dir.path().join("ARCHITECTURE.md"), map).unwrap();
    dir
}

const LIB: &str = "//! A.\n\nmod data;\nmod model;\npub use model::Model;\n";
const DATA: &str = "pub struct Data;\n";
const MODEL: &str = "use crate::data::Data;\n\npub struct Model(pub Data);\n";

#[test]
fn the_workspace_is_tidy() {
    let root = crate::workspace::root();
    let found = problems(&root).unwrap();
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn a_line_of_imports_passes() {
    let ws = workspace(
        &[("lib.rs", LIB), ("data.rs", DATA), ("model.rs", MODEL)],
        &["crates/a/src/"],
    );
    assert_eq!(problems(ws.path()).unwrap(), Vec::<String>::new());
}

#[test]
fn a_cycle_fails_naming_its_modules_and_lines() {
    // data.rs now imports model.rs, which imports data.rs: through a re-export at the root,
    // in code rather than a `use`, as a newcomer might write it.
    let data = "pub struct Data;\n\npub fn of(m: &crate::Model) -> &Data {\n    &m.0\n}\n";
    let ws = workspace(
        &[("lib.rs", LIB), ("data.rs", data), ("model.rs", MODEL)],
        &["crates/a/src/"],
    );
    let found = problems(ws.path()).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "import cycle among crates/a/src/data.rs, crates/a/src/model.rs: \
             crates/a/src/data.rs:3 imports crates/a/src/model.rs; \
             crates/a/src/model.rs:1 imports crates/a/src/data.rs"
        ),
        "{}",
        found[0]
    );
}

#[test]
fn a_cycle_through_a_parent_module_fails_and_test_code_does_not_count() {
    // run/mod.rs calls into its child, whose helper lives in run/mod.rs: a cycle one folder
    // down. A test module importing anything is no cycle.
    let lib = "mod run;\n";
    let run = "mod step;\n\npub fn helper() {}\n\npub fn go() {\n    step::go();\n}\n";
    let step = "pub fn go() {\n    super::helper();\n}\n\n#[cfg(test)]\nmod tests {\n    use crate::run;\n}\n";
    let ws = workspace(
        &[("lib.rs", lib), ("run/mod.rs", run), ("run/step.rs", step)],
        &["crates/a/src/"],
    );
    let found = problems(ws.path()).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("crates/a/src/run/mod.rs, crates/a/src/run/step.rs"),
        "{}",
        found[0]
    );
    // The helper in a module of its own: no cycle.
    let run = "mod helpers;\nmod step;\n\npub fn go() {\n    step::go();\n}\n";
    let step = "pub fn go() {\n    super::helpers::helper();\n}\n";
    let ws = workspace(
        &[
            ("lib.rs", lib),
            ("run/mod.rs", run),
            ("run/step.rs", step),
            ("run/helpers.rs", "pub fn helper() {}\n"),
        ],
        &["crates/a/src/"],
    );
    assert_eq!(problems(ws.path()).unwrap(), Vec::<String>::new());
}

#[test]
fn an_unmapped_file_and_a_stale_path_fail() {
    let ws = workspace(
        &[("lib.rs", LIB), ("data.rs", DATA), ("model.rs", MODEL)],
        &[
            "crates/a/src/lib.rs",
            "crates/a/src/model.rs",
            "crates/a/src/gone.rs",
        ],
    );
    assert_eq!(
        problems(ws.path()).unwrap(),
        [
            "ARCHITECTURE.md's code map names `crates/a/src/gone.rs`, which does not exist",
            "crates/a/src/data.rs: not under any row of ARCHITECTURE.md's code map",
        ]
    );
}

#[test]
fn long_uncompiled_and_path_included_files_fail() {
    let long = "// x\n".repeat(MAX_LINES + 1);
    let model = "#[path = \"../other.rs\"]\nmod other;\n";
    let ws = workspace(
        &[
            ("lib.rs", LIB),
            ("data.rs", &long),
            ("model.rs", model),
            ("other.rs", ""),
            ("stray.rs", ""),
        ],
        &["crates/a/src/"],
    );
    let found = problems(ws.path()).unwrap();
    assert!(found
        .iter()
        .any(|p| p.starts_with("crates/a/src/data.rs: 901 lines")));
    assert!(found
        .iter()
        .any(|p| p.starts_with("crates/a/src/model.rs: includes a file by #[path]")));
    assert!(found
        .iter()
        .any(|p| p.starts_with("crates/a/src/stray.rs: no `mod` declares it")));
}

#[test]
fn a_tier_may_not_import_the_one_above() {
    let ws = workspace(&[], &[]);
    let src = ws.path().join("crates/dra-train/src");
    std::fs::create_dir_all(src.join("record")).unwrap();
    std::fs::write(ws.path().join("crates/dra-train/Cargo.toml"), "").unwrap();
    std::fs::write(src.join("lib.rs"), "mod error;\nmod record;\nmod run;\n").unwrap();
    std::fs::write(src.join("error.rs"), "pub struct E;\n").unwrap();
    std::fs::write(
        src.join("record/mod.rs"),
        "pub fn f() {\n    crate::run::g();\n}\n",
    )
    .unwrap();
    std::fs::write(src.join("run.rs"), "pub fn g() {}\n").unwrap();
    let found = problems(ws.path()).unwrap();
    assert!(
        found.iter().any(|p| p
            == "crates/dra-train/src/record/mod.rs:2 imports crates/dra-train/src/run.rs, a tier \
                above it (record may use only error, record)"),
        "{found:?}"
    );
}
