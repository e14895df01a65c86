//! What a figure records about how it was made: the model, class list and photo it was made from
//! (file names and SHA-256) and how it was drawn. [`super::readback`] reads it back from a file.

use std::collections::BTreeMap;
use std::path::Path;

use super::compose::View;
use crate::overlay::Look;

/// What a figure was made from, for its provenance: the model (file name and SHA-256), the SHA-256
/// of its class list and the photo (file name and SHA-256).
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub model: Option<(String, String)>,
    pub classes_sha256: String,
    pub image: String,
    pub image_sha256: String,
}

impl Source {
    /// Hashes the model file, the class list and the photo file.
    pub fn hash(model: Option<&Path>, names: &[String], image: &Path) -> anyhow::Result<Source> {
        Self::of_model(model, names)?.with_image(image)
    }

    /// The entries that do not depend on the photo: hashes the model file and the class list.
    pub fn of_model(model: Option<&Path>, names: &[String]) -> anyhow::Result<Source> {
        let model = match model {
            Some(m) => Some((file_name(m), crate::files::sha256_file(m)?)),
            None => None,
        };
        Ok(Source {
            model,
            classes_sha256: crate::files::sha256_hex(names.join("\n").as_bytes()),
            ..Default::default()
        })
    }

    /// This source with `image` as its photo (hashes the file).
    pub fn with_image(&self, image: &Path) -> anyhow::Result<Source> {
        Ok(Source { image: file_name(image), image_sha256: crate::files::sha256_file(image)?, ..self.clone() })
    }

    /// Adds the entries `app`, `model`, `model_sha256`, `classes_sha256`, `image`, `image_sha256`.
    pub fn add_to(&self, prov: &mut BTreeMap<String, String>) {
        prov.insert("app".into(), format!("intr-explorer {}", env!("CARGO_PKG_VERSION")));
        if let Some((name, sha)) = &self.model {
            prov.insert("model".into(), name.clone());
            prov.insert("model_sha256".into(), sha.clone());
        }
        prov.insert("classes_sha256".into(), self.classes_sha256.clone());
        prov.insert("image".into(), self.image.clone());
        prov.insert("image_sha256".into(), self.image_sha256.clone());
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The provenance entries describing how a figure of `view` was drawn.
#[must_use]
pub fn look_provenance(look: &Look, layer: usize, view: &View, names: &[String]) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    let name = |c: &usize| names.get(*c).cloned().unwrap_or_default();
    let heads = |hs: &[usize], mean: bool| {
        let mut v: Vec<String> = hs.iter().map(|h| (h + 1).to_string()).collect();
        if mean {
            v.push("mean".into());
        }
        v.join(",")
    };
    let (classes, heads_s) = match view {
        View::Single { class, head } => (name(class), head.map_or("mean".into(), |h| (h + 1).to_string())),
        View::Gallery { class, heads: hs, mean } => (name(class), heads(hs, *mean)),
        View::Compare { classes, heads: hs, mean } => {
            (classes.iter().map(name).collect::<Vec<_>>().join(" | "), heads(hs, *mean))
        }
        View::Contrast { first, second, heads: hs, mean } => {
            (format!("{} minus {}", name(first), name(second)), heads(hs, *mean))
        }
    };
    p.insert("view".into(), serde_json::to_string(view).unwrap_or_default());
    p.insert("class".into(), classes);
    p.insert("layer".into(), (layer + 1).to_string());
    p.insert("heads".into(), heads_s);
    p.insert("normalisation".into(), look.normalization.describe().to_string());
    p.insert("colormap".into(), look.colormap.name().to_string());
    p.insert("threshold".into(), look.threshold.to_string());
    p.insert("interpolation".into(), format!("{:?}", look.interpolation).to_lowercase());
    p.insert("opacity".into(), look.opacity.to_string());
    p.insert("official_blur".into(), look.official_blur.to_string());
    p.insert("look".into(), serde_json::to_string(look).unwrap_or_default());
    p
}
