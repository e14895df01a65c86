//! Photos in: decoding (every file treated as hostile), the official evaluation transform bit for
//! bit, and where each attention-grid cell lies over the photo.

pub mod decode;
pub mod grid;
pub mod preprocess;

pub use decode::RgbImage;
