//! Which photos a list of paths means, for every front end: files as given, folders expanded
//! recursively, sorted, to the files with an image extension ([`crate::image::decode::IMAGE_EXTENSIONS`]).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::decode::has_image_extension;

/// Files are kept as given (a file that is not an image is reported when it is decoded); each
/// folder becomes its image files and those of its sub-folders, sorted by path. Hidden entries
/// (names starting with `.`) inside folders are skipped; a folder that cannot be read adds nothing.
#[must_use]
pub fn expand(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            walk(p, &mut out);
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// [`expand`], or an error naming the inputs when they hold no photo.
pub fn expand_nonempty(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let files = expand(inputs);
    if files.is_empty() {
        let given = inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(Error::Request(format!("no images found in {given}")));
    }
    Ok(files)
}

/// Appends the image files under `dir` in the order of a recursive walk that visits each folder's
/// entries sorted by name (a sub-folder's images come where its name sorts). The folders being
/// walked are an explicit stack, so a deeply nested tree cannot exhaust the call stack, and a
/// folder already walked (a link back up the tree) is not walked again.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut seen = std::collections::HashSet::new();
    seen.insert(dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()));
    let mut stack: Vec<std::vec::IntoIter<PathBuf>> = vec![sorted_entries(dir).into_iter()];
    while let Some(entries) = stack.last_mut() {
        let Some(p) = entries.next() else {
            stack.pop();
            continue;
        };
        if p.is_dir() {
            if seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())) {
                stack.push(sorted_entries(&p).into_iter());
            }
        } else if has_image_extension(&p) {
            out.push(p);
        }
    }
}

/// The entries of `dir` but hidden ones, sorted; none if it cannot be read.
fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut entries: Vec<PathBuf> = rd
        .filter_map(std::result::Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn folders_expand_recursively_sorted_to_their_images() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in
            ["b.jpg", "a.png", "notes.txt", "sub/c.webp", "sub/deeper/d.JPG", ".hidden/e.jpg", "sub/.f.png", "z.gif"]
        {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let got: Vec<String> =
            expand(&[root.to_path_buf()]).iter().map(|p| p.strip_prefix(root).unwrap().display().to_string()).collect();
        // A sub-folder's images come where its name sorts: before z.gif.
        assert_eq!(got, ["a.png", "b.jpg", "sub/c.webp", "sub/deeper/d.JPG", "z.gif"]);
        // Files are kept as given, in the order given.
        let given = vec![root.join("notes.txt"), root.join("a.png")];
        assert_eq!(expand(&given), given);
        // A link back up the tree is walked once.
        std::os::unix::fs::symlink(root, root.join("sub/loop")).unwrap();
        assert_eq!(expand(&[root.to_path_buf()]).len(), 5);
        let empty = root.join("sub/deeper/empty");
        std::fs::create_dir_all(&empty).unwrap();
        let e = expand_nonempty(std::slice::from_ref(&empty)).unwrap_err().to_string();
        assert!(e.contains("no images found in") && e.contains("empty"), "{e}");
    }
}
