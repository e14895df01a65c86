//! Opening a checkpoint: the index of an official `.pth` zip or a `.safetensors` file, and each
//! tensor read on demand as f32.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::pickle::{self, Value};
use super::zipindex;
use crate::error::{Error, Result};

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether weights of this type can be used (converted to f32) by the model.
    #[must_use]
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    fn from_torch_storage(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    fn from_safetensors(d: safetensors::Dtype) -> Option<Self> {
        use safetensors::Dtype as S;
        Some(match d {
            S::F32 => DType::F32,
            S::F64 => DType::F64,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::I64 => DType::I64,
            S::I32 => DType::I32,
            S::I16 => DType::I16,
            S::I8 => DType::I8,
            S::U8 => DType::U8,
            S::BOOL => DType::Bool,
            _ => return None,
        })
    }
}

/// Where one tensor lives and how it is laid out.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub dtype: DType,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Strides in elements (row-major for safetensors).
    pub stride: Vec<usize>,
    /// Absolute byte range of the backing storage inside the file.
    location: (u64, u64),
}

impl TensorInfo {
    /// Number of elements.
    #[must_use]
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The file format a checkpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PyTorch zip serialisation (`torch.save`).
    Pth,
    Safetensors,
}

/// What a checkpoint holds besides the model weights (shown by `inspect`).
#[derive(Debug, Clone, Default)]
pub struct CheckpointExtras {
    /// Top-level entries of a `.pth` dict (`model`, `optimizer`, `epoch`, `args`, ...).
    pub top_level_keys: Vec<String>,
    /// `epoch` when present.
    pub epoch: Option<i64>,
    /// The training options (`args`, an `argparse.Namespace`) as JSON.
    pub args: Option<serde_json::Map<String, serde_json::Value>>,
    /// Number of optimizer state tensors that were skipped.
    pub optimizer_tensors: usize,
    /// `__metadata__` of a safetensors file.
    pub metadata: BTreeMap<String, String>,
}

enum Backing {
    Pth(Mutex<File>),
    Safetensors(memmap2::Mmap),
}

/// An opened checkpoint: the model's tensor index plus everything else the file says.
pub struct Checkpoint {
    path: PathBuf,
    format: Format,
    tensors: BTreeMap<String, TensorInfo>,
    extras: CheckpointExtras,
    backing: Backing,
    big_endian: bool,
}

/// Largest `data.pkl` accepted (official files have a few hundred KB).
const MAX_PICKLE_BYTES: u64 = 64 << 20;

impl Checkpoint {
    /// Opens `.pth` or `.safetensors` (decided by content, not by extension).
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
        let mut head = [0u8; 32];
        let n = file.read(&mut head).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        if let Ok(kind) = image::guess_format(&head[..n]) {
            return Err(Error::file(
                path,
                format!(
                    "is an image ({}), not a model checkpoint: give the model with --model and photos as arguments",
                    kind.extensions_str().first().map_or("image", |e| e).to_uppercase()
                ),
            ));
        }
        file.seek(SeekFrom::Start(0)).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let magic = [head[0], head[1], head[2], head[3]];
        if n >= 2 && magic[0] == 0x80 && magic[1] <= 5 {
            return Err(Error::file(
                path,
                "legacy (pre-1.6) PyTorch serialisation is not supported; re-save it with a current torch.save",
            ));
        }
        if n >= 4 && &magic == b"PK\x03\x04" { open_pth(path, file) } else { open_safetensors(path, &file) }
    }

    /// The path the checkpoint was opened from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container format.
    #[must_use]
    pub fn format(&self) -> Format {
        self.format
    }

    /// The model's tensors by state-dict name.
    #[must_use]
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// Everything else the file holds.
    #[must_use]
    pub fn extras(&self) -> &CheckpointExtras {
        &self.extras
    }

    /// Reads one tensor as contiguous f32 values (row-major over its shape), converting f16/bf16/f64.
    /// Integer tensors are refused: they never hold INTR weights.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensors.get(name).ok_or_else(|| Error::file(&self.path, format!("no tensor `{name}`")))?;
        if !info.dtype.is_float() {
            return Err(Error::file(
                &self.path,
                format!("tensor `{name}` holds {:?} integers where floating-point weights belong", info.dtype),
            ));
        }
        if let Backing::Safetensors(map) = &self.backing {
            // Mapped: converted straight from the map, without a copy of the bytes first.
            let bytes = self.storage_slice(map, name, info)?;
            return Ok(gather_f32(bytes, info, self.big_endian));
        }
        let bytes = self.read_storage(name, info)?;
        Ok(gather_f32(&bytes, info, self.big_endian))
    }

    /// Reads the bytes of the storage range that `info` touches.
    fn read_storage(&self, name: &str, info: &TensorInfo) -> Result<Vec<u8>> {
        let (start, len) = info.location;
        let len = usize::try_from(len).map_err(|_| Error::file(&self.path, format!("tensor `{name}` is too large")))?;
        match &self.backing {
            Backing::Pth(file) => {
                let mut buf = Vec::new();
                buf.try_reserve_exact(len)
                    .map_err(|_| Error::file(&self.path, format!("tensor `{name}` is too large to load")))?;
                buf.resize(len, 0);
                let mut f = file.lock().map_err(|_| Error::file(&self.path, "file handle poisoned"))?;
                f.seek(SeekFrom::Start(start))
                    .and_then(|_| f.read_exact(&mut buf))
                    .map_err(|e| Error::file(&self.path, format!("cannot read tensor `{name}`: {e}")))?;
                Ok(buf)
            }
            Backing::Safetensors(map) => Ok(self.storage_slice(map, name, info)?.to_vec()),
        }
    }

    /// The bytes of the storage range that `info` touches, inside a mapped file.
    fn storage_slice<'m>(&self, map: &'m [u8], name: &str, info: &TensorInfo) -> Result<&'m [u8]> {
        let (start, len) = info.location;
        let s = usize::try_from(start).unwrap_or(usize::MAX);
        let slice = usize::try_from(len).ok().and_then(|len| s.checked_add(len)).and_then(|e| map.get(s..e));
        slice.ok_or_else(|| Error::file(&self.path, format!("tensor `{name}` lies outside the file")))
    }
}

