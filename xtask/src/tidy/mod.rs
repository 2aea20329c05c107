//! `cargo xtask tidy`, and the test that runs it with `cargo test`: checks that keep the map of
//! the house true, in the spirit of rust-analyzer's `tidy.rs`.
//!
//! - **No import cycle** between the modules of any crate: at every folder, the modules in it
//!   (and the folder's own `mod.rs`) import one another in one direction only.
//! - **dra-train's tiers** import downward only: `record` ← `engine` ← `run`.
//! - **The code map is true**: every path ARCHITECTURE.md's code map names exists, and every
//!   source file falls under one of its rows.
//! - **Every source file is compiled** (declared by a `mod`), none is included by `#[path]`,
//!   and none is over [`MAX_LINES`] lines.

mod lexer;
mod modules;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use modules::Crate;

/// The longest a source file may be.
pub const MAX_LINES: usize = 900;

/// Layered crates: for a crate root, its top-level modules in tiers, bottom first. A module
/// may import its own tier and those below, never one above.
const TIERS: &[(&str, &[&[&str]])] = &[(
    "crates/dra-train/src/lib.rs",
    &[&["error"], &["record"], &["engine"], &["run"]],
)];

/// Runs every check on the workspace at `root`; prints the problems and fails when there is
/// one.
pub fn tidy(root: &Path) -> Result<()> {
    let problems = problems(root)?;
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        println!("tidy: no import cycle, tiers kept, the code map matches the tree");
        Ok(())
    } else {
        bail!("tidy: {} problem(s)", problems.len())
    }
}

/// Every problem of the workspace at `root`, one line each.
pub fn problems(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut compiled = BTreeSet::new();
    for crate_root in crate_roots(root)? {
        let krate = Crate::read(&crate_root)?;
        compiled.extend(krate.modules.iter().map(|m| m.file.clone()));
        compiled.extend(krate.test_files.iter().cloned());
        problems.extend(cycles(&krate, root));
        if let Some((_, tiers)) = TIERS.iter().find(|(file, _)| root.join(file) == crate_root) {
            problems.extend(tier_violations(&krate, tiers, root));
        }
    }
    let sources = rust_files(root)?;
    for file in &sources {
        let rel = relative(file, root);
        let text = std::fs::read_to_string(file).with_context(|| rel.clone())?;
        let lines = text.lines().count();
        if lines > MAX_LINES {
            problems.push(format!(
                "{rel}: {lines} lines, more than {MAX_LINES}: split it"
            ));
        }
        if lexer::code_only(&text).contains("#[path") {
            problems.push(format!(
                "{rel}: includes a file by #[path]; share it through a crate (test-support)"
            ));
        }
        if in_src(&rel) && !compiled.contains(file) {
            problems.push(format!(
                "{rel}: no `mod` declares it, so it is never compiled"
            ));
        }
    }
    problems.extend(code_map_problems(root, &sources)?);
    Ok(problems)
}

