//! A strict reader of a zip archive's central directory, enough to locate `torch.save` entries.
//!
//! torch writes stored (uncompressed) entries with a zip64 end record, and reads them back through
//! miniz the same simple way: end record → central directory → local header → data. The `zip`
//! crate's reader applies recovery heuristics that rejected a valid torch-written fixture ("Invalid
//! Central Directory header"), so the index is read here directly. Every offset and size is checked
//! against the file length before use.

use std::io::{Read, Seek, SeekFrom};

/// One entry: where its (stored) bytes start and how many there are.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// Compression method (0 = stored).
    pub method: u16,
    pub data_start: u64,
    pub size: u64,
}

const EOCD: u32 = 0x0605_4b50;
const EOCD64: u32 = 0x0606_4b50;
const EOCD64_LOCATOR: u32 = 0x0706_4b50;
const CDFH: u32 = 0x0201_4b50;
const LFH: u32 = 0x0403_4b50;
/// Central directories larger than this are refused (torch files have a few hundred KB).
const MAX_CD_BYTES: u64 = 64 << 20;

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}
fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

fn read_at(f: &mut (impl Read + Seek), pos: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(pos))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| format!("cannot read zip structure at byte {pos}: {e}"))?;
    Ok(buf)
}

/// Reads the central directory of `f` (`len` bytes long: a file, or bytes in memory). Errors are
/// plain descriptions.
pub fn read_index(f: &mut (impl Read + Seek), len: u64) -> Result<Vec<Entry>, String> {
    const TAIL: u64 = 22 + 65_535;
    let tail_start = len.saturating_sub(TAIL);
    let tail = read_at(f, tail_start, (len - tail_start) as usize)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(&tail, i) == EOCD && i + 22 + usize::from(u16_at(&tail, i + 20)) == tail.len())
        .ok_or("no zip end-of-central-directory record (truncated or not a zip file)")?;
    let mut count = u64::from(u16_at(&tail, eocd + 10));
    let mut cd_size = u64::from(u32_at(&tail, eocd + 12));
    let mut cd_offset = u64::from(u32_at(&tail, eocd + 16));
    // zip64: a locator just before the end record points to the zip64 end record.
    if eocd >= 20 && u32_at(&tail, eocd - 20) == EOCD64_LOCATOR {
        let rec_pos = u64_at(&tail, eocd - 20 + 8);
        if rec_pos.saturating_add(56) > len {
            return Err("zip64 end record lies outside the file (truncated?)".into());
        }
        let rec = read_at(f, rec_pos, 56)?;
        if u32_at(&rec, 0) != EOCD64 {
            return Err("zip64 end record is damaged".into());
        }
        count = u64_at(&rec, 32);
        cd_size = u64_at(&rec, 40);
        cd_offset = u64_at(&rec, 48);
    }
    if cd_size > MAX_CD_BYTES || cd_offset.saturating_add(cd_size) > len {
        return Err(format!(
            "central directory ({cd_size} bytes at {cd_offset}) does not fit in the {len}-byte file (truncated?)"
        ));
    }
    let cd = read_at(f, cd_offset, cd_size as usize)?;
    let mut entries = Vec::new();
    let mut p = 0usize;
    for _ in 0..count {
        if p + 46 > cd.len() || u32_at(&cd, p) != CDFH {
            return Err(format!("central directory entry #{} is damaged", entries.len()));
        }
        let method = u16_at(&cd, p + 10);
        let mut csize = u64::from(u32_at(&cd, p + 20));
        let mut usize_ = u64::from(u32_at(&cd, p + 24));
        let (nlen, elen, clen) =
            (usize::from(u16_at(&cd, p + 28)), usize::from(u16_at(&cd, p + 30)), usize::from(u16_at(&cd, p + 32)));
        let mut lho = u64::from(u32_at(&cd, p + 42));
        let end = p + 46 + nlen + elen + clen;
        if end > cd.len() {
            return Err(format!("central directory entry #{} runs past the directory", entries.len()));
        }
        let name = String::from_utf8_lossy(&cd[p + 46..p + 46 + nlen]).into_owned();
        // zip64 extended information: present fields replace the 0xFFFFFFFF placeholders in order.
        let mut x = p + 46 + nlen;
        let xend = x + elen;
        while x + 4 <= xend {
            let (id, sz) = (u16_at(&cd, x), usize::from(u16_at(&cd, x + 2)));
            let body = x + 4;
            if body + sz > xend {
                break;
            }
            if id == 1 {
                let mut q = body;
                for field in [&mut usize_, &mut csize] {
                    if *field == 0xFFFF_FFFF && q + 8 <= body + sz {
                        *field = u64_at(&cd, q);
                        q += 8;
                    }
                }
                if lho == 0xFFFF_FFFF && q + 8 <= body + sz {
                    lho = u64_at(&cd, q);
                }
            }
            x = body + sz;
        }
        if lho.saturating_add(30) > len {
            return Err(format!("zip entry `{name}` starts outside the file (truncated?)"));
        }
        let lfh = read_at(f, lho, 30)?;
        if u32_at(&lfh, 0) != LFH {
            return Err(format!("local header of zip entry `{name}` is damaged"));
        }
        let data_start = lho + 30 + u64::from(u16_at(&lfh, 26)) + u64::from(u16_at(&lfh, 28));
        let size = if method == 0 { usize_ } else { csize };
        if data_start.saturating_add(size) > len {
            return Err(format!("zip entry `{name}` extends past the end of the file (truncated?)"));
        }
        entries.push(Entry { name, method, data_start, size });
        p = end;
    }
    Ok(entries)
}
