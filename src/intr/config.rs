//! The INTR model configuration: inferred from weight names and shapes, read from the training
//! `args` a checkpoint carries, or given explicitly — and checked for contradictions between them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How token positions are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionEmbedding {
    /// DETR's fixed 2-D sine embedding (`--position_embedding sine`, alias `v2`).
    Sine,
    /// Learned row/column tables of 50 entries (`learned`, alias `v3`).
    Learned,
}

/// ResNet residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34).
    Basic,
    /// 1×1 → 3×3 → 1×1 (ResNet-50/101/152, v1.5: stride on the 3×3).
    Bottleneck,
}

/// The ResNet backbone's structure (channel widths come from the weights themselves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackboneConfig {
    pub block: BlockKind,
    /// Residual blocks in each of the four stages (R50: 3, 4, 6, 3).
    pub blocks_per_stage: Vec<usize>,
    /// Output channels of each stage (R50: 256, 512, 1024, 2048).
    pub stage_channels: Vec<usize>,
    /// Channels of the last stage, fed to `input_proj` (R50: 2048).
    pub num_channels: usize,
}

/// Everything needed to build the INTR network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntrConfig {
    /// Transformer width D.
    pub hidden_dim: usize,
    /// Attention heads (not recoverable from weights).
    pub nheads: usize,
    pub enc_layers: usize,
    pub dec_layers: usize,
    pub dim_feedforward: usize,
    /// Number of class queries = number of classes.
    pub num_queries: usize,
    pub pre_norm: bool,
    pub position_embedding: PositionEmbedding,
    /// Last ResNet stage dilated instead of strided (not recoverable from weights).
    pub dilation: bool,
    /// Third ResNet stage dilated instead of strided too (torchvision's
    /// `replace_stride_with_dilation[1]`): stride 8 with `dilation`. Not an option of the official
    /// code, which only dilates the last stage; absent from older stored configs (= false).
    #[serde(default)]
    pub dilation_stage3: bool,
    pub backbone: BackboneConfig,
}

impl IntrConfig {
    /// The official CUB configuration (R50, D=256, 8 heads, 6+6 layers, FFN 2048, post-norm, sine).
    #[must_use]
    pub fn official(num_classes: usize) -> Self {
        Self {
            hidden_dim: 256,
            nheads: 8,
            enc_layers: 6,
            dec_layers: 6,
            dim_feedforward: 2048,
            num_queries: num_classes,
            pre_norm: false,
            position_embedding: PositionEmbedding::Sine,
            dilation: false,
            dilation_stage3: false,
            backbone: BackboneConfig {
                block: BlockKind::Bottleneck,
                blocks_per_stage: vec![3, 4, 6, 3],
                stage_channels: vec![256, 512, 1024, 2048],
                num_channels: 2048,
            },
        }
    }

    /// Overall stride of the backbone: 32, halved by each dilated stage.
    #[must_use]
    pub fn stride(&self) -> usize {
        32 / self.dilated_stages().iter().map(|&d| 1 + usize::from(d)).product::<usize>()
    }

    /// Which of the four ResNet stages trade their stride for dilation.
    #[must_use]
    pub fn dilated_stages(&self) -> [bool; 4] {
        [false, false, self.dilation_stage3, self.dilation]
    }

    /// Checks internal consistency (heads divide D, at least one decoder layer, ...).
    pub fn validate(&self) -> Result<()> {
        let c = |m: String| Err(Error::Config(m));
        if self.nheads == 0 || !self.hidden_dim.is_multiple_of(self.nheads) {
            return c(format!("nheads = {} does not divide hidden_dim = {}", self.nheads, self.hidden_dim));
        }
        if self.dec_layers == 0 {
            return c("dec_layers = 0: INTR needs at least one decoder layer".into());
        }
        if self.num_queries == 0 {
            return c("num_queries = 0: the model has no classes".into());
        }
        if self.position_embedding == PositionEmbedding::Sine && !self.hidden_dim.is_multiple_of(2) {
            return c(format!("hidden_dim = {} must be even for the sine embedding", self.hidden_dim));
        }
        if self.backbone.blocks_per_stage.len() != 4 || self.backbone.blocks_per_stage.contains(&0) {
            return c(format!("the ResNet needs four non-empty stages, got {:?}", self.backbone.blocks_per_stage));
        }
        if self.backbone.stage_channels.len() != 4 {
            return c(format!("the ResNet needs four stage widths, got {:?}", self.backbone.stage_channels));
        }
        Ok(())
    }
}

