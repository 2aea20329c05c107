//! A crate's module tree, read from its `mod` declarations, and the imports between its
//! modules, read from `use` statements and paths in code (`crate::…`, `super::…`, a child
//! module's name). Test code is left out: `#[cfg(test)]` modules, inline or in files.
//!
//! A `pub use` is the face a module shows, not a dependency of it: it is not an edge, but a
//! path that reaches an item through it is followed to the module that defines the item, so
//! that `use crate::Category` counts as an import of the module `Category` lives in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::lexer::code_only;

/// One module of a crate, defined by a file of its own.
#[derive(Debug)]
pub struct Module {
    /// Its path from the crate root (`["run", "train", "fit"]`); empty for the root.
    pub path: Vec<String>,
    /// The file that defines it.
    pub file: PathBuf,
    /// Child modules, by name → index into [`Crate::modules`].
    pub children: HashMap<String, usize>,
    /// Its parent's index (`None` for the root).
    pub parent: Option<usize>,
    /// The file's code (comments and literals blanked, test code removed).
    code: String,
    /// Its `pub use` paths, each with the name it binds: how its re-exports are followed.
    public_uses: Vec<(Vec<String>, String)>,
}

/// An import of one module by another.
#[derive(Clone, Debug)]
pub struct Edge {
    /// The importing module's index.
    pub from: usize,
    /// The imported module's index.
    pub to: usize,
    /// Line in the importing file, counted from 1.
    pub line: usize,
}

/// A crate (one library or binary root) as modules and edges.
#[derive(Debug)]
pub struct Crate {
    /// Every module; the root first.
    pub modules: Vec<Module>,
    /// The files of test-only modules (`#[cfg(test)] mod x;`): compiled, but no part of the
    /// graph.
    pub test_files: Vec<PathBuf>,
    /// Every import between two different modules.
    pub edges: Vec<Edge>,
}

impl Crate {
    /// Reads the crate whose root file is `root` (`lib.rs`, `main.rs`, `bin/x/main.rs`).
    pub fn read(root: &Path) -> Result<Self> {
        let mut modules = Vec::new();
        let mut test_files = Vec::new();
        add_module(&mut modules, &mut test_files, root, Vec::new(), None, true)?;
        let mut krate = Self {
            modules,
            test_files,
            edges: Vec::new(),
        };
        krate.edges = krate.find_edges();
        Ok(krate)
    }

    /// The module's display name: its file relative to `base`.
    pub fn name(&self, i: usize, base: &Path) -> String {
        let f = &self.modules[i].file;
        f.strip_prefix(base).unwrap_or(f).display().to_string()
    }

    /// Follows `path` (segments after any `crate`/`self`/`super`) from module `at`, through
    /// child modules and re-exports, to the module that defines what it names.
    fn resolve(&self, at: usize, segments: &[String], depth: usize) -> usize {
        let mut m = at;
        for seg in segments {
            if let Some(&child) = self.modules[m].children.get(seg) {
                m = child;
                continue;
            }
            // An item of `m`: defined there, or re-exported from elsewhere.
            if depth < 8 {
                for (path, alias) in &self.modules[m].public_uses {
                    if alias != seg || alias == "*" {
                        continue;
                    }
                    if let Some((start, rest)) = self.start(m, path) {
                        if let Some((item, module)) = rest.split_last() {
                            let target = self.resolve(start, module, depth + 1);
                            return self.resolve(target, std::slice::from_ref(item), depth + 1);
                        }
                    }
                }
            }
            return m;
        }
        m
    }

    /// Where a path written in module `at` starts, and its remaining segments; `None` for a
    /// path outside the crate (another crate, `std`, a local item).
    fn start(&self, at: usize, path: &[String]) -> Option<(usize, Vec<String>)> {
        let first = path.first()?;
        match first.as_str() {
            "crate" => Some((0, path[1..].to_vec())),
            "self" => Some((at, path[1..].to_vec())),
            "super" => {
                let mut m = at;
                let mut rest = path;
                while rest.first().map(String::as_str) == Some("super") {
                    m = self.modules[m].parent?;
                    rest = &rest[1..];
                }
                Some((m, rest.to_vec()))
            }
            name if self.modules[at].children.contains_key(name) => Some((at, path.to_vec())),
            _ => None,
        }
    }

    fn find_edges(&self) -> Vec<Edge> {
        let mut edges = Vec::new();
        for (i, module) in self.modules.iter().enumerate() {
            for (path, line) in references(&module.code) {
                if let Some((start, rest)) = self.start(i, &path) {
                    let to = self.resolve(start, &rest, 0);
                    if to != i {
                        edges.push(Edge { from: i, to, line });
                    }
                }
            }
        }
        edges
    }
}

