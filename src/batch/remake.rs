//! The command recorded in each figure that re-makes it (`intr-explorer remake FIGURE` runs it):
//! the run's own options ([`Recipe`]) around the figure's view, layer and photo. Figures exported
//! from the window record one too.

use std::path::{Path, PathBuf};

use super::plan::Remake;
use crate::figure::{Format, View};
use crate::overlay::Look;

/// Everything of a run that a re-made figure must repeat, as plain data: how the model and photos
/// are read and how figures are drawn. [`Recipe::remake`] spells it as `explain` arguments.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub model: PathBuf,
    pub classes: Option<PathBuf>,
    pub nheads: Option<usize>,
    pub dilation: Option<bool>,
    pub config: Option<PathBuf>,
    pub no_exif_orientation: bool,
    /// `all` or a 1-based list, as given.
    pub heads: String,
    pub look: Look,
    pub format: Format,
    pub dpi: f32,
    pub panel_width: Option<u32>,
    /// As given, e.g. `0.05mm`.
    pub scale: Option<String>,
    pub title: Option<String>,
    pub caption: Option<String>,
    /// As given, e.g. `180mm`.
    pub width: Option<String>,
    pub photo_panel: bool,
    pub labels: bool,
    pub letters: bool,
    pub out: PathBuf,
}

/// The command-line spelling of an option's value.
fn value_name(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

impl Recipe {
    /// The `explain` arguments around a figure's view (see [`args`]).
    #[must_use]
    pub fn remake(&self) -> Remake {
        let mut head: Vec<String> = vec!["explain".into(), "--model".into(), self.model.display().to_string()];
        if let Some(c) = &self.classes {
            head.extend(["--classes".into(), c.display().to_string()]);
        }
        // How the model and photos are read, so that a re-made figure reads them the same way.
        if let Some(n) = self.nheads {
            head.extend(["--nheads".into(), n.to_string()]);
        }
        if let Some(d) = self.dilation {
            head.extend(["--dilation".into(), d.to_string()]);
        }
        if let Some(f) = &self.config {
            head.extend(["--config".into(), f.display().to_string()]);
        }
        if self.no_exif_orientation {
            head.push("--no-exif-orientation".into());
        }
        let mut tail: Vec<String> = Vec::new();
        let mut push = |k: &str, v: String| tail.extend([k.to_string(), v]);
        push("--heads", self.heads.clone());
        let l = &self.look;
        if *l == Look::paper_style() {
            push("--paper-style", String::new());
        } else {
            push("--colormap", value_name(&l.colormap));
            push("--normalisation", value_name(&l.normalization));
            push("--interpolation", value_name(&l.interpolation));
            push("--opacity", l.opacity.to_string());
            push("--threshold", l.threshold.to_string());
            if l.official_blur {
                push("--official-blur", String::new());
            }
        }
        push("--format", self.format.extension().to_string());
        push("--dpi", self.dpi.to_string());
        if let Some(w) = self.panel_width {
            push("--panel-width", w.to_string());
        }
        if let Some(sc) = &self.scale {
            push("--scale", sc.clone());
        }
        if let Some(t) = self.title.as_ref().filter(|t| !t.is_empty()) {
            push("--title", t.clone());
        }
        if let Some(c) = self.caption.as_ref().filter(|c| !c.is_empty()) {
            push("--caption", c.clone());
        }
        if let Some(w) = &self.width {
            push("--width", w.clone());
        }
        if self.photo_panel {
            push("--photo-panel", String::new());
        }
        if !self.labels {
            push("--no-labels", String::new());
        }
        if !self.letters {
            push("--no-letters", String::new());
        }
        push("--out", self.out.display().to_string());
        Remake { head, tail }
    }
}

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
        View::Contrast { first, second, .. } => {
            v.extend(["--class".into(), names[*first].clone(), "--contrast".into(), names[*second].clone()]);
        }
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