/// Values given explicitly (CLI flags or a JSON config file); any subset of [`IntrConfig`]'s fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigOverrides {
    pub hidden_dim: Option<usize>,
    pub nheads: Option<usize>,
    pub enc_layers: Option<usize>,
    pub dec_layers: Option<usize>,
    pub dim_feedforward: Option<usize>,
    pub num_queries: Option<usize>,
    pub pre_norm: Option<bool>,
    pub position_embedding: Option<PositionEmbedding>,
    pub dilation: Option<bool>,
    pub dilation_stage3: Option<bool>,
}

impl From<&IntrConfig> for ConfigOverrides {
    /// Every field of a complete configuration, as explicit values.
    fn from(c: &IntrConfig) -> Self {
        Self {
            hidden_dim: Some(c.hidden_dim),
            nheads: Some(c.nheads),
            enc_layers: Some(c.enc_layers),
            dec_layers: Some(c.dec_layers),
            dim_feedforward: Some(c.dim_feedforward),
            num_queries: Some(c.num_queries),
            pre_norm: Some(c.pre_norm),
            position_embedding: Some(c.position_embedding),
            dilation: Some(c.dilation),
            dilation_stage3: Some(c.dilation_stage3),
        }
    }
}

impl ConfigOverrides {
    /// Reads a JSON file holding any subset of the fields (unknown fields are an error).
    pub fn from_json_file(path: &std::path::Path) -> Result<Self> {
        let len = std::fs::metadata(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?.len();
        if len > 1 << 20 {
            return Err(Error::file(path, "is larger than 1 MB: not a model config"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        Self::from_json_str(&text).map_err(|e| Error::file(path, e))
    }

    /// Parses the JSON of [`Self::from_json_file`]; the error is a plain description.
    pub fn from_json_str(text: &str) -> std::result::Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("not a valid model config: {e}"))
    }

    /// Fills unset fields from `other` (self wins).
    #[must_use]
    pub fn or(self, other: &ConfigOverrides) -> Self {
        Self {
            hidden_dim: self.hidden_dim.or(other.hidden_dim),
            nheads: self.nheads.or(other.nheads),
            enc_layers: self.enc_layers.or(other.enc_layers),
            dec_layers: self.dec_layers.or(other.dec_layers),
            dim_feedforward: self.dim_feedforward.or(other.dim_feedforward),
            num_queries: self.num_queries.or(other.num_queries),
            pre_norm: self.pre_norm.or(other.pre_norm),
            position_embedding: self.position_embedding.or(other.position_embedding),
            dilation: self.dilation.or(other.dilation),
            dilation_stage3: self.dilation_stage3.or(other.dilation_stage3),
        }
    }

    /// Reads the `main.py` options present in a checkpoint's pickled `args`.
    pub fn from_training_args(args: &serde_json::Map<String, serde_json::Value>) -> Result<Self> {
        let uint = |k: &str| -> Result<Option<usize>> {
            match args.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .map(Some)
                    .ok_or_else(|| Error::Config(format!("training args: `{k}` = {v} is not a count"))),
            }
        };
        let boolean = |k: &str| -> Result<Option<bool>> {
            match args.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_bool()
                    .map(Some)
                    .ok_or_else(|| Error::Config(format!("training args: `{k}` = {v} is not a flag"))),
            }
        };
        let position_embedding = match args.get("position_embedding").and_then(|v| v.as_str()) {
            None => None,
            Some("sine" | "v2") => Some(PositionEmbedding::Sine),
            Some("learned" | "v3") => Some(PositionEmbedding::Learned),
            Some(other) => return Err(Error::Config(format!("training args: unknown position_embedding `{other}`"))),
        };
        Ok(Self {
            hidden_dim: uint("hidden_dim")?,
            nheads: uint("nheads")?,
            enc_layers: uint("enc_layers")?,
            dec_layers: uint("dec_layers")?,
            dim_feedforward: uint("dim_feedforward")?,
            num_queries: uint("num_queries")?,
            pre_norm: boolean("pre_norm")?,
            position_embedding,
            dilation: boolean("dilation")?,
            // The official options have no such flag: its models never dilate the third stage.
            dilation_stage3: None,
        })
    }
}

/// What the weights themselves say about the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inferred {
    pub hidden_dim: usize,
    pub enc_layers: usize,
    pub dec_layers: usize,
    pub dim_feedforward: usize,
    pub num_queries: usize,
    pub pre_norm: bool,
    pub position_embedding: PositionEmbedding,
    pub backbone: BackboneConfig,
}