/// Adds the module of `file` and, recursively, the modules it declares.
fn add_module(
    modules: &mut Vec<Module>,
    test_files: &mut Vec<PathBuf>,
    file: &Path,
    path: Vec<String>,
    parent: Option<usize>,
    is_root: bool,
) -> Result<usize> {
    let source = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let all_code = code_only(&source);
    let code = inline_super(&without_tests(&all_code));
    let public_uses = uses(&code)
        .into_iter()
        .filter(|(_, _, public)| *public)
        .map(|(path, alias, _)| (path, alias))
        .collect();
    let index = modules.len();
    modules.push(Module {
        path: path.clone(),
        file: file.to_path_buf(),
        children: HashMap::new(),
        parent,
        code: code.clone(),
        public_uses,
    });
    // Children of `lib.rs`, `main.rs` and `mod.rs` lie beside them; of `a.rs`, in `a/`.
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let dir = if is_root || name == "mod.rs" {
        file.parent().expect("a file has a folder").to_path_buf()
    } else {
        file.with_extension("")
    };
    let child_file = |child: &str| -> Option<PathBuf> {
        let as_file = dir.join(format!("{child}.rs"));
        let as_dir = dir.join(child).join("mod.rs");
        // Neither (a `#[path]` module, which tidy reports on its own): not followed.
        [as_file, as_dir].into_iter().find(|f| f.is_file())
    };
    let declared = declared_modules(&code);
    for child in &declared {
        let Some(child_file) = child_file(child) else {
            continue;
        };
        let mut child_path = path.clone();
        child_path.push(child.clone());
        let c = add_module(
            modules,
            test_files,
            &child_file,
            child_path,
            Some(index),
            false,
        )?;
        modules[index].children.insert(child.clone(), c);
    }
    for child in declared_modules(&all_code) {
        if !declared.contains(&child) {
            test_files.extend(child_file(&child));
        }
    }
    Ok(index)
}

/// Code without its test modules: a `#[cfg(test)]` item (`mod tests { … }` or `mod x;`) is cut
/// out with its braces; line breaks are kept.
pub fn without_tests(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(at) = out[from..].find("#[cfg(test)]").map(|k| k + from) {
        let after = at + "#[cfg(test)]".len();
        let rest = &out[after..];
        let trimmed = rest.trim_start();
        let end = if trimmed.starts_with("mod ") || trimmed.starts_with("pub(crate) mod ") {
            match (rest.find('{'), rest.find(';')) {
                (Some(b), Some(s)) if s < b => after + s + 1,
                (Some(b), _) => after + b + matching_brace(&rest[b..]),
                (None, Some(s)) => after + s + 1,
                (None, None) => out.len(),
            }
        } else {
            // A test-only `use` or function: up to its end.
            match (rest.find('{'), rest.find(';')) {
                (Some(b), Some(s)) if s < b => after + s + 1,
                (Some(b), _) => after + b + matching_brace(&rest[b..]),
                _ => out.len(),
            }
        };
        let blanked: String = out[at..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(at..end, &blanked);
        from = at + blanked.len();
    }
    out
}

/// The length of the brace group that `text` starts with.
fn matching_brace(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// The names of the modules `code` declares in files (`mod x;`, with any visibility); inline
/// modules (`mod x { … }`) are part of their file's module.
fn declared_modules(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(k) = code[from..].find("mod ").map(|k| k + from) {
        from = k + 4;
        if k > 0
            && !matches!(
                code.as_bytes()[k - 1],
                b' ' | b'\n' | b'\t' | b';' | b'}' | b']'
            )
        {
            continue;
        }
        let rest = code[k + 4..].trim_start();
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if is_ident(&name) && rest[name.len()..].trim_start().starts_with(';') {
            names.push(name);
        }
    }
    names
}

/// Inside an inline module (`mod x { … }`), `super` is the file's own module: written as
/// `self` here, so that paths resolve from the file's module alone.
fn inline_super(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(k) = out[from..].find("mod ").map(|k| k + from) {
        from = k + 4;
        let rest = &out[k + 4..];
        let name_len = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .count();
        let after = rest.trim_start()[name_len..].trim_start();
        if name_len == 0 || !after.starts_with('{') {
            continue;
        }
        let open = k + 4 + (rest.len() - after.len());
        let end = open + matching_brace(&out[open..]);
        let inner = out[open..end].replace("super::", "self:: ");
        out.replace_range(open..end, &inner);
    }
    out
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// The `use` statements of `code`: (full path, the name it binds, whether it is `pub`).
pub fn uses(code: &str) -> Vec<(Vec<String>, String, bool)> {
    use_statements(code)
        .into_iter()
        .flat_map(|(tree, public, _)| {
            expand(&tree)
                .into_iter()
                .map(move |(path, alias)| (path, alias, public))
        })
        .collect()
}

/// Each `use` statement: its tree's text, whether it is `pub…`, and its line.
fn use_statements(code: &str) -> Vec<(String, bool, usize)> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(k) = code[from..].find("use ").map(|k| k + from) {
        from = k + 4;
        let boundary = k == 0 || matches!(bytes[k - 1], b' ' | b'\n' | b'\t' | b';' | b'{' | b'}');
        if !boundary {
            continue;
        }
        // What precedes on the statement: nothing, or a visibility.
        let head = code[..k]
            .rsplit([';', '{', '}', '\n', ']'])
            .next()
            .unwrap_or("");
        let head = head.trim();
        let public = head.starts_with("pub");
        if !(head.is_empty() || public) {
            continue;
        }
        let Some(end) = code[k..].find(';').map(|e| e + k) else {
            break;
        };
        let line = code[..k].matches('\n').count() + 1;
        out.push((code[k + 4..end].to_string(), public, line));
        from = end;
    }
    out
}

/// The paths of a use tree (`a::{b, c::{d as e, self}}`), each with the name it binds.
fn expand(tree: &str) -> Vec<(Vec<String>, String)> {
    let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = Vec::new();
    expand_into(tree.trim().trim_start_matches("::"), &[], &mut out);
    out
}

fn expand_into(tree: &str, prefix: &[String], out: &mut Vec<(Vec<String>, String)>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let mut base = prefix.to_vec();
        base.extend(head);
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        for part in split_top(inner) {
            expand_into(&part, &base, out);
        }
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((p, a)) => (p.trim(), Some(a.trim().to_string())),
        None => (tree, None),
    };
    let mut segments = prefix.to_vec();
    segments.extend(
        path.split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from),
    );
    if segments.last().map(String::as_str) == Some("self") {
        segments.pop();
    }
    if let Some(last) = segments.last().cloned() {
        out.push((segments, alias.unwrap_or(last)));
    }
}

