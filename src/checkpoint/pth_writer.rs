//! Writes checkpoints in the official `torch.save` layout (zip + protocol-2 pickle + raw storages),
//! including optimizer state and a pickled `argparse.Namespace`.
//!
//! The benchmarks use it to make full-size official-format files (there is no download here), and
//! the tests use it to make well-formed and deliberately broken checkpoints.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::DType;

/// A Python value to pickle.
#[derive(Debug, Clone)]
pub enum Py {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Py>),
    Tuple(Vec<Py>),
    /// A plain dict.
    Dict(Vec<(Py, Py)>),
    /// `collections.OrderedDict` (as state dicts are saved).
    OrderedDict(Vec<(Py, Py)>),
    /// `argparse.Namespace(**items)`.
    Namespace(Vec<(String, Py)>),
    /// A view into storage `key`.
    Tensor(TensorRef),
    /// Raw opcodes spliced in as one value (for hostile-file tests).
    Raw(Vec<u8>),
}

/// A tensor's record: storage key and type, and the view into it.
#[derive(Debug, Clone)]
pub struct TensorRef {
    pub storage_key: String,
    pub dtype: DType,
    /// Elements in the storage.
    pub storage_numel: usize,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorRef {
    /// A contiguous tensor filling its own storage.
    #[must_use]
    pub fn contiguous(key: &str, dtype: DType, shape: &[usize]) -> Self {
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        Self {
            storage_key: key.into(),
            dtype,
            storage_numel: shape.iter().product(),
            offset: 0,
            shape: shape.to_vec(),
            stride,
        }
    }
}

/// The bytes of one storage entry.
pub enum StorageData {
    Bytes(Vec<u8>),
    /// `len` bytes of deterministic filler (small f32 values), generated while writing.
    Filler {
        len: usize,
        seed: u32,
    },
}

fn torch_storage_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "FloatStorage",
        DType::F64 => "DoubleStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        DType::I64 => "LongStorage",
        DType::I32 => "IntStorage",
        DType::I16 => "ShortStorage",
        DType::I8 => "CharStorage",
        DType::U8 => "ByteStorage",
        DType::Bool => "BoolStorage",
    }
}

/// Serialises `v` as a protocol-2 pickle.
#[must_use]
pub fn pickle(v: &Py) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    emit(&mut out, v);
    out.push(b'.');
    out
}