/// Infers what can be inferred from the state dict's names and shapes.
pub fn infer(shapes: &BTreeMap<String, Vec<usize>>) -> Result<Inferred> {
    let shape = |k: &str| -> Result<&Vec<usize>> {
        shapes.get(k).ok_or_else(|| {
            Error::Config(format!("weight `{k}` is missing: this does not look like an INTR state dict"))
        })
    };
    let dim = |k: &str, i: usize| -> Result<usize> {
        let s = shape(k)?;
        s.get(i).copied().ok_or_else(|| Error::Config(format!("weight `{k}` has shape {s:?}, expected rank > {i}")))
    };
    let hidden_dim = dim("input_proj.weight", 0)?;
    let num_channels = dim("input_proj.weight", 1)?;
    let num_queries = dim("query_embed.weight", 0)?;
    let count = |prefix: &str| -> usize {
        let ids: BTreeSet<usize> =
            shapes.keys().filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse().ok()).collect();
        ids.len()
    };
    let enc_layers = count("transformer.encoder.layers.");
    let dec_layers = count("transformer.decoder.layers.");
    let ffn_key = if enc_layers > 0 {
        "transformer.encoder.layers.0.linear1.weight"
    } else {
        "transformer.decoder.layers.0.linear1.weight"
    };
    let dim_feedforward = dim(ffn_key, 0)?;
    let pre_norm = shapes.contains_key("transformer.encoder.norm.weight");
    let position_embedding = if shapes.contains_key("backbone.1.row_embed.weight") {
        PositionEmbedding::Learned
    } else {
        PositionEmbedding::Sine
    };
    let mut blocks_per_stage = Vec::new();
    let mut stage_channels = Vec::new();
    let mut block = None;
    for s in 1..=4 {
        let n = count(&format!("backbone.0.body.layer{s}."));
        blocks_per_stage.push(n);
        let bottleneck = shapes.contains_key(&format!("backbone.0.body.layer{s}.0.conv3.weight"));
        let kind = if bottleneck { BlockKind::Bottleneck } else { BlockKind::Basic };
        if *block.get_or_insert(kind) != kind {
            return Err(Error::Config(format!("stage layer{s} mixes Bottleneck and BasicBlock residual blocks")));
        }
        let last_conv = if bottleneck { "conv3" } else { "conv2" };
        stage_channels.push(dim(&format!("backbone.0.body.layer{s}.0.{last_conv}.weight"), 0)?);
    }
    let block = block.unwrap_or(BlockKind::Bottleneck);
    if stage_channels.last() != Some(&num_channels) {
        return Err(Error::Config(format!(
            "input_proj expects {num_channels} channels but the last ResNet stage gives {:?}",
            stage_channels.last()
        )));
    }
    Ok(Inferred {
        hidden_dim,
        enc_layers,
        dec_layers,
        dim_feedforward,
        num_queries,
        pre_norm,
        position_embedding,
        backbone: BackboneConfig { block, blocks_per_stage, stage_channels, num_channels },
    })
}

