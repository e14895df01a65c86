//! Reading a figure's provenance back from a file this module wrote: the `<metadata>` element of an
//! SVG, the JSON text chunk of a PNG, or the custom Info entry of a PDF.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use super::raster::{PDF_PROVENANCE_KEY, PNG_PROVENANCE_KEY};
use super::svg::PROVENANCE_TAG;

/// Largest figure file read back (figures this program writes are a few MB).
const MAX_FIGURE_BYTES: u64 = 256 << 20;

/// The provenance map stored in an exported figure (SVG, PNG or PDF, told apart by content), so a
/// figure can be re-made from its metadata.
pub fn read_provenance(path: &Path) -> Result<BTreeMap<String, String>> {
    let len = std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?.len();
    if len > MAX_FIGURE_BYTES {
        bail!("{}: is {} MB, larger than any figure this program writes", path.display(), len >> 20);
    }
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    read_provenance_bytes(&bytes).with_context(|| path.display().to_string())
}

/// [`read_provenance`] of a figure already in memory.
pub fn read_provenance_bytes(bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    let json = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        from_png(bytes)
    } else if bytes.starts_with(b"%PDF") {
        from_pdf(bytes)
    } else {
        from_svg(bytes)
    }
    .context("no figure provenance found")?;
    serde_json::from_str(&json).context("the provenance is not a JSON object of strings")
}

fn from_png(bytes: &[u8]) -> Result<String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_ignore_text_chunk(false);
    let reader = decoder.read_info().context("not a readable PNG")?;
    let info = reader.info();
    if let Some(chunk) = info.utf8_text.iter().find(|c| c.keyword == PNG_PROVENANCE_KEY) {
        return chunk.get_text().map_err(|e| anyhow!("the provenance chunk is damaged: {e}"));
    }
    // Tools that rewrite PNGs may turn iTXt into tEXt.
    if let Some(chunk) = info.uncompressed_latin1_text.iter().find(|c| c.keyword == PNG_PROVENANCE_KEY) {
        return Ok(chunk.text.clone());
    }
    bail!("no \"{PNG_PROVENANCE_KEY}\" text chunk")
}

fn from_svg(bytes: &[u8]) -> Result<String> {
    let text = std::str::from_utf8(bytes).context("neither PNG, PDF nor UTF-8 SVG")?;
    let open = format!("<{PROVENANCE_TAG}");
    let start = text.find(&open).with_context(|| format!("no <{PROVENANCE_TAG}> element"))?;
    let body = &text[start + open.len()..];
    let gt = body.find('>').context("unterminated provenance element")?;
    if body[..gt].ends_with('/') {
        return Ok("{}".to_owned());
    }
    let body = &body[gt + 1..];
    let end = body.find(&format!("</{PROVENANCE_TAG}>")).context("unterminated provenance element")?;
    unescape_xml(&body[..end])
}

/// Resolves the five predefined XML entities and numeric character references.
fn unescape_xml(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp + 1..];
        let semi = tail.find(';').context("unterminated XML entity")?;
        let entity = &tail[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()
                } else {
                    entity.strip_prefix('#').and_then(|d| d.parse().ok())
                };
                code.and_then(char::from_u32).with_context(|| format!("unknown XML entity &{entity};"))?
            }
        };
        out.push(c);
        rest = &tail[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn from_pdf(bytes: &[u8]) -> Result<String> {
    let key: Vec<u8> = [b"/".as_slice(), PDF_PROVENANCE_KEY].concat();
    // The last occurrence wins: incremental updates append newer Info dictionaries.
    let at = bytes.windows(key.len()).rposition(|w| w == key.as_slice()).context("no provenance entry in the PDF")?;
    let rest = &bytes[at + key.len()..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace()).context("empty provenance entry")?;
    let raw = parse_pdf_string(&rest[start..]).context("the provenance entry is not a PDF string")?;
    Ok(decode_text_string(&raw))
}

/// Parses a PDF literal `(…)` or hex `<…>` string at the start of `b`; returns its bytes.
fn parse_pdf_string(b: &[u8]) -> Option<Vec<u8>> {
    match b.first()? {
        b'(' => parse_literal(&b[1..]),
        b'<' => {
            let end = b.iter().position(|&c| c == b'>')?;
            let digits: Vec<u8> = b[1..end].iter().copied().filter(|c| !c.is_ascii_whitespace()).collect();
            let nibble = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
            digits
                .chunks(2)
                .map(|pair| Some(nibble(pair[0])? << 4 | pair.get(1).map_or(Some(0), |&c| nibble(c))?))
                .collect()
        }
        _ => None,
    }
}

/// A literal string's body after the opening parenthesis, up to the balancing one.
fn parse_literal(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len().min(1 << 16));
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        i += 1;
        match c {
            b'\\' => {
                let e = *b.get(i)?;
                i += 1;
                match e {
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'0'..=b'7' => {
                        let mut v = u32::from(e - b'0');
                        for _ in 0..2 {
                            match b.get(i) {
                                Some(&d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        out.push((v & 0xff) as u8);
                    }
                    // A backslash before an end of line continues the string on the next line.
                    b'\r' => {
                        if b.get(i) == Some(&b'\n') {
                            i += 1;
                        }
                    }
                    b'\n' => {}
                    other => out.push(other),
                }
            }
            b'(' => {
                depth += 1;
                out.push(c);
            }
            b')' if depth == 0 => return Some(out),
            b')' => {
                depth -= 1;
                out.push(c);
            }
            // An unescaped end of line in a literal string means a single line feed.
            b'\r' => {
                if b.get(i) == Some(&b'\n') {
                    i += 1;
                }
                out.push(b'\n');
            }
            _ => out.push(c),
        }
    }
    None
}

/// Decodes a PDF text string: UTF-16BE with a byte-order mark, UTF-8 with one (PDF 2.0), or
/// PDFDocEncoding, which matches Latin-1 for the text this module writes.
fn decode_text_string(raw: &[u8]) -> String {
    if let Some(utf16) = raw.strip_prefix(&[0xfe, 0xff]) {
        let units: Vec<u16> = utf16.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])).collect();
        return String::from_utf16_lossy(&units);
    }
    if let Some(utf8) = raw.strip_prefix(&[0xef, 0xbb, 0xbf]) {
        return String::from_utf8_lossy(utf8).into_owned();
    }
    raw.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdf_strings_decode_escapes_and_utf16() {
        assert_eq!(parse_pdf_string(br"(a\(b\)c \\ (x) \101\n)").as_deref(), Some(b"a(b)c \\ (x) A\n".as_slice()));
        let hex = parse_pdf_string(b"<FEFF 00E9 0041>").unwrap_or_default();
        assert_eq!(decode_text_string(&hex), "éA");
        assert_eq!(parse_pdf_string(b"<414>").as_deref(), Some(b"A@".as_slice()));
    }

    #[test]
    fn xml_entities_unescape() {
        assert_eq!(unescape_xml("a &amp; &lt;b&gt; &quot;&apos; &#233;&#x41;").ok().as_deref(), Some("a & <b> \"' éA"));
    }
}