/// Converts the strided elements of `info` inside `bytes` (its storage range) to contiguous f32.
fn gather_f32(bytes: &[u8], info: &TensorInfo, big_endian: bool) -> Vec<f32> {
    let es = info.dtype.size();
    let convert = |i: usize| -> f32 {
        let mut b = [0u8; 8];
        b[..es].copy_from_slice(&bytes[i * es..(i + 1) * es]);
        if big_endian {
            b[..es].reverse();
        }
        match info.dtype {
            DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            #[allow(clippy::cast_possible_truncation)]
            DType::F64 => f64::from_le_bytes(b) as f32,
            DType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            DType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            _ => 0.0,
        }
    };
    let n = info.numel();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let contiguous = is_contiguous(&info.shape, &info.stride);
    if contiguous && info.dtype == DType::F32 && !big_endian {
        // The common case (every official weight): a straight little-endian copy.
        out.extend(bytes[..n * 4].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        return out;
    }
    if contiguous {
        out.extend((0..n).map(convert));
        return out;
    }
    let rank = info.shape.len();
    let mut idx = vec![0usize; rank];
    for _ in 0..n {
        let at = idx.iter().zip(&info.stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(convert(at));
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < info.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect *= d;
    }
    true
}

/// Location of one stored zip entry's bytes.
struct ZipEntry {
    start: u64,
    size: u64,
}

fn open_pth(path: &Path, mut file: File) -> Result<Checkpoint> {
    let bad = |what: String| Error::file(path, what);
    let len = file.metadata().map_err(|e| bad(format!("cannot read: {e}")))?.len();
    let index =
        zipindex::read_index(&mut file, len).map_err(|e| bad(format!("not a readable PyTorch checkpoint: {e}")))?;
    let mut entries: HashMap<String, ZipEntry> = HashMap::new();
    let mut pkl_names = Vec::new();
    for e in index {
        if e.method != 0 {
            // torch.save never compresses; compressed entries would have to be inflated into memory.
            if e.name.ends_with("data.pkl") || e.name.contains("/data/") {
                return Err(bad(format!(
                    "zip entry `{}` is compressed; torch.save writes stored entries only",
                    e.name
                )));
            }
            continue;
        }
        if e.name == "data.pkl" || e.name.ends_with("/data.pkl") {
            pkl_names.push(e.name.clone());
        }
        entries.insert(e.name, ZipEntry { start: e.data_start, size: e.size });
    }
    let pkl_name = match pkl_names.as_slice() {
        [one] => one.clone(),
        [] => return Err(bad("zip archive has no `data.pkl`: not a PyTorch checkpoint".into())),
        _ => return Err(bad(format!("zip archive has several pickles ({}); expected one", pkl_names.join(", ")))),
    };
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_string();
    let read_entry = |file: &mut File, e: &ZipEntry, limit: u64, name: &str| -> Result<Vec<u8>> {
        if e.size > limit {
            return Err(Error::file(path, format!("`{name}` is implausibly large ({} bytes)", e.size)));
        }
        let mut buf = vec![0u8; usize::try_from(e.size).unwrap_or(0)];
        file.seek(SeekFrom::Start(e.start))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|err| Error::file(path, format!("cannot read `{name}` (file truncated?): {err}")))?;
        Ok(buf)
    };
    let pkl = read_entry(&mut file, &entries[&pkl_name], MAX_PICKLE_BYTES, &pkl_name)?;
    let big_endian = match entries.get(&format!("{prefix}byteorder")) {
        Some(e) => read_entry(&mut file, e, 16, "byteorder")? == b"big",
        None => false,
    };
    let root = pickle::parse(&pkl).map_err(|e| bad(format!("cannot read `{pkl_name}`: {e}")))?;
    let (state, extras) = split_top_level(path, &root)?;
    let mut tensors = BTreeMap::new();
    for (k, v) in state {
        let Some(key) = k.as_str() else { return Err(bad("state dict has a non-string key".into())) };
        let info = tensor_from_pickle(path, key, v, &prefix, &entries)?;
        tensors.insert(key.to_string(), info);
    }
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    for (name, t) in &tensors {
        if t.location.0.saturating_add(t.location.1) > file_len {
            return Err(bad(format!("tensor `{name}` extends past the end of the file (truncated?)")));
        }
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        format: Format::Pth,
        tensors,
        extras,
        backing: Backing::Pth(Mutex::new(file)),
        big_endian,
    })
}