/// Combines the inferred values with training args and explicit overrides.
///
/// Precedence for values the weights cannot tell (`nheads`, `dilation`): explicit, then the file's
/// own stored config, then training args. A value the weights fix must agree with every source that
/// gives it; a disagreement is an error naming the field and both values.
pub fn resolve(
    inferred: &Inferred,
    explicit: &ConfigOverrides,
    stored: &ConfigOverrides,
    args: &ConfigOverrides,
) -> Result<IntrConfig> {
    fn agree<T: PartialEq + std::fmt::Debug + Copy>(
        field: &str,
        weights: T,
        sources: &[(&str, Option<T>)],
    ) -> Result<T> {
        for (src, v) in sources {
            if let Some(v) = v
                && *v != weights
            {
                return Err(Error::Config(format!("`{field}` is {v:?} in the {src} but the weights say {weights:?}")));
            }
        }
        Ok(weights)
    }
    let srcs = |f: fn(&ConfigOverrides) -> Option<usize>| {
        [("explicit settings", f(explicit)), ("stored config", f(stored)), ("training args", f(args))]
    };
    let hidden_dim = agree("hidden_dim", inferred.hidden_dim, &srcs(|o| o.hidden_dim))?;
    let enc_layers = agree("enc_layers", inferred.enc_layers, &srcs(|o| o.enc_layers))?;
    let dec_layers = agree("dec_layers", inferred.dec_layers, &srcs(|o| o.dec_layers))?;
    let dim_feedforward = agree("dim_feedforward", inferred.dim_feedforward, &srcs(|o| o.dim_feedforward))?;
    let num_queries = agree("num_queries", inferred.num_queries, &srcs(|o| o.num_queries))?;
    let pre_norm = agree(
        "pre_norm",
        inferred.pre_norm,
        &[
            ("explicit settings", explicit.pre_norm),
            ("stored config", stored.pre_norm),
            ("training args", args.pre_norm),
        ],
    )?;
    let position_embedding = agree(
        "position_embedding",
        inferred.position_embedding,
        &[
            ("explicit settings", explicit.position_embedding),
            ("stored config", stored.position_embedding),
            ("training args", args.position_embedding),
        ],
    )?;
    let nheads = explicit.nheads.or(stored.nheads).or(args.nheads).ok_or_else(|| {
        Error::Config(
            "`nheads` is not stored in the file (no training args); give it with --nheads or a --config file".into(),
        )
    })?;
    let dilation = explicit.dilation.or(stored.dilation).or(args.dilation).ok_or_else(|| {
        Error::Config(
            "`dilation` is not stored in the file (no training args); give it with --dilation or a --config file"
                .into(),
        )
    })?;
    let dilation_stage3 = explicit.dilation_stage3.or(stored.dilation_stage3).or(args.dilation_stage3).unwrap_or(false);
    let cfg = IntrConfig {
        hidden_dim,
        nheads,
        enc_layers,
        dec_layers,
        dim_feedforward,
        num_queries,
        pre_norm,
        position_embedding,
        dilation,
        dilation_stage3,
        backbone: inferred.backbone.clone(),
    };
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_nested_200000_deep_is_an_error_not_a_stack_overflow() {
        for text in ["[".repeat(200_000), format!("{}1{}", "{\"a\":".repeat(200_000), "}".repeat(200_000))] {
            let e = ConfigOverrides::from_json_str(&text).unwrap_err();
            assert!(e.contains("not a valid model config"), "{e}");
            let parsed: std::result::Result<serde_json::Value, _> = serde_json::from_str(&text);
            assert!(parsed.unwrap_err().to_string().contains("recursion limit"));
        }
    }

    fn inferred() -> Inferred {
        let c = IntrConfig::official(200);
        Inferred {
            hidden_dim: 256,
            enc_layers: 6,
            dec_layers: 6,
            dim_feedforward: 2048,
            num_queries: 200,
            pre_norm: false,
            position_embedding: PositionEmbedding::Sine,
            backbone: c.backbone,
        }
    }

    #[test]
    fn stride_follows_the_dilated_stages_and_old_configs_load() {
        let mut c = IntrConfig::official(3);
        assert_eq!(c.stride(), 32);
        c.dilation = true;
        assert_eq!(c.stride(), 16);
        c.dilation_stage3 = true;
        assert_eq!(c.stride(), 8);
        // A stored config written before the field existed reads as stride 16.
        let mut json: serde_json::Value = serde_json::to_value(&c).unwrap();
        json.as_object_mut().unwrap().remove("dilation_stage3");
        let old: IntrConfig = serde_json::from_value(json).unwrap();
        assert!(!old.dilation_stage3);
        assert_eq!(old.stride(), 16);
    }

    #[test]
    fn missing_nheads_is_named() {
        let err =
            resolve(&inferred(), &ConfigOverrides::default(), &ConfigOverrides::default(), &ConfigOverrides::default())
                .unwrap_err()
                .to_string();
        assert!(err.contains("nheads"), "{err}");
    }

    #[test]
    fn contradiction_names_field_and_values() {
        let args =
            ConfigOverrides { hidden_dim: Some(512), nheads: Some(8), dilation: Some(false), ..Default::default() };
        let err = resolve(&inferred(), &ConfigOverrides::default(), &ConfigOverrides::default(), &args)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hidden_dim") && err.contains("512") && err.contains("256"), "{err}");
    }

    #[test]
    fn explicit_wins_for_values_weights_cannot_tell() {
        let args = ConfigOverrides { nheads: Some(4), dilation: Some(false), ..Default::default() };
        let explicit = ConfigOverrides { nheads: Some(8), ..Default::default() };
        let cfg = resolve(&inferred(), &explicit, &ConfigOverrides::default(), &args).unwrap();
        assert_eq!(cfg.nheads, 8);
        assert_eq!(cfg, IntrConfig::official(200));
    }

    #[test]
    fn heads_must_divide_width() {
        let explicit = ConfigOverrides { nheads: Some(7), dilation: Some(false), ..Default::default() };
        let err =
            resolve(&inferred(), &explicit, &ConfigOverrides::default(), &ConfigOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("does not divide"));
    }
}