fn global(out: &mut Vec<u8>, module: &str, name: &str) {
    out.push(b'c');
    out.extend_from_slice(module.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
}

fn int(out: &mut Vec<u8>, i: i64) {
    if let Ok(v) = i32::try_from(i) {
        out.push(b'J');
        out.extend_from_slice(&v.to_le_bytes());
    } else {
        out.push(0x8a);
        out.push(8);
        out.extend_from_slice(&i.to_le_bytes());
    }
}

fn items(out: &mut Vec<u8>, pairs: &[(Py, Py)]) {
    out.push(b'(');
    for (k, v) in pairs {
        emit(out, k);
        emit(out, v);
    }
    out.push(b'u');
}

fn tuple(out: &mut Vec<u8>, xs: &[Py]) {
    out.push(b'(');
    for x in xs {
        emit(out, x);
    }
    out.push(b't');
}

fn emit(out: &mut Vec<u8>, v: &Py) {
    match v {
        Py::None => out.push(b'N'),
        Py::Bool(b) => out.push(if *b { 0x88 } else { 0x89 }),
        Py::Int(i) => int(out, *i),
        Py::Float(f) => {
            out.push(b'G');
            out.extend_from_slice(&f.to_be_bytes());
        }
        Py::Str(s) => {
            out.push(b'X');
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Py::List(xs) => {
            out.push(b']');
            out.push(b'(');
            for x in xs {
                emit(out, x);
            }
            out.push(b'e');
        }
        Py::Tuple(xs) => tuple(out, xs),
        Py::Dict(pairs) => {
            out.push(b'}');
            items(out, pairs);
        }
        Py::OrderedDict(pairs) => {
            global(out, "collections", "OrderedDict");
            out.push(b')');
            out.push(b'R');
            items(out, pairs);
        }
        Py::Namespace(pairs) => {
            global(out, "argparse", "Namespace");
            out.push(b')');
            out.push(0x81);
            out.push(b'}');
            let pairs: Vec<(Py, Py)> = pairs.iter().map(|(k, v)| (Py::Str(k.clone()), v.clone())).collect();
            items(out, &pairs);
            out.push(b'b');
        }
        Py::Tensor(t) => {
            global(out, "torch._utils", "_rebuild_tensor_v2");
            out.push(b'(');
            let pid = [
                Py::Str("storage".into()),
                Py::Raw(Vec::new()),
                Py::Str(t.storage_key.clone()),
                Py::Str("cpu".into()),
                Py::Int(t.storage_numel as i64),
            ];
            out.push(b'(');
            for (i, x) in pid.iter().enumerate() {
                if i == 1 {
                    global(out, "torch", torch_storage_name(t.dtype));
                } else {
                    emit(out, x);
                }
            }
            out.push(b't');
            out.push(b'Q');
            int(out, t.offset as i64);
            tuple(out, &t.shape.iter().map(|&d| Py::Int(d as i64)).collect::<Vec<_>>());
            tuple(out, &t.stride.iter().map(|&d| Py::Int(d as i64)).collect::<Vec<_>>());
            out.push(0x89);
            emit(out, &Py::OrderedDict(Vec::new()));
            out.push(b't');
            out.push(b'R');
        }
        Py::Raw(bytes) => out.extend_from_slice(bytes),
    }
}

/// Writes a `torch.save`-style zip: `<stem>/data.pkl`, `<stem>/data/<key>` for each storage,
/// `<stem>/version`, `byteorder`, `.format_version`, `.storage_alignment`. Entries are stored
/// uncompressed and 64-byte aligned, as torch does.
pub fn write_pth(path: &Path, stem: &str, root: &Py, storages: Vec<(String, StorageData)>) -> std::io::Result<()> {
    use zip::write::SimpleFileOptions;
    let file = BufWriter::new(File::create(path)?);
    let mut zip = zip::ZipWriter::new(file);
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64)
        .large_file(true);
    let put = |zip: &mut zip::ZipWriter<BufWriter<File>>, name: String, data: &[u8]| -> std::io::Result<()> {
        zip.start_file(name, opts).map_err(std::io::Error::other)?;
        zip.write_all(data)
    };
    put(&mut zip, format!("{stem}/data.pkl"), &pickle(root))?;
    put(&mut zip, format!("{stem}/.format_version"), b"1")?;
    put(&mut zip, format!("{stem}/.storage_alignment"), b"64")?;
    put(&mut zip, format!("{stem}/byteorder"), b"little")?;
    for (key, data) in storages {
        match data {
            StorageData::Bytes(b) => put(&mut zip, format!("{stem}/data/{key}"), &b)?,
            StorageData::Filler { len, seed } => {
                zip.start_file(format!("{stem}/data/{key}"), opts).map_err(std::io::Error::other)?;
                let mut s = seed.wrapping_mul(2_654_435_761) | 1;
                let mut chunk = Vec::with_capacity(1 << 16);
                let mut left = len;
                while left > 0 {
                    chunk.clear();
                    while chunk.len() + 4 <= (1 << 16) && chunk.len() + 4 <= left {
                        s ^= s << 13;
                        s ^= s >> 17;
                        s ^= s << 5;
                        let v = (s as f32 / u32::MAX as f32 - 0.5) * 0.01;
                        chunk.extend_from_slice(&v.to_le_bytes());
                    }
                    if chunk.is_empty() {
                        chunk.resize(left, 0);
                    }
                    zip.write_all(&chunk)?;
                    left -= chunk.len();
                }
            }
        }
    }
    put(&mut zip, format!("{stem}/version"), b"3\n")?;
    zip.finish().map_err(std::io::Error::other)?.flush()
}

/// f32 values as little-endian bytes.
#[must_use]
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