/// Finds the model state dict inside the unpickled object and collects what else is there.
fn split_top_level<'v>(path: &Path, root: &'v Value) -> Result<(&'v [(Value, Value)], CheckpointExtras)> {
    let mut extras = CheckpointExtras::default();
    let root = unwrap_build(root);
    let Value::Dict(items) = root else {
        return Err(Error::file(path, "the pickle does not hold a dict (a whole pickled module is not supported)"));
    };
    extras.top_level_keys = items.iter().filter_map(|(k, _)| k.as_str().map(str::to_string)).collect();
    let model = ["model", "state_dict", "model_state_dict"].iter().find_map(|k| root.get(k));
    let state = match model {
        Some(m) => match unwrap_build(m) {
            Value::Dict(d) => d.as_slice(),
            _ => return Err(Error::file(path, "the `model` entry is not a state dict")),
        },
        // A bare state dict: `torch.save(model.state_dict(), ...)`.
        None if items.iter().any(|(_, v)| tensor_call(v).is_some()) => {
            extras.top_level_keys.clear();
            items.as_slice()
        }
        None => {
            return Err(Error::file(
                path,
                format!(
                    "no `model` state dict in the checkpoint (top-level keys: {})",
                    extras.top_level_keys.join(", ")
                ),
            ));
        }
    };
    extras.epoch = root.get("epoch").and_then(Value::as_int);
    if let Some(args) = root.get("args") {
        let mut budget = 100_000;
        if let serde_json::Value::Object(m) = pickle::to_json(args, &mut budget) {
            extras.args = Some(m);
        }
    }
    if let Some(opt) = root.get("optimizer") {
        extras.optimizer_tensors = count_tensors(opt, 0);
    }
    Ok((state, extras))
}

fn unwrap_build(v: &Value) -> &Value {
    match v {
        // OrderedDicts carry `_metadata` through BUILD: the dict itself is the object.
        Value::Build { obj, .. } => obj,
        other => other,
    }
}

fn count_tensors(v: &Value, depth: usize) -> usize {
    if depth > pickle::MAX_DEPTH {
        return 0;
    }
    if tensor_call(v).is_some() {
        return 1;
    }
    match unwrap_build(v) {
        Value::Dict(items) => items.iter().map(|(_, x)| count_tensors(x, depth + 1)).sum(),
        Value::List(items) | Value::Tuple(items) => items.iter().map(|x| count_tensors(x, depth + 1)).sum(),
        _ => 0,
    }
}

/// If `v` is `torch._utils._rebuild_tensor_v2(...)` (or `_rebuild_tensor`, or a parameter wrapping
/// one), returns its argument list.
fn tensor_call(v: &Value) -> Option<&[Value]> {
    let Value::Call { callable, args } = v else { return None };
    let args = args.as_seq()?;
    match callable.as_global()? {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => Some(args),
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => tensor_call(args.first()?),
        _ => None,
    }
}

