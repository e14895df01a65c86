//! `explain`'s plan, checked once before any work: which photos (this shard's), which classes,
//! layer and heads (against the model), how figures look and where they go. Every bad value is
//! one error naming its flag, before any forward pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::figure::Format;
use crate::overlay::Look;
use crate::session::Session;

/// `--shard K/N`: photos K, K+N, K+2N… (1-based) of the sorted list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: usize,
    pub n: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (k, n) = s.split_once('/').ok_or("expected K/N, e.g. 2/8")?;
        let k: usize = k.trim().parse().map_err(|_| "K is not a number")?;
        let n: usize = n.trim().parse().map_err(|_| "N is not a number")?;
        if n == 0 || k == 0 || k > n {
            return Err("need 1 ≤ K ≤ N".into());
        }
        Ok(Self { k, n })
    }
}

impl Shard {
    /// The whole list.
    pub const ALL: Shard = Shard { k: 1, n: 1 };

    /// Whether photo `i` (0-based) of the list belongs to this shard.
    #[must_use]
    pub fn takes(self, i: usize) -> bool {
        i % self.n == self.k - 1
    }
}

/// `--scale 0.05mm`: the physical size of one photo pixel. Keeps the text as given, for the
/// command recorded in figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    pub per_pixel: f64,
    /// "mm", "µm" or "cm".
    pub unit: String,
    text: String,
}

impl FromStr for Scale {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let v: f64 = num.parse().map_err(|_| "expected a number and a unit, e.g. 0.05mm")?;
        let unit = match unit.trim() {
            "mm" => "mm",
            "µm" | "um" | "μm" => "µm",
            "cm" => "cm",
            other => return Err(format!("unit `{other}` is not one of mm, µm (um), cm")),
        };
        if !(v.is_finite() && v > 0.0) {
            return Err("the size of a pixel must be positive".into());
        }
        Ok(Self { per_pixel: v, unit: unit.to_string(), text: s.to_string() })
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `--width 180mm`: a printed width (mm, cm or in), kept as given for the recorded command.
#[derive(Debug, Clone, PartialEq)]
pub struct Width {
    pub mm: f32,
    text: String,
}

impl FromStr for Width {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let v: f32 = num.parse().map_err(|_| "expected a number and a unit, e.g. 180mm")?;
        let mm = match unit.trim() {
            "mm" => v,
            "cm" => v * 10.0,
            "in" => v * 25.4,
            other => return Err(format!("unit `{other}` is not one of mm, cm, in")),
        };
        if !(mm.is_finite() && (10.0..=2000.0).contains(&mm)) {
            return Err("the width must be from 10 mm to 2 m".into());
        }
        Ok(Self { mm, text: s.to_string() })
    }
}

impl fmt::Display for Width {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `--heads all` or `--heads 1,4` (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heads {
    /// `None` = all.
    pub list: Option<Vec<usize>>,
    text: String,
}

impl FromStr for Heads {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.trim() == "all" {
            return Ok(Self { list: None, text: s.to_string() });
        }
        let list = s
            .split(',')
            .map(|h| match h.trim().parse::<usize>() {
                Ok(v) if v >= 1 => Ok(v),
                _ => Err(format!("`{h}` is not a head number (1, 2, …) or `all`")),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self { list: Some(list), text: s.to_string() })
    }
}

impl fmt::Display for Heads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Which classes each photo's figures show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassPick {
    /// The photo's `n` best classes, one figure each.
    Top(usize),
    /// One class, by index.
    One(usize),
}

/// Which class each explained class is contrasted with (`--contrast`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContrastPick {
    /// The photo's best class other than the explained one: its closest look-alike.
    RunnerUp,
    /// One class, by index.
    Class(usize),
}