/// `a, b::{c, d}, e` split at its top-level commas.
fn split_top(text: &str) -> Vec<String> {
    let (mut parts, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// Every path a module's code refers to that may be the crate's: the private `use` statements'
/// paths, and paths in code that start with `crate`, `self`, `super` or any identifier
/// followed by `::` (the caller keeps those that name a child module). `pub use` statements
/// are the module's face, not its dependencies, and are left out.
fn references(code: &str) -> Vec<(Vec<String>, usize)> {
    let mut out = Vec::new();
    let mut rest_code = code.to_string();
    for (tree, public, line) in use_statements(code) {
        if !public {
            for (path, _) in expand(&tree) {
                out.push((path, line));
            }
        }
    }
    // Blank the use statements so that their paths are not read twice.
    for (tree, _, _) in use_statements(code) {
        if let Some(k) = rest_code.find(&tree) {
            let blanked: String = tree
                .chars()
                .map(|c| if c == '\n' { '\n' } else { ' ' })
                .collect();
            rest_code.replace_range(k..k + tree.len(), &blanked);
        }
    }
    let chars: Vec<char> = rest_code.chars().collect();
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
        }
        let starts = (c.is_alphabetic() || c == '_')
            && (i == 0
                || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':'));
        if !starts {
            i += 1;
            continue;
        }
        let mut segments = Vec::new();
        let mut j = i;
        loop {
            let s = j;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            segments.push(chars[s..j].iter().collect::<String>());
            if chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':') {
                j += 2;
                if chars.get(j).is_some_and(|c| c.is_alphabetic() || *c == '_') {
                    continue;
                }
            }
            break;
        }
        // `pub(in crate::a)` names a module to say who sees an item: no import.
        let visibility = chars[..i]
            .iter()
            .rev()
            .skip_while(|c| c.is_whitespace())
            .take(3)
            .eq(['n', 'i', '('].iter());
        if segments.len() > 1 && !visibility {
            out.push((segments, line));
        }
        i = j.max(i + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(tree: &str) -> Vec<String> {
        expand(tree)
            .into_iter()
            .map(|(p, a)| format!("{}={a}", p.join("::")))
            .collect()
    }

    #[test]
    fn use_trees_expand_to_paths_and_names() {
        assert_eq!(
            paths("crate::a::{b, c::{self, D as E}, f::*}"),
            [
                "crate::a::b=b",
                "crate::a::c=c",
                "crate::a::c::D=E",
                "crate::a::f::*=*"
            ]
        );
        let u = uses("pub use x::Y;\npub(crate) use z::W;\nuse q::R;\nfn f() { use s::T; }");
        assert_eq!(u.len(), 4);
        assert!(u[0].2 && u[1].2 && !u[2].2 && !u[3].2);
        assert_eq!(uses("let reuse = 1; confuse ::x;").len(), 0);
    }

    #[test]
    fn test_modules_are_cut_out() {
        let code = "use a::B;\n#[cfg(test)]\nmod tests {\n    use crate::x;\n}\nfn f() {}\n\
                    #[cfg(test)]\nmod fixtures;\n";
        let cut = without_tests(code);
        assert!(!cut.contains("crate::x") && !cut.contains("fixtures"));
        assert!(cut.contains("use a::B;") && cut.contains("fn f() {}"));
        assert_eq!(cut.lines().count(), code.lines().count());
    }

    #[test]
    fn declarations_are_found_with_any_visibility() {
        let code =
            "mod a;\npub mod b;\npub(crate) mod c;\n#[cfg(feature = \"x\")]\nmod d;\nmod e { }\n";
        assert_eq!(declared_modules(code), ["a", "b", "c", "d"]);
    }
}