fn tensor_from_pickle(
    path: &Path,
    key: &str,
    v: &Value,
    prefix: &str,
    entries: &HashMap<String, ZipEntry>,
) -> Result<TensorInfo> {
    let bad = |what: &str| Error::file(path, format!("tensor `{key}`: {what}"));
    let args = tensor_call(v).ok_or_else(|| bad("is not a tensor"))?;
    let [pid, offset, size, stride, ..] = args else { return Err(bad("malformed tensor record")) };
    let Value::PersistentId(pid) = pid else { return Err(bad("tensor storage is not a persistent id")) };
    let pid = pid.as_seq().ok_or_else(|| bad("malformed storage record"))?;
    let [kind, storage_type, storage_key, _location, numel] = pid else {
        return Err(bad("malformed storage record"));
    };
    if kind.as_str() != Some("storage") {
        return Err(bad("unknown persistent id kind"));
    }
    let dtype = storage_type
        .as_global()
        .and_then(|(m, n)| if m == "torch" { DType::from_torch_storage(n) } else { None })
        .ok_or_else(|| bad("unknown storage type"))?;
    let storage_key = match storage_key {
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        _ => return Err(bad("bad storage key")),
    };
    let numel = numel.as_int().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| bad("bad storage size"))?;
    let to_usizes = |v: &Value| -> Option<Vec<usize>> {
        v.as_seq()?.iter().map(|x| x.as_int().and_then(|i| usize::try_from(i).ok())).collect()
    };
    let shape = to_usizes(size).ok_or_else(|| bad("bad shape"))?;
    let stride = to_usizes(stride).ok_or_else(|| bad("bad stride"))?;
    let offset = offset.as_int().and_then(|i| usize::try_from(i).ok()).ok_or_else(|| bad("bad storage offset"))?;
    if shape.len() != stride.len() {
        return Err(bad("shape and stride ranks differ"));
    }
    let entry_name = format!("{prefix}data/{storage_key}");
    let entry = entries.get(&entry_name).ok_or_else(|| bad(&format!("storage `{entry_name}` is missing")))?;
    let es = dtype.size() as u64;
    let declared = (numel as u64).checked_mul(es).ok_or_else(|| bad("storage size overflows"))?;
    if entry.size < declared {
        return Err(bad(&format!("data is shorter than declared ({} of {declared} bytes)", entry.size)));
    }
    // Highest element index the view touches; must lie inside the storage.
    let numel_view: usize = shape.iter().product();
    let extent = if numel_view == 0 {
        0
    } else {
        let last = shape.iter().zip(&stride).try_fold(offset, |acc, (&d, &s)| acc.checked_add((d - 1).checked_mul(s)?));
        last.and_then(|l| l.checked_add(1)).ok_or_else(|| bad("view overflows"))?
    };
    if extent > numel {
        return Err(bad(&format!("view reaches element {extent} of a {numel}-element storage")));
    }
    // Only the bytes the view touches are read, starting at its first element (the storage offset).
    let location = (entry.start + offset as u64 * es, extent.saturating_sub(offset) as u64 * es);
    Ok(TensorInfo { dtype, shape, stride, location })
}

fn open_safetensors(path: &Path, file: &File) -> Result<Checkpoint> {
    // SAFETY: the map is read-only and private to this checkpoint; a file truncated by another
    // process while mapped would fault, as with any mmap-based reader (safetensors, candle).
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| Error::file(path, format!("cannot map: {e}")))?;
    let (n, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
        Error::file(path, format!("neither a PyTorch zip checkpoint nor a valid safetensors file: {e:?}"))
    })?;
    let data_start = 8 + n as u64;
    let mut tensors = BTreeMap::new();
    for (name, info) in meta.tensors() {
        let dtype = DType::from_safetensors(info.dtype)
            .ok_or_else(|| Error::file(path, format!("tensor `{name}` has unsupported type {:?}", info.dtype)))?;
        let mut stride = vec![1usize; info.shape.len()];
        for d in (0..info.shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * info.shape[d + 1];
        }
        let (s, e) = info.data_offsets;
        tensors.insert(
            name,
            TensorInfo { dtype, shape: info.shape.clone(), stride, location: (data_start + s as u64, (e - s) as u64) },
        );
    }
    let mut extras = CheckpointExtras::default();
    if let Some(m) = meta.metadata() {
        extras.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        // Our trainer's options play the part of the official checkpoints' `args`; a value that is
        // not a JSON object is left as plain metadata.
        if let Some(serde_json::Value::Object(args)) =
            m.get(super::META_TRAINING).and_then(|v| serde_json::from_str(v).ok())
        {
            extras.args = Some(args);
        }
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        format: Format::Safetensors,
        tensors,
        extras,
        backing: Backing::Safetensors(map),
        big_endian: false,
    })
}