/// How the figures look and where they go: what needs no check against the model.
#[derive(Debug, Clone)]
pub struct Output {
    pub look: Look,
    pub format: Format,
    /// PNG resolution.
    pub dpi: f32,
    /// Panel width in pixels (`None`: the photo's width, at most 480).
    pub panel_width: Option<u32>,
    pub scale: Option<Scale>,
    pub title: Option<String>,
    pub caption: Option<String>,
    /// The output folder.
    pub out: PathBuf,
    /// Redo photos whose outputs exist.
    pub force: bool,
    /// The plain photo as the first panel of each class's figure.
    pub photo_panel: bool,
    /// The printed width in millimetres (`None`: natural, at most a journal page).
    pub width_mm: Option<f32>,
    /// Class, probability, layer and head labels; panel letters.
    pub labels: bool,
    pub letters: bool,
    /// The command that re-makes a figure, around its view (see [`Remake`]).
    pub remake: Remake,
}

/// What was asked for, typed but not yet checked against the model.
#[derive(Debug, Clone)]
pub struct Request {
    /// `top1`, `top3` or a class name.
    pub class: String,
    /// 1-based decoder layer; `None` = the last.
    pub layer: Option<usize>,
    pub heads: Heads,
    /// Classes of a comparison figure, by name.
    pub compare: Vec<String>,
    /// `runner-up` or a class name: a contrast figure of each explained class against it.
    pub contrast: Option<String>,
    /// One specimen sheet per explained class over all the photos.
    pub sheet: bool,
    pub shard: Shard,
    pub output: Output,
}

/// The command recorded in each figure to re-make it: `head` (`explain --model M …`), then the
/// figure's own `--class`/`--compare` and `--layer`, then `tail` (heads, look, format, `--out`),
/// then the photo.
#[derive(Debug, Clone, Default)]
pub struct Remake {
    pub head: Vec<String>,
    pub tail: Vec<String>,
}

/// A checked plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Every photo of the run (all shards), in order.
    pub files: Vec<PathBuf>,
    /// Output stems of `files`, unique over the whole list.
    pub stems: Vec<String>,
    /// Indices into `files` of this shard's photos.
    pub mine: Vec<usize>,
    pub classes: ClassPick,
    /// 0-based.
    pub layer: usize,
    /// 0-based.
    pub heads: Vec<usize>,
    /// 0-based classes of the comparison figure (none: no comparison).
    pub compare: Vec<usize>,
    /// The contrast figure of each explained class, if asked for.
    pub contrast: Option<ContrastPick>,
    /// Specimen sheets: one per explained class, its rows the photos that explain it.
    pub sheet: bool,
    pub output: Output,
    /// The model's name, as the figures and summaries give it.
    pub model: String,
    /// The names given to the model's heads (figures, summaries).
    pub head_names: crate::session::head_names::HeadNames,
}

impl Plan {
    /// Checks `r` against the session's model and class names. `files` are the run's photos
    /// ([`crate::session::inputs::expand_nonempty`]). No photo is read.
    pub fn new(r: Request, files: Vec<PathBuf>, s: &Session) -> Result<Self> {
        fn flag<'a>(f: &'a str, v: &'a dyn fmt::Display) -> impl Fn(Error) -> Error + 'a {
            move |e| Error::Request(format!("--{f} {v}: {e}"))
        }
        let classes = match r.class.as_str() {
            "top1" => ClassPick::Top(1),
            "top3" => ClassPick::Top(3),
            name => ClassPick::One(s.class_index(name).map_err(flag("class", &name))?),
        };
        let layer = match r.layer {
            Some(l) => s.layer_index(Some(l)).map_err(flag("layer", &l))?,
            None => s.layer_index(None)?,
        };
        let heads = match &r.heads.list {
            None => (0..s.config().nheads).collect(),
            Some(list) => s.head_indices(list).map_err(flag("heads", &r.heads))?,
        };
        let compare =
            r.compare.iter().map(|c| s.class_index(c).map_err(flag("compare", c))).collect::<Result<Vec<_>>>()?;
        let contrast = match r.contrast.as_deref() {
            None => None,
            Some("runner-up") => Some(ContrastPick::RunnerUp),
            Some(name) => Some(ContrastPick::Class(s.class_index(name).map_err(flag("contrast", &name))?)),
        };
        if r.sheet && r.shard != Shard::ALL {
            return Err(Error::Request(format!(
                "--sheet --shard {}/{}: a sheet shows every photo of the run, so it cannot be split into shards",
                r.shard.k, r.shard.n
            )));
        }
        let stems = stems(&files);
        let mine = (0..files.len()).filter(|&i| r.shard.takes(i)).collect();
        // Head names are a nicety: a model that cannot be hashed, or a damaged store, has none.
        let head_names = s.head_names().unwrap_or_default();
        Ok(Self {
            files,
            stems,
            mine,
            classes,
            layer,
            heads,
            compare,
            contrast,
            sheet: r.sheet,
            output: r.output,
            model: s.model_name(),
            head_names,
        })
    }
}

