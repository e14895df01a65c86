//! Class names: CUB `classes.txt` (`1 001.Black_footed_Albatross`), one name per line, or a dataset
//! folder whose sorted sub-folders are the classes (torchvision `ImageFolder` order).

use std::path::Path;

use crate::model::{Error, Result};

/// Reads class names from a file or an ImageFolder-style directory.
pub fn load(path: &Path) -> Result<Vec<String>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::file(path, format!("cannot open class list: {e}")))?;
    if meta.is_dir() {
        return from_folder(path);
    }
    if meta.len() > 16 << 20 {
        return Err(Error::file(path, "class list is larger than 16 MB; is this the right file?"));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read class list: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| Error::file(path, "class list is not UTF-8 text"))?;
    let names = parse_list(&text);
    if names.is_empty() {
        return Err(Error::file(path, "class list is empty"));
    }
    Ok(names)
}

/// Parses a list: blank lines are skipped; a leading integer index is dropped; a CUB-style
/// `NNN.` prefix is dropped and underscores become spaces, then `Black footed` style pairs keep
/// CUB's hyphenation (`Black-footed`).
#[must_use]
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(clean_name).collect()
}

/// `1 001.Black_footed_Albatross` → `Black-footed Albatross`; `Painted Bunting` stays.
#[must_use]
pub fn clean_name(line: &str) -> String {
    let mut s = line.trim();
    // "1 001.Name": drop the running index.
    if let Some((first, rest)) = s.split_once(char::is_whitespace)
        && first.chars().all(|c| c.is_ascii_digit())
        && !rest.trim().is_empty()
    {
        s = rest.trim();
    }
    // "001.Name": drop the CUB class number.
    if let Some((num, rest)) = s.split_once('.')
        && !num.is_empty()
        && num.chars().all(|c| c.is_ascii_digit())
        && !rest.is_empty()
    {
        s = rest;
    }
    if !s.contains('_') {
        return s.to_string();
    }
    // CUB writes compound adjectives with underscores too: Black_footed, Groove_billed. The second
    // word of such a compound is a lower-case body part or suffix; join those with a hyphen.
    let words: Vec<&str> = s.split('_').filter(|w| !w.is_empty()).collect();
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            let lower = w.chars().next().is_some_and(char::is_lowercase);
            out.push(if lower { '-' } else { ' ' });
        }
        out.push_str(w);
    }
    out
}

/// Sorted sub-folder names of `dir` (hidden entries skipped), as `ImageFolder` orders classes.
pub fn from_folder(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::file(dir, format!("cannot list folder: {e}")))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::file(dir, format!("cannot list folder: {e}")))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_dir && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(Error::file(dir, "folder has no class sub-folders"));
    }
    Ok(names.iter().map(|n| clean_name(n)).collect())
}

/// Checks that `names` fits a model with `classes` outputs.
pub fn check_count(path: &Path, names: &[String], classes: usize) -> Result<()> {
    if names.len() == classes {
        Ok(())
    } else {
        Err(Error::file(path, format!("has {} class names but the model has {classes} classes", names.len())))
    }
}

/// Placeholder names `class 0` … used when no list is given.
#[must_use]
pub fn numbered(classes: usize) -> Vec<String> {
    (0..classes).map(|i| format!("class {i}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cub_lines_become_readable_names() {
        assert_eq!(clean_name("1 001.Black_footed_Albatross"), "Black-footed Albatross");
        assert_eq!(clean_name("16 016.Painted_Bunting"), "Painted Bunting");
        assert_eq!(clean_name("4 004.Groove_billed_Ani"), "Groove-billed Ani");
        assert_eq!(clean_name("Painted Bunting"), "Painted Bunting");
        assert_eq!(clean_name("200 200.Common_Yellowthroat"), "Common Yellowthroat");
    }

    #[test]
    fn list_skips_blank_lines() {
        assert_eq!(parse_list("a\n\n b \n"), vec!["a", "b"]);
    }
}
