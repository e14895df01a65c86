//! Decoding image files to 8-bit RGB the way PIL's `Image.open(...).convert('RGB')` does.
//!
//! JPEG goes through libjpeg-turbo's code (the `mozjpeg` crate: same islow IDCT and fancy upsampling
//! as PIL's libjpeg-turbo, bit for bit); PNG, WebP, TIFF, BMP and GIF through `image`. Grey is
//! replicated, alpha is dropped (not composited), palettes are expanded, CMYK is converted with
//! PIL's formula. Unlike PIL, EXIF orientation is applied by default so the subject is upright.
//! Every file is treated as hostile: sizes are checked before pixels are allocated.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::error::{Error, Result};

/// Largest image accepted, in pixels (a 100-megapixel photo decodes to 300 MB of RGB).
pub const MAX_PIXELS: u64 = 100_000_000;
/// Largest file accepted, in bytes.
pub const MAX_FILE_BYTES: u64 = 512 << 20;

/// A decoded 8-bit RGB image, row-major `data[(y * width + x) * 3 + c]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// A decoded image and what was done to it.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub image: RgbImage,
    /// Size as stored in the file (before orientation).
    pub stored_size: (usize, usize),
    /// EXIF orientation tag found (1 = upright), whether or not it was applied.
    pub exif_orientation: u8,
    /// Whether the orientation was applied.
    pub oriented: bool,
}

