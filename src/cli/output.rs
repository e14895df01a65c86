//! Writing results: atomic file replacement and safetensors output with metadata.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// Writes `path` atomically: `write` fills a temporary file in the same directory, which then
/// replaces `path` in one rename. On any error the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a file in {}", path.display(), dir.display()))?;
    write(tmp.path()).with_context(|| format!("{}: write failed", path.display()))?;
    tmp.as_file().sync_all().with_context(|| format!("{}: cannot flush to disk", path.display()))?;
    tmp.persist(path).with_context(|| format!("{}: cannot replace the file", path.display()))?;
    Ok(())
}

/// One f32 tensor to write.
pub struct F32Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl F32Tensor {
    #[must_use]
    pub fn new(name: &str, shape: Vec<usize>, values: &[f32]) -> Self {
        Self { name: name.into(), shape, bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect() }
    }
}

/// Writes f32 tensors and string metadata to a safetensors file, atomically.
pub fn write_safetensors(path: &Path, tensors: &[F32Tensor], metadata: HashMap<String, String>) -> Result<()> {
    let views = tensors
        .iter()
        .map(|t| Ok((t.name.clone(), TensorView::new(Dtype::F32, t.shape.clone(), &t.bytes)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow::anyhow!("cannot build tensors: {e:?}"))?;
    write_atomic(path, |tmp| {
        safetensors::serialize_to_file(views, Some(metadata), tmp).map_err(|e| anyhow::anyhow!("{e:?}"))
    })
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
#[must_use]
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