/// The roots of every crate of the workspace: each library, program and `src/bin` program of
/// `crates/*` and `xtask`.
fn crate_roots(root: &Path) -> Result<Vec<PathBuf>> {
    let mut packages: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .with_context(|| root.join("crates").display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    packages.push(root.join("xtask"));
    packages.sort();
    let mut roots = Vec::new();
    for package in packages {
        let src = package.join("src");
        for file in ["lib.rs", "main.rs"] {
            if src.join(file).is_file() {
                roots.push(src.join(file));
            }
        }
        if let Ok(bins) = std::fs::read_dir(src.join("bin")) {
            let mut bins: Vec<PathBuf> = bins.filter_map(|e| e.ok().map(|e| e.path())).collect();
            bins.sort();
            for bin in bins {
                if bin.is_dir() && bin.join("main.rs").is_file() {
                    roots.push(bin.join("main.rs"));
                } else if bin.extension().is_some_and(|e| e == "rs") {
                    roots.push(bin);
                }
            }
        }
    }
    Ok(roots)
}

/// Every `.rs` file of `crates/` and `xtask/` (sources, tests, examples), sorted.
fn rust_files(root: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&path, out)?;
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(&root.join("crates"), &mut files)?;
    walk(&root.join("xtask"), &mut files)?;
    files.sort();
    Ok(files)
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Whether a workspace-relative file is a crate's source (not a test, example or fixture).
fn in_src(rel: &str) -> bool {
    rel.split('/')
        .nth(if rel.starts_with("crates/") { 2 } else { 1 })
        == Some("src")
}

/// The import cycles of a crate, one line each: at every module with children, the graph of
/// its children (and itself) under the imports between their subtrees.
fn cycles(krate: &Crate, root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for (d, dir) in krate.modules.iter().enumerate() {
        if dir.children.is_empty() {
            continue;
        }
        // The node of module `m` at this level: the child of `d` whose subtree holds it, or `d`
        // itself; `None` outside `d`'s subtree.
        let node = |mut m: usize| -> Option<usize> {
            if m == d {
                return Some(d);
            }
            while let Some(parent) = krate.modules[m].parent {
                if parent == d {
                    return Some(m);
                }
                m = parent;
            }
            None
        };
        let mut graph: HashMap<usize, Vec<(usize, usize, usize)>> = HashMap::new();
        for e in &krate.edges {
            if let (Some(a), Some(b)) = (node(e.from), node(e.to)) {
                if a != b {
                    graph.entry(a).or_default().push((b, e.from, e.line));
                }
            }
        }
        for cycle in strongly_connected(&graph) {
            let names: Vec<String> = cycle.iter().map(|&m| krate.name(m, root)).collect();
            let mut why = Vec::new();
            for &a in &cycle {
                for &(b, from, line) in graph.get(&a).into_iter().flatten() {
                    if cycle.contains(&b) && why.len() < 6 {
                        why.push(format!(
                            "{}:{line} imports {}",
                            krate.name(from, root),
                            krate.name(b, root)
                        ));
                        break;
                    }
                }
            }
            problems.push(format!(
                "import cycle among {}: {}",
                names.join(", "),
                why.join("; ")
            ));
        }
    }
    problems
}

/// The strongly connected components of more than one node (Tarjan's algorithm), each sorted.
fn strongly_connected(graph: &HashMap<usize, Vec<(usize, usize, usize)>>) -> Vec<Vec<usize>> {
    struct State<'a> {
        graph: &'a HashMap<usize, Vec<(usize, usize, usize)>>,
        index: HashMap<usize, usize>,
        low: HashMap<usize, usize>,
        stack: Vec<usize>,
        on_stack: BTreeSet<usize>,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        let next: Vec<usize> = s.graph.get(&v).into_iter().flatten().map(|e| e.0).collect();
        for w in next {
            if !s.index.contains_key(&w) {
                visit(s, w);
                let low = s.low[&v].min(s.low[&w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(&w) {
                let low = s.low[&v].min(s.index[&w]);
                s.low.insert(v, low);
            }
        }
        if s.low[&v] == s.index[&v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut nodes: Vec<usize> = graph.keys().copied().collect();
    nodes.sort();
    let mut state = State {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in nodes {
        if !state.index.contains_key(&v) {
            visit(&mut state, v);
        }
    }
    state.out.sort();
    state.out
}

/// Imports of a layered crate that go up a tier.
fn tier_violations(krate: &Crate, tiers: &[&[&str]], root: &Path) -> Vec<String> {
    let tier_of = |m: usize| -> Option<usize> {
        let top = krate.modules[m].path.first()?;
        tiers.iter().position(|t| t.contains(&top.as_str()))
    };
    let mut problems = Vec::new();
    for e in &krate.edges {
        if let (Some(a), Some(b)) = (tier_of(e.from), tier_of(e.to)) {
            if b > a {
                problems.push(format!(
                    "{}:{} imports {}, a tier above it ({} may use only {})",
                    krate.name(e.from, root),
                    e.line,
                    krate.name(e.to, root),
                    krate.modules[e.from].path[0],
                    tiers[..=a]
                        .iter()
                        .flat_map(|t| t.iter())
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    problems
}

/// The paths ARCHITECTURE.md's code map names (backticked, from the `## Code map` heading to
/// the next `## `), against the tree: each must exist, and each crate source file must fall
/// under one (the file itself, or a folder that holds it).
fn code_map_problems(root: &Path, sources: &[PathBuf]) -> Result<Vec<String>> {
    let doc = root.join("ARCHITECTURE.md");
    let text = std::fs::read_to_string(&doc).with_context(|| doc.display().to_string())?;
    let Some(start) = text.find("\n## Code map") else {
        return Ok(vec!["ARCHITECTURE.md: no `## Code map` section".into()]);
    };
    let section = &text[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |k| k + 3)];
    let named: BTreeSet<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            ["crates/", "xtask/", "tools/", "docs/", "data/"]
                .iter()
                .any(|p| s.starts_with(p))
        })
        .map(String::from)
        .collect();
    let mut problems = Vec::new();
    for path in &named {
        if !root.join(path).exists() {
            problems.push(format!(
                "ARCHITECTURE.md's code map names `{path}`, which does not exist"
            ));
        }
    }
    for file in sources {
        let rel = relative(file, root);
        if !in_src(&rel) {
            continue;
        }
        let covered = named
            .iter()
            .any(|p| *p == rel || (p.ends_with('/') && rel.starts_with(p.as_str())));
        if !covered {
            problems.push(format!(
                "{rel}: not under any row of ARCHITECTURE.md's code map"
            ));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests;
