//! The command recorded in each figure that re-makes it (`intr-explorer remake FIGURE` runs it):
//! the run's own options around the figure's view, layer and photo.

use std::path::Path;

use super::plan::Remake;
use crate::figure::View;

/// The arguments (after the program name) that re-make the figure of `view` of `file`.
#[must_use]
pub fn args(r: &Remake, file: &Path, view: &View, names: &[String], layer: usize) -> Vec<String> {
    let mut v: Vec<String> = r.head.clone();
    match view {
        View::Compare { classes, .. } => {
            v.extend(["--class".into(), "top1".into(), "--compare".into()]);
            v.push(classes.iter().map(|&c| names[c].as_str()).collect::<Vec<_>>().join(","));
        }
        View::Gallery { class, .. } | View::Single { class, .. } => v.extend(["--class".into(), names[*class].clone()]),
    }
    v.extend(["--layer".into(), (layer + 1).to_string()]);
    v.extend(r.tail.iter().cloned());
    v.push(file.display().to_string());
    // A flag (`--paper-style`) or an empty value adds nothing.
    v.retain(|s| !s.is_empty());
    v
}

/// Shell form of `args` (single-quoted where needed).
#[must_use]
pub fn shell_join(args: &[String]) -> String {
    let q = |s: &String| {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./,=:".contains(c)) {
            s.clone()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once("intr-explorer".to_string()).chain(args.iter().map(q)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_goes_between_the_runs_options_and_quotes_survive_the_shell() {
        let r = Remake { head: vec!["explain".into()], tail: vec!["--out".into(), "o".into()] };
        let names: Vec<String> = vec!["A b".into(), "C".into()];
        let v =
            args(&r, Path::new("p.jpg"), &View::Compare { classes: vec![0, 1], heads: vec![], mean: true }, &names, 1);
        assert_eq!(v, ["explain", "--class", "top1", "--compare", "A b,C", "--layer", "2", "--out", "o", "p.jpg"]);
        assert_eq!(shell_join(&["it's".to_string()]), r"intr-explorer 'it'\''s'");
    }
}