/// File extensions (lower case) of the image formats the explorer opens.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "gif"];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`] (any case).
#[must_use]
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Decodes `path`; `apply_orientation` rotates/flips per EXIF (PIL does not).
pub fn decode_file(path: &Path, apply_orientation: bool) -> Result<Decoded> {
    let bad = |what: String| Error::file(path, what);
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    if meta.is_dir() {
        return Err(bad("is a directory, not an image".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(bad(format!(
            "file is {} MB, above the {} MB limit for images",
            meta.len() >> 20,
            MAX_FILE_BYTES >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    decode_bytes(&bytes, apply_orientation).map_err(bad)
}

/// Decodes an in-memory file; errors are plain descriptions (the caller adds the file name).
pub fn decode_bytes(bytes: &[u8], apply_orientation: bool) -> Result<Decoded, String> {
    if bytes.is_empty() {
        return Err("file is empty".into());
    }
    let format = image::guess_format(bytes)
        .map_err(|_| "not an image in a supported format (JPEG, PNG, WebP, TIFF, BMP, GIF)".to_string())?;
    let orientation = read_orientation(bytes, format);
    let image = match format {
        ImageFormat::Jpeg => decode_jpeg(bytes)?,
        _ => decode_other(bytes, format)?,
    };
    let stored_size = (image.width, image.height);
    let mut out = Decoded { image, stored_size, exif_orientation: orientation, oriented: false };
    if apply_orientation && orientation > 1 {
        out.image = orient(&out.image, orientation);
        out.oriented = true;
    }
    Ok(out)
}

fn check_size(w: u64, h: u64) -> Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!("image has no pixels ({w}×{h})"));
    }
    if w.saturating_mul(h) > MAX_PIXELS {
        return Err(format!(
            "image is {w}×{h} ({:.1} megapixels), above the {} megapixel limit",
            (w * h) as f64 / 1e6,
            MAX_PIXELS / 1_000_000
        ));
    }
    Ok(())
}

fn read_orientation(bytes: &[u8], format: ImageFormat) -> u8 {
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let Ok(mut decoder) = reader.into_decoder() else { return 1 };
    match decoder.orientation() {
        Ok(o) => orientation_code(o),
        Err(_) => 1,
    }
}

fn orientation_code(o: image::metadata::Orientation) -> u8 {
    use image::metadata::Orientation as O;
    match o {
        O::NoTransforms => 1,
        O::FlipHorizontal => 2,
        O::Rotate180 => 3,
        O::FlipVertical => 4,
        O::Rotate90FlipH => 5,
        O::Rotate90 => 6,
        O::Rotate270FlipH => 7,
        O::Rotate270 => 8,
    }
}

/// Applies EXIF orientation `code` (2–8) to the pixels.
#[must_use]
pub fn orient(img: &RgbImage, code: u8) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let transposed = code >= 5;
    let (ow, oh) = if transposed { (h, w) } else { (w, h) };
    let mut data = vec![0u8; w * h * 3];
    for oy in 0..oh {
        for ox in 0..ow {
            // Source pixel of output (ox, oy) for each EXIF orientation.
            let (sx, sy) = match code {
                2 => (w - 1 - ox, oy),
                3 => (w - 1 - ox, h - 1 - oy),
                4 => (ox, h - 1 - oy),
                5 => (oy, ox),
                6 => (oy, h - 1 - ox),
                7 => (w - 1 - oy, h - 1 - ox),
                8 => (w - 1 - oy, ox),
                _ => (ox, oy),
            };
            let s = (sy * w + sx) * 3;
            let d = (oy * ow + ox) * 3;
            data[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    RgbImage { width: ow, height: oh, data }
}

thread_local! {
    static JPEG_TRUNCATED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// libjpeg warning hook: PIL refuses truncated JPEGs ("image file is truncated"); so do we.
extern "C-unwind" fn note_warning(cinfo: &mut mozjpeg_sys::jpeg_common_struct, level: std::os::raw::c_int) {
    // SAFETY: libjpeg passes a valid error manager; we only read its message code.
    let code = unsafe { cinfo.err.as_ref().map_or(0, |e| e.msg_code) };
    if level < 0 && code == mozjpeg_sys::JWRN_JPEG_EOF {
        JPEG_TRUNCATED.with(|t| t.set(true));
    }
}

/// libjpeg fatal-error hook: unwinds (caught in [`decode_jpeg`]) with the message code.
extern "C-unwind" fn fatal_error(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    // SAFETY: libjpeg passes a valid error manager.
    let code = unsafe { cinfo.err.as_ref().map_or(0, |e| e.msg_code) };
    std::panic::resume_unwind(Box::new(format!("libjpeg error code {code}")));
}

fn error_manager() -> mozjpeg_sys::jpeg_error_mgr {
    // SAFETY: jpeg_std_error fills every field of the zeroed struct.
    let mut err: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(fatal_error);
    err.emit_message = Some(note_warning);
    err
}

fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    JPEG_TRUNCATED.with(|t| t.set(false));
    let adobe = has_adobe_marker(bytes);
    let result = std::panic::catch_unwind(|| -> Result<RgbImage, String> {
        let d = mozjpeg::decompress::DecompressBuilder::new()
            .with_err(error_manager())
            .from_mem(bytes)
            .map_err(|e| format!("not a readable JPEG: {e}"))?;
        let (w, h) = d.size();
        check_size(w as u64, h as u64)?;
        let cmyk = matches!(d.color_space(), mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK);
        if cmyk {
            let mut started =
                d.to_colorspace(mozjpeg::ColorSpace::JCS_CMYK).map_err(|e| format!("cannot decode CMYK JPEG: {e}"))?;
            let px: Vec<[u8; 4]> = started.read_scanlines().map_err(|e| format!("cannot decode JPEG: {e}"))?;
            started.finish().map_err(|e| format!("cannot decode JPEG: {e}"))?;
            let data = px.iter().flat_map(|p| cmyk_to_rgb(*p, adobe)).collect();
            return Ok(RgbImage { width: w, height: h, data });
        }
        let mut started = d.rgb().map_err(|e| format!("cannot decode JPEG: {e}"))?;
        let data: Vec<u8> = started.read_scanlines().map_err(|e| format!("cannot decode JPEG: {e}"))?;
        started.finish().map_err(|e| format!("cannot decode JPEG: {e}"))?;
        Ok(RgbImage { width: w, height: h, data })
    });
    let img = match result {
        Ok(r) => r?,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "unknown libjpeg error".into());
            return Err(format!("corrupt JPEG ({})", msg.trim_start_matches("libjpeg fatal error: ")));
        }
    };
    if JPEG_TRUNCATED.with(std::cell::Cell::get) {
        return Err("JPEG data is truncated (the file ends before the image does)".into());
    }
    if img.data.len() != img.width * img.height * 3 {
        return Err("JPEG decoded to fewer pixels than it declares".into());
    }
    Ok(img)
}

/// PIL's CMYK → RGB: `r = (255 − k) − c·(255 − k)/255` with its rounding; Adobe files store inverted
/// values (PIL reads them as `CMYK;I`).
fn cmyk_to_rgb(p: [u8; 4], inverted: bool) -> [u8; 3] {
    let p = if inverted { p.map(|v| 255 - v) } else { p };
    let nk = 255 - i32::from(p[3]);
    let mul_div_255 = |a: i32, b: i32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let ch = |c: u8| (nk - mul_div_255(i32::from(c), nk)).clamp(0, 255) as u8;
    [ch(p[0]), ch(p[1]), ch(p[2])]
}

/// Whether the JPEG has an APP14 "Adobe" segment before its first scan.
fn has_adobe_marker(b: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return false;
        }
        let marker = b[i + 1];
        if marker == 0xDA {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        if marker == 0xEE && b.get(i + 4..i + 9) == Some(b"Adobe") {
            return true;
        }
        i += 2 + len;
    }
    false
}

fn decode_other(bytes: &[u8], format: ImageFormat) -> Result<RgbImage, String> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| format!("not a readable {format:?} image: {e}"))?;
    let (w, h) = decoder.dimensions();
    check_size(u64::from(w), u64::from(h))?;
    let img = DynamicImage::from_decoder(decoder).map_err(|e| format!("cannot decode {format:?} image: {e}"))?;
    let rgb = img.into_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    Ok(RgbImage { width, height, data: rgb.into_raw() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientation_codes_map_corners() {
        // 2×1 image: red, green.
        let img = RgbImage { width: 2, height: 1, data: vec![255, 0, 0, 0, 255, 0] };
        let r6 = orient(&img, 6); // rotate 90° clockwise: becomes 1×2, red on top
        assert_eq!((r6.width, r6.height), (1, 2));
        assert_eq!(&r6.data[..3], &[255, 0, 0]);
        let r8 = orient(&img, 8); // rotate 90° counter-clockwise: green on top
        assert_eq!(&r8.data[..3], &[0, 255, 0]);
        let r3 = orient(&img, 3);
        assert_eq!(r3.data, vec![0, 255, 0, 255, 0, 0]);
    }

    #[test]
    fn cmyk_follows_pil() {
        assert_eq!(cmyk_to_rgb([0, 0, 0, 0], false), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb([255, 0, 0, 0], false), [0, 255, 255]);
        assert_eq!(cmyk_to_rgb([255, 255, 255, 255], true), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb([255, 255, 255, 0], true), [0, 0, 0]);
    }

    #[test]
    fn empty_and_garbage_are_refused() {
        assert!(decode_bytes(b"", true).is_err());
        assert!(decode_bytes(b"hello, I am not an image", true).unwrap_err().contains("not an image"));
    }
}