impl Plan {
    /// Everything that decides a photo's figures and record, as one comparable string: the model,
    /// class list and photo (their SHA-256, from `source`) and every option that shows (class pick,
    /// layer, heads, comparison, look, format, resolution, panel width, scale, title, caption).
    #[must_use]
    pub fn fingerprint(&self, source: &crate::figure::Source) -> String {
        let o = &self.output;
        serde_json::json!({
            "model": source.model.as_ref().map(|(_, sha)| sha),
            "classes": source.classes_sha256,
            "image": source.image_sha256,
            "class": format!("{:?}", self.classes),
            "layer": self.layer,
            "heads": self.heads,
            "head_names": self.head_names,
            "compare": self.compare,
            "contrast": format!("{:?}", self.contrast),
            "look": o.look,
            "format": o.format,
            "dpi": o.dpi,
            "panel_width": o.panel_width,
            "scale": o.scale.as_ref().map(ToString::to_string),
            "title": o.title,
            "caption": o.caption,
            "photo_panel": o.photo_panel,
            "width_mm": o.width_mm,
            "labels": o.labels,
            "letters": o.letters,
        })
        .to_string()
    }
}

/// Output stems: the file stem, made unique over the whole (unsharded) list by a numeric suffix
/// (`x`, `x-2`, …, skipping any suffix another photo's own stem already takes).
#[must_use]
pub fn stems(files: &[PathBuf]) -> Vec<String> {
    let plain: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_stem()
                .map(|s| {
                    s.to_string_lossy()
                        .chars()
                        .map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '_' })
                        .collect()
                })
                .unwrap_or_else(|| "image".into())
        })
        .collect();
    let own: BTreeSet<&String> = plain.iter().collect();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut next: BTreeMap<&String, usize> = BTreeMap::new();
    plain
        .iter()
        .map(|stem| {
            if taken.insert(stem.clone()) {
                return stem.clone();
            }
            let n = next.entry(stem).or_insert(1);
            loop {
                *n += 1;
                let candidate = format!("{stem}-{n}");
                if !own.contains(&candidate) && taken.insert(candidate.clone()) {
                    return candidate;
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_scales_and_heads_parse_or_say_why_not() {
        assert_eq!("2/8".parse::<Shard>(), Ok(Shard { k: 2, n: 8 }));
        for bad in ["0/3", "4/3", "1/0", "x/3", "3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let s: Scale = "12um".parse().unwrap();
        assert_eq!((s.per_pixel, s.unit.as_str(), s.to_string().as_str()), (12.0, "µm", "12um"));
        assert!("0mm".parse::<Scale>().is_err() && "5 furlongs".parse::<Scale>().is_err());
        assert_eq!("1,4".parse::<Heads>().map(|h| h.list), Ok(Some(vec![1, 4])));
        assert_eq!("all".parse::<Heads>().map(|h| h.list), Ok(None));
        assert!("0".parse::<Heads>().is_err() && "1,x".parse::<Heads>().is_err());
    }

    #[test]
    fn stems_are_unique_over_the_whole_list() {
        let files: Vec<PathBuf> = ["a/x.jpg", "b/x.png", "c/y z.jpg"].iter().map(PathBuf::from).collect();
        assert_eq!(stems(&files), ["x", "x-2", "y_z"]);
        // A photo whose own stem is another's suffixed name keeps it; the duplicate moves on.
        let files: Vec<PathBuf> = ["a/x.jpg", "b/x.jpg", "x-2.jpg"].iter().map(PathBuf::from).collect();
        assert_eq!(stems(&files), ["x", "x-3", "x-2"]);
    }
}
