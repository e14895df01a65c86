//! The headless subcommands: predict, heads, attention, inspect, convert.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::{
    AttentionArgs, ConvertArgs, HeadNamesAction, HeadNamesArgs, HeadsArgs, InspectArgs, PartsArgs, PredictArgs,
};
use crate::checkpoint::{
    self, Checkpoint, F32Tensor, META_CLASSES, META_CONFIG, META_FORMAT, META_TRAINING, write_safetensors,
};
use crate::intr;
use crate::session::head_names::Store;
use crate::session::{Analysis, Probes, classes, inputs};

pub fn predict(a: &PredictArgs) -> Result<i32> {
    let images = inputs::expand_nonempty(&a.images)?;
    let s = super::open_session(&a.model.spec()?)?;
    let names = s.class_names();
    let options = a.model.preprocess_options();
    let model = s.model_name();
    if !a.json {
        outln!("model: {model}");
        if s.is_demo() {
            outln!(
                "  (it knows only its invented species and puts any real photo into one of them; give --model for real birds)"
            );
        }
    }
    let mut failures = 0;
    let mut results = Vec::new();
    for path in &images {
        match s.analyse(path, options, Probes::default()) {
            Ok(an) => {
                let out = &an.output;
                let probs = out.probabilities();
                let top: Vec<_> = out
                    .ranking()
                    .into_iter()
                    .take(a.top)
                    .enumerate()
                    .map(|(rank, c)| {
                        json!({"rank": rank + 1, "class": c, "name": names[c], "probability": probs[c], "logit": out.logits[c]})
                    })
                    .collect();
                if a.json {
                    results.push(json!({
                        "image": path.display().to_string(),
                        "image_size": [an.image.width, an.image.height],
                        "input_size": [an.input_size.0, an.input_size.1],
                        "grid": [out.grid.0, out.grid.1],
                        "exif_orientation_applied": an.oriented,
                        "model": model,
                        "out_of_domain": {"score": an.ood.score, "flagged": an.ood.flagged},
                        "top": top,
                    }));
                } else {
                    print_table(path, &an, &top)?;
                    if an.ood.flagged {
                        outln!(
                            "  (!) out of domain? the model cannot decide between its best classes (score {:.2} ≥ {:.2}): this photo may be outside what it knows",
                            an.ood.score,
                            crate::probe::ood::THRESHOLD
                        );
                    }
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&results)?);
    }
    if a.report_peak_rss
        && let Some(b) = super::output::peak_rss_bytes()
    {
        eprintln!("peak RSS: {:.1} MB", b as f64 / 1e6);
    }
    Ok(i32::from(failures > 0))
}

fn print_table(path: &Path, an: &Analysis, top: &[serde_json::Value]) -> Result<()> {
    outln!(
        "{}  ({}×{} → {}×{}, grid {}×{})",
        path.display(),
        an.image.width,
        an.image.height,
        an.input_size.0,
        an.input_size.1,
        an.output.grid.0,
        an.output.grid.1
    );
    let width = top.iter().filter_map(|t| t["name"].as_str()).map(|n| n.chars().count()).max().unwrap_or(0);
    for t in top {
        outln!(
            "  {:>3}. {:<width$}  {:>7.3}%  logit {:>8.4}",
            t["rank"],
            t["name"].as_str().unwrap_or(""),
            t["probability"].as_f64().unwrap_or(0.0) * 100.0,
            t["logit"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}

/// `parts`: the head × part table of the annotated folder; exit code 1 if any photo failed.
pub fn parts(a: &PartsArgs) -> Result<i32> {
    use crate::batch::parts;
    let mut data = parts::load(&a.data)?;
    if let Some(n) = a.limit {
        data.items.truncate(n);
    }
    let s = super::open_session(&a.model.spec()?)?;
    let pb = indicatif::ProgressBar::new(data.items.len() as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("scoring {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = parts::score(&s, &data, a.radius.map(f64::from), a.model.preprocess_options(), |k, _| {
        pb.set_position(k as u64);
        true
    })?;
    pb.finish_and_clear();
    for (p, e) in &report.failed {
        eprintln!("error: {}: {e}", p.display());
    }
    if let Some(f) = &a.figure {
        let format = crate::figure::Format::from_path(f)
            .ok_or_else(|| anyhow::anyhow!("--figure {}: name it .svg, .pdf or .png", f.display()))?;
        crate::figure::write(&report.figure(&s.model_name()), f, format, 150.0)?;
        eprintln!("wrote {}", f.display());
    }
    if a.take_names {
        let sha = s.model_sha256()?;
        let store = crate::session::head_names::Store::default();
        let mut names = s.head_names().unwrap_or_default();
        let changes = report.take_names(&mut names);
        store.save(&sha, &names)?;
        if changes.is_empty() {
            eprintln!("the head names of {} already were the suggested ones", s.model_name());
        } else {
            eprintln!("head names of {} (for every class): {}", s.model_name(), changes.join(", "));
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} · {} photos ({}) · layer {} · {}",
            s.model_name(),
            report.all.photos,
            report.format,
            report.layer,
            match report.radius {
                Some(r) => format!("hit rate: a keypoint within {r:.0} px of the head's peak"),
                None => "hit rate: the head's peak inside the part's mask".to_string(),
            }
        );
        print!("{}", report.table());
    }
    Ok(i32::from(!report.failed.is_empty()))
}

pub fn heads(a: &HeadsArgs) -> Result<()> {
    let s = super::open_session(&a.model.spec()?)?;
    let an = s.analyse(&a.image, a.model.preprocess_options(), Probes { evening: true })?;
    let class = match &a.class {
        Some(name) => s.class_index(name)?,
        None => an.output.ranking()[0],
    };
    let ranking = s.rank_heads(&an, class)?;
    let names = s.class_names();
    let head_names = s.head_names().unwrap_or_default();
    let ranked = ranking.ranked();
    if a.json {
        let heads: Vec<_> = ranked
            .iter()
            .map(|r| {
                json!({"rank": r.rank, "head": r.head + 1, "name": head_names.name(&names[class], r.head),
                       "probability_before": r.before, "probability_after": r.after})
            })
            .collect();
        let order: Vec<_> = ranking
            .steps
            .iter()
            .enumerate()
            .map(
                |(i, st)| json!({"step": i + 1, "head": st.head + 1, "probability": st.probability, "logit": st.logit}),
            )
            .collect();
        let v = json!({
            "image": a.image.display().to_string(),
            "model": s.model_name(),
            "layer": an.output.layers,
            "class": class,
            "name": names[class],
            "probability": ranking.probability,
            "heads": heads,
            "evening_order": order,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!("model: {}", s.model_name());
    if s.is_demo() {
        outln!("  (it knows only its invented species; give --model for real birds)");
    }
    outln!("{}: {} ({:.1} %)", a.image.display(), names[class], ranking.probability * 100.0);
    if an.ood.flagged {
        outln!(
            "  (!) out of domain? the model cannot decide between its best classes (score {:.2}): this photo may be \
             outside what it knows",
            an.ood.score
        );
    }
    outln!(
        "heads of layer {} ranked by what the decision rests on (greedy evening: each step evens the head the \
         class needs least; the last evened ranks first)",
        an.output.layers
    );
    outln!("  rank  head  the class's probability once this head and those ranked below it are evened");
    for r in &ranked {
        let name = head_names.name(&names[class], r.head).map(|n| format!("  {n}")).unwrap_or_default();
        outln!(
            "  {:>4}  {:>4}  {:>7.2} %   (before this head: {:.2} %){name}",
            r.rank,
            r.head + 1,
            r.after * 100.0,
            r.before * 100.0
        );
    }
    let curve: Vec<String> = ranking.curve().iter().map(|p| format!("{:.1}", p * 100.0)).collect();
    outln!("  probability as heads are evened, %: {}", curve.join(" → "));
    Ok(())
}

pub fn head_names(a: &HeadNamesArgs) -> Result<()> {
    let s = super::open_session(&a.model.spec()?)?;
    let sha = s.model_sha256()?;
    let store = Store::default();
    let mut names = store.load(&sha);
    let head = |h: usize| s.head_indices(&[h]).map(|v| v[0]);
    let class = |c: &Option<String>| -> Result<Option<String>> {
        Ok(match c {
            Some(c) => Some(s.class_names()[s.class_index(c)?].clone()),
            None => None,
        })
    };
    let scope = |c: &Option<String>| c.as_ref().map_or(String::new(), |c| format!(" for {c}"));
    match &a.action {
        HeadNamesAction::List => {}
        HeadNamesAction::Set { head: h, name, class: c } => {
            if name.trim().is_empty() {
                return Err(crate::Error::Request(format!(
                    "an empty name: to remove head {h}'s name, use `intr-explorer head-names clear {h}`"
                ))
                .into());
            }
            names.set(class(c)?.as_deref(), head(*h)?, name);
            store.save(&sha, &names)?;
            eprintln!("head {h}{} is now called {}", scope(c), name.trim());
        }
        HeadNamesAction::Clear { head: h, class: c } => {
            let before = names.clone();
            names.set(class(c)?.as_deref(), head(*h)?, "");
            if names == before {
                eprintln!("head {h}{} had no name", scope(c));
            } else {
                store.save(&sha, &names)?;
                eprintln!("cleared head {h}'s name{}", scope(c));
            }
        }
        HeadNamesAction::Export { file } => {
            store.export(&sha, file)?;
            eprintln!("wrote {}", file.display());
            return Ok(());
        }
        HeadNamesAction::Import { file } => {
            names = store.import(&sha, s.config().nheads, file)?;
            let n = names.heads.len() + names.classes.values().map(std::collections::BTreeMap::len).sum::<usize>();
            eprintln!("imported {n} head name(s) from {}", file.display());
        }
    }
    outln!("model: {} (SHA-256 {}…)", s.model_name(), &sha[..12]);
    if names.is_empty() {
        outln!("no head is named yet: `intr-explorer head-names set 3 crown` names head 3");
    }
    for (h, n) in &names.heads {
        outln!("  head {h}: {n}");
    }
    for (c, m) in &names.classes {
        for (h, n) in m {
            outln!("  head {h} for {c}: {n}");
        }
    }
    outln!("kept in {}", store.path.display());
    Ok(())
}

pub fn attention(a: &AttentionArgs) -> Result<()> {
    let s = super::open_session(&a.model.spec()?)?;
    let an = s.analyse(&a.image, a.model.preprocess_options(), Probes::default())?;
    let out = &an.output;
    let (gh, gw) = out.grid;
    let (l, h, q) = (out.layers, out.heads, out.classes);
    let mut mean = Vec::with_capacity(l * q * gh * gw);
    for layer in 0..l {
        for c in 0..q {
            mean.extend(out.head_mean(layer, c));
        }
    }
    let tensors = vec![
        F32Tensor::new("logits", vec![q], &out.logits),
        F32Tensor::new("probabilities", vec![q], &out.probabilities()),
        F32Tensor::new("attention", vec![l, h, q, gh, gw], &out.attention),
        F32Tensor::new("head_mean", vec![l, q, gh, gw], &mean),
    ];
    let mapping = an.mapping;
    let mut meta = HashMap::new();
    meta.insert(META_FORMAT.to_string(), "intr-explorer attention v1".to_string());
    meta.insert("image".into(), a.image.display().to_string());
    meta.insert("model".into(), s.path().display().to_string());
    meta.insert("classes".into(), serde_json::to_string(s.class_names().as_slice())?);
    meta.insert("image_size".into(), json!([an.image.width, an.image.height]).to_string());
    meta.insert("input_size".into(), json!([an.input_size.0, an.input_size.1]).to_string());
    meta.insert("grid".into(), json!([gh, gw]).to_string());
    meta.insert("stride".into(), mapping.stride.to_string());
    meta.insert(
        "grid_placement".into(),
        "cell (i, j) reads the input around pixel (stride·j, stride·i): its features are centred there".into(),
    );
    meta.insert("exif_orientation_applied".into(), an.oriented.to_string());
    meta.insert(
        "layout".into(),
        "attention: (layers, heads, classes, h, w); head_mean: (layers, classes, h, w)".into(),
    );
    meta.insert(META_CONFIG.into(), serde_json::to_string(s.config())?);
    write_safetensors(&a.out, &tensors, meta)?;
    eprintln!("wrote {} ({l} layers × {h} heads × {q} classes × {gh}×{gw})", a.out.display());
    Ok(())
}

pub fn inspect(a: &InspectArgs) -> Result<()> {
    let ckpt = Checkpoint::open(&a.model)?;
    let cfg = intr::resolve_config(&ckpt, &a.config.overrides()?);
    // Parameters as the official `n_parameters` counts them: frozen batch norm holds only buffers.
    let is_buffer = |k: &str| {
        let frozen_bn = k.starts_with("backbone.0.") && (k.contains(".bn") || k.contains(".downsample.1."));
        frozen_bn || k.ends_with("num_batches_tracked")
    };
    let params: usize = ckpt.tensors().iter().filter(|(k, _)| !is_buffer(k)).map(|(_, t)| t.numel()).sum();
    let ex = ckpt.extras();
    let names = ckpt.stored_class_names()?;
    let report = json!({
        "file": a.model.display().to_string(),
        "format": format!("{:?}", ckpt.format()),
        "tensors": ckpt.tensors().len(),
        "parameters": params,
        "config": cfg.as_ref().ok(),
        "config_error": cfg.as_ref().err().map(ToString::to_string),
        "classes": cfg.as_ref().ok().map(|c| c.num_queries),
        "class_names": names,
        "epoch": ex.epoch,
        "top_level_keys": ex.top_level_keys,
        "optimizer_tensors_skipped": ex.optimizer_tensors,
        "training_args": ex.args,
        "metadata": ex
            .metadata
            .iter()
            .filter(|(k, _)| ![META_CONFIG, META_CLASSES, META_TRAINING].contains(&k.as_str()))
            .collect::<HashMap<_, _>>(),
    });
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    outln!("file        {}", a.model.display());
    outln!(
        "format      {:?}, {} model tensors, {:.2} M parameters",
        ckpt.format(),
        ckpt.tensors().len(),
        params as f64 / 1e6
    );
    match &cfg {
        Ok(c) => {
            outln!("classes     {}", c.num_queries);
            outln!(
                "transformer D={} heads={} encoder={} decoder={} ffn={} {} {} position embedding",
                c.hidden_dim,
                c.nheads,
                c.enc_layers,
                c.dec_layers,
                c.dim_feedforward,
                if c.pre_norm { "pre-norm" } else { "post-norm" },
                if c.position_embedding == intr::config::PositionEmbedding::Sine { "sine" } else { "learned" }
            );
            outln!(
                "backbone    ResNet {:?} blocks {:?}, channels {:?}, stride {}{}",
                c.backbone.block,
                c.backbone.blocks_per_stage,
                c.backbone.stage_channels,
                c.stride(),
                match (c.dilation_stage3, c.dilation) {
                    (true, true) => " (stages 3 and 4 dilated)",
                    (true, false) => " (stage 3 dilated)",
                    (false, true) => " (dilated)",
                    (false, false) => "",
                }
            );
        }
        Err(e) => outln!("config      incomplete: {e}"),
    }
    if let Some(n) = &names {
        outln!(
            "class names stored ({}): {}{}",
            n.len(),
            n.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
            if n.len() > 3 { ", …" } else { "" }
        );
    }
    if !ex.top_level_keys.is_empty() {
        outln!("contents    {}", ex.top_level_keys.join(", "));
    }
    if let Some(e) = ex.epoch {
        outln!("epoch       {e}");
    }
    if ex.optimizer_tensors > 0 {
        outln!("optimizer   {} state tensors (not loaded)", ex.optimizer_tensors);
    }
    if let Some(args) = &ex.args {
        outln!("training args:");
        for (k, v) in args {
            outln!("  {k} = {v}");
        }
    }
    Ok(())
}

pub fn convert(a: &ConvertArgs) -> Result<()> {
    let ckpt = Checkpoint::open(&a.input)?;
    let cfg = intr::resolve_config(&ckpt, &a.config.overrides()?)?;
    // Building the model proves every weight is present, shaped right and used.
    let ws = intr::weights::WeightStore::new(&ckpt);
    intr::Intr::load(&ws, &cfg, &candle_core::Device::Cpu)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.input.display()))?;
    drop(ws);
    let names = match &a.classes {
        Some(p) => Some(classes::load(p)?),
        None => ckpt.stored_class_names()?,
    };
    if let Some(n) = &names {
        classes::check_count(a.classes.as_deref().unwrap_or(&a.input), n, cfg.num_queries)?;
    }
    let mut meta = HashMap::new();
    if let Some(e) = ckpt.extras().epoch {
        meta.insert("epoch".into(), e.to_string());
    }
    meta.insert("source".into(), a.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let mut tensors = Vec::new();
    for (name, info) in ckpt.tensors() {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        tensors.push(F32Tensor::new(name, info.shape.clone(), &ckpt.read_f32(name)?));
    }
    checkpoint::write_model(&a.output, &tensors, &cfg, names.as_deref(), meta)?;
    let bytes = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    eprintln!("wrote {} ({} tensors, {:.1} MB)", a.output.display(), tensors.len(), bytes as f64 / 1e6);
    Ok(())
}
