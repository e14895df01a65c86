//! The layout keeps its promises: imports run downhill only (no module of `src/` names one above it),
//! only `src/gui/` names the GUI crates, and `docs/architecture.md` names the folders that exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The top-level modules from the bottom up; a module may use those before it in this list (and
/// those on its own level).
const LEVELS: &[&[&str]] = &[
    &["error", "files"],
    &["kernels", "checkpoint", "image", "hub"],
    &["intr"],
    &["probe", "overlay"],
    &["session", "figure"],
    &["batch", "demo", "fuzzing"],
    &["gui"],
    &["cli"],
    &["lib", "main"],
];

fn level(module: &str) -> Option<usize> {
    LEVELS.iter().position(|l| l.contains(&module))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The top-level module a file of `src/` belongs to.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// The code of a file without its comments (`//` to the end of a line).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| l.split("//").next().unwrap_or(""))
}

#[test]
fn imports_run_downhill_only() {
    let mut uphill = Vec::new();
    for f in rust_files(&src()) {
        let me = module_of(&f);
        let mine = level(&me).unwrap_or_else(|| panic!("{}: module `{me}` has no level in LEVELS", f.display()));
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in code_lines(&text).enumerate() {
            for part in line.split("crate::").skip(1) {
                let used: String = part.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let Some(theirs) = level(&used) else { continue };
                if theirs > mine {
                    uphill.push(format!("{}:{}: `{me}` uses `{used}`", f.display(), n + 1));
                }
            }
        }
    }
    assert!(uphill.is_empty(), "imports that run back up:\n{}", uphill.join("\n"));
}

#[test]
fn only_the_gui_folder_names_the_gui_crates() {
    let gui = src().join("gui");
    let mut found = Vec::new();
    for f in rust_files(&src()).into_iter().filter(|f| !f.starts_with(&gui)) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let words: Vec<&str> = line.split(|c: char| !(c.is_alphanumeric() || c == '_')).collect();
            if let Some(w) = words.iter().find(|w| ["eframe", "egui", "wgpu", "rfd", "winit"].contains(w)) {
                found.push(format!("{}:{}: {w}", f.display(), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "GUI crates named outside src/gui/:\n{}", found.join("\n"));
}

#[test]
fn the_architecture_map_names_every_folder_and_only_folders_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let named: BTreeSet<String> = doc
        .split('`')
        .filter(|s| s.starts_with("src/") && s.ends_with('/'))
        .map(|s| s.trim_end_matches('/').to_string())
        .collect();
    let missing: Vec<&String> = named.iter().filter(|n| !root.join(n.as_str()).is_dir()).collect();
    assert!(missing.is_empty(), "docs/architecture.md names folders that do not exist: {missing:?}");
    let mut folders = BTreeSet::new();
    let mut stack = vec![src()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                folders.insert(p.strip_prefix(root).unwrap().display().to_string());
                stack.push(p);
            }
        }
    }
    let unnamed: Vec<&String> = folders.iter().filter(|f| !named.contains(*f)).collect();
    assert!(unnamed.is_empty(), "folders docs/architecture.md does not name (as `src/…/`): {unnamed:?}");
}
