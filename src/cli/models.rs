//! `models` and `download`: the catalogue of official checkpoints, what is in the Hugging Face
//! cache, and downloads into it with a progress bar.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use clap::Args;

use crate::hub::{self, HubEnv, Source, catalogue};

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// A catalogued model (`cub`, `birds-525`, `butterfly`), or a Hub repository (`ORG/NAME`)
    /// followed by a file in it.
    #[arg(value_name = "NAME | REPO FILE", num_args = 1..=2, required = true)]
    pub what: Vec<String>,
}

/// `intr-explorer models`: the catalogue, and where each model is if it has been downloaded.
pub fn models() -> Result<i32> {
    let env = HubEnv::from_env();
    outln!("Official INTR checkpoints (Hub repository {}):", catalogue::OFFICIAL_REPO);
    for e in &catalogue::CATALOGUE {
        outln!();
        outln!(
            "  {:<10} {} classes · top-1 {:.1} %, top-5 {:.1} % · {:.0} MB · trained on {}",
            e.name,
            e.classes,
            e.acc1,
            e.acc5,
            e.bytes as f64 / 1e6,
            e.dataset
        );
        outln!("             dataset: {}", e.dataset_url);
        match crate::hub::names::remembered(e.sha256).filter(|_| e.bundled_names().is_none()) {
            Some(list) => outln!("             class names: from {} (given before, remembered)", list.display()),
            None => outln!("             class names: {}", e.names_hint()),
        }
        match e.cached(&env) {
            Some(p) => outln!("             downloaded: {}", p.display()),
            None => outln!("             not downloaded: `intr-explorer download {}`", e.name),
        }
    }
    outln!();
    outln!(
        "Cache: {} (shared with Python's huggingface_hub){}",
        env.cache.root.display(),
        if env.offline { "; HF_HUB_OFFLINE is set" } else { "" }
    );
    Ok(0)
}

fn progress_bar(what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message(format!("downloading {what}"));
    pb
}

fn report(f: &hub::Fetched) {
    match &f.source {
        Source::Downloaded { resumed_from: 0 } => eprintln!("downloaded and verified: {}", f.path.display()),
        Source::Downloaded { resumed_from } => {
            eprintln!("resumed from byte {resumed_from}, verified: {}", f.path.display());
        }
        Source::Cached => eprintln!("already downloaded: {}", f.path.display()),
        Source::CachedOffline { why } => eprintln!("from the cache ({why}): {}", f.path.display()),
    }
}

/// Downloads `repo`/`file` (or finds it in the cache), with a progress bar on the terminal.
fn fetch(repo: &str, file: &str, expected: &hub::Expected) -> Result<PathBuf> {
    let env = HubEnv::from_env();
    let pb = progress_bar(file);
    let progress = |done: u64, total: Option<u64>| {
        if let Some(t) = total {
            pb.set_length(t);
        }
        pb.set_position(done);
    };
    let r = hub::fetch(&env, repo, file, expected, &progress, &AtomicBool::new(false));
    pb.finish_and_clear();
    let f = r?;
    report(&f);
    Ok(f.path)
}

/// `intr-explorer download NAME` or `download REPO FILE`.
pub fn download(a: &DownloadArgs) -> Result<i32> {
    let path = match a.what.as_slice() {
        [name] => {
            let Some(e) = catalogue::find(name) else {
                let names: Vec<&str> = catalogue::CATALOGUE.iter().map(|e| e.name).collect();
                return Err(super::UsageError(format!(
                    "`{name}` is not a catalogued model ({}); for another file give its repository and name: \
                     `intr-explorer download ORG/NAME FILE`",
                    names.join(", ")
                ))
                .into());
            };
            fetch(e.repo, e.file, &e.expected())?
        }
        [repo, file] => {
            let expected = catalogue::CATALOGUE
                .iter()
                .find(|e| e.repo.eq_ignore_ascii_case(repo) && e.file == *file)
                .map(catalogue::Entry::expected)
                .unwrap_or_default();
            fetch(repo, file, &expected)?
        }
        _ => unreachable!("clap takes one or two values"),
    };
    outln!("{}", path.display());
    Ok(0)
}

/// Where a model argument names a catalogued model that is not on disk (`--model cub`), downloads
/// it first (with a progress bar); the session then finds it in the cache.
pub fn ensure_downloaded(model: &Path) -> Result<()> {
    if model.exists() {
        return Ok(());
    }
    let Some(e) = catalogue::find(&model.to_string_lossy()) else { return Ok(()) };
    let env = HubEnv::from_env();
    if e.cached(&env).is_none() {
        eprintln!(
            "{} is not downloaded yet: downloading it ({:.0} MB) into {}",
            e.name,
            e.bytes as f64 / 1e6,
            env.cache.root.display()
        );
        fetch(e.repo, e.file, &e.expected())?;
    }
    Ok(())
}
