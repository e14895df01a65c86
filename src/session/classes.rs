//! Class names: CUB `classes.txt` (`1 001.Black_footed_Albatross`), one name per line, or a dataset
//! folder whose sorted sub-folders are the classes (torchvision `ImageFolder` order); every name
//! cleaned by one rule ([`clean_name`]), and looked up by one rule ([`find`]), with suggestions.

use std::path::Path;

use crate::error::{Error, Result};

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

/// `1 001.Black_footed_Albatross` → `Black-footed Albatross`, `03_Scarlet-capped_Barwing` →
/// `Scarlet-capped Barwing`; `Painted Bunting` stays.
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
    // "001.Name" (CUB) or "01_Name" (the generated dataset's folders): drop the class number.
    if let Some((num, rest)) = s.split_once(['.', '_'])
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
    // word of such a compound is a lower-case body part or suffix after a capitalised word; join
    // those with a hyphen. Names written all in lower case (red_fox) keep their spaces.
    let mut out = String::new();
    // Whether the words so far end in a capitalised word or a compound begun by one.
    let mut chain = false;
    for (i, w) in s.split('_').filter(|w| !w.is_empty()).enumerate() {
        let lower = w.chars().next().is_some_and(char::is_lowercase);
        if i > 0 {
            out.push(if lower && chain { '-' } else { ' ' });
        }
        chain = !lower || chain;
        out.push_str(w);
    }
    out
}

/// The class folders of an ImageFolder-style `dir`, in class order: its sub-folders (links to
/// folders included, hidden ones skipped), sorted by name, as torchvision's `ImageFolder` orders
/// classes. Training labels and class names both come from this one listing.
pub fn class_folders(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::file(dir, format!("cannot list folder: {e}")))?;
    let mut folders = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::file(dir, format!("cannot list folder: {e}")))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.path().is_dir() {
            folders.push(entry.path());
        }
    }
    folders.sort();
    Ok(folders)
}

/// The class names of an ImageFolder-style `dir`: its [`class_folders`]' names, cleaned.
pub fn from_folder(dir: &Path) -> Result<Vec<String>> {
    let folders = class_folders(dir)?;
    if folders.is_empty() {
        return Err(Error::file(dir, "folder has no class sub-folders"));
    }
    Ok(folders.iter().filter_map(|f| f.file_name()).map(|n| clean_name(&n.to_string_lossy())).collect())
}

/// Checks that `names` fits a model with `classes` outputs.
pub fn check_count(path: &Path, names: &[String], classes: usize) -> Result<()> {
    if names.len() == classes {
        Ok(())
    } else {
        Err(Error::file(path, format!("has {} class names but the model has {classes} classes", names.len())))
    }
}

/// The index of the class `wanted` names: the name itself in any case, or any spelling that cleans
/// to it (`Painted_Bunting`, `016.Painted_Bunting` for `Painted Bunting`). Otherwise an error that
/// suggests the closest names.
pub fn find(names: &[String], wanted: &str) -> Result<usize> {
    let key = |s: &str| clean_name(s).to_lowercase();
    let w = key(wanted);
    let exact = wanted.trim().to_lowercase();
    // Hyphens read as spaces too ("azure capped" for "Azure-capped").
    let loose = |s: &str| key(s).replace('-', " ");
    let lw = loose(wanted);
    if let Some(i) = names
        .iter()
        .position(|n| n.to_lowercase() == exact)
        .or_else(|| names.iter().position(|n| key(n) == w))
        .or_else(|| names.iter().position(|n| loose(n) == lw))
    {
        return Ok(i);
    }
    let close = suggestions(names, &w);
    if close.is_empty() {
        return Err(Error::Request(format!("class `{wanted}` is not one of the model's {} classes", names.len())));
    }
    Err(Error::Request(format!(
        "class `{wanted}` is not one of the model's classes; did you mean {}?",
        close.join(", ")
    )))
}

/// Up to five names close to `needle` (cleaned, lower case): those containing it first, then by
/// similarity (Jaro–Winkler ≥ 0.8), best first.
fn suggestions(names: &[String], needle: &str) -> Vec<String> {
    let mut scored: Vec<(f64, &String)> = names
        .iter()
        .filter_map(|n| {
            let k = clean_name(n).to_lowercase();
            let score = if !needle.is_empty() && k.contains(needle) { 2.0 } else { strsim::jaro_winkler(&k, needle) };
            (score >= 0.8).then_some((score, n))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(5).map(|(_, n)| format!("`{n}`")).collect()
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
        assert_eq!(clean_name("182 182.Black_and_white_Warbler"), "Black-and-white Warbler");
    }

    #[test]
    fn generated_dataset_folders_lose_their_number() {
        assert_eq!(clean_name("03_Scarlet-capped_Barwing_Plaintail"), "Scarlet-capped Barwing Plaintail");
    }

    #[test]
    fn a_class_is_found_by_any_spelling_and_a_typo_gets_suggestions() {
        let names: Vec<String> =
            ["Indigo Bunting", "Painted Bunting", "Black-footed Albatross"].map(String::from).into();
        assert_eq!(find(&names, "painted bunting").ok(), Some(1));
        assert_eq!(find(&names, "Painted_Bunting").ok(), Some(1));
        assert_eq!(find(&names, "016.Painted_Bunting").ok(), Some(1));
        assert_eq!(find(&names, "Black_footed_Albatross").ok(), Some(2));
        assert_eq!(find(&names, "black footed albatross").ok(), Some(2));
        let e = find(&names, "Painted Buntin").map_err(|e| e.to_string()).unwrap_err();
        assert!(e.contains("did you mean `Painted Bunting`"), "{e}");
        let e = find(&names, "Bunting").map_err(|e| e.to_string()).unwrap_err();
        assert!(e.contains("`Indigo Bunting`") && e.contains("`Painted Bunting`"), "{e}");
        let e = find(&names, "zebra").map_err(|e| e.to_string()).unwrap_err();
        assert!(e.contains("not one of the model's 3 classes"), "{e}");
    }

    #[test]
    #[cfg(unix)]
    fn class_folders_skip_hidden_ones_and_follow_links_so_labels_and_names_agree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [".ipynb_checkpoints", "01_red_fox", "00_Grey_Wolf", "elsewhere/02_Lynx"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("notes.txt"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere/02_Lynx"), root.join("02_Lynx")).unwrap();
        let folders: Vec<String> = class_folders(root)
            .unwrap()
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(folders, ["00_Grey_Wolf", "01_red_fox", "02_Lynx", "elsewhere"]);
        assert_eq!(from_folder(root).unwrap(), ["Grey Wolf", "red fox", "Lynx", "elsewhere"]);
    }

    #[test]
    fn list_skips_blank_lines() {
        assert_eq!(parse_list("a\n\n b \n"), vec!["a", "b"]);
    }
}
