//! Where the attention grid lies over the photo: which cell's features read a pixel, which pixels a
//! cell covers, and the placement the overlays resample with.

/// The grid cell along one axis whose features look at input pixel `p` (0-based): the cell whose
/// receptive-field centre is nearest.
///
/// Every convolution of a ResNet backbone pads symmetrically ((k − 1) / 2 for a k × k kernel), so
/// output index `i` of a stride-`s` convolution is centred on input index `s·i`, and feature cell
/// `c` of the whole backbone on input pixel `stride·c`: the cell reads the image *around* the
/// top-left corner of the naive `stride × stride` tile `[stride·c, stride·(c + 1))`, not that
/// tile. Pixel `p` therefore belongs to cell `round(p / stride)`, clamped to the grid
/// (`tests/demo.rs` checks this on the demo model by perturbing the input).
#[must_use]
pub fn cell_of(p: usize, stride: usize, cells: usize) -> usize {
    let s = stride.max(1);
    ((p + s / 2) / s).min(cells.saturating_sub(1))
}

/// The input pixels `[start, end)` along one axis that cell `c` covers (see [`cell_of`]): the
/// `stride` pixels centred on `stride·c`, clipped to the input of `len` pixels; the last cell also
/// takes the pixels beyond its half-stride, up to the edge (they are nearest to it).
#[must_use]
pub fn cell_extent(c: usize, stride: usize, cells: usize, len: usize) -> (usize, usize) {
    let s = stride.max(1);
    let start = (c * s).saturating_sub(s / 2).min(len);
    let end = if c + 1 >= cells { len } else { (c * s + s - s / 2).min(len) };
    (start, end.max(start))
}

/// Where an attention grid lies over its image, for resampling it: a point at normalised image
/// position `u` ∈ [0, 1] (per axis) has grid coordinate `u · span − origin`, where cell `c`'s
/// centre is at `c`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridPlacement {
    /// The image's extent in cells, (width, height).
    pub span: [f32; 2],
    /// Distance of cell 0's centre from the image's top-left edge, in cells.
    pub origin: f32,
}

impl GridPlacement {
    /// Where the features look (see [`cell_of`]): cell `c` centred on input pixel `stride·c`, so
    /// the image spans `input / stride` cells from cell 0's centre on its edge.
    #[must_use]
    pub fn receptive(input: (usize, usize), stride: usize) -> Self {
        let s = stride.max(1) as f32;
        Self { span: [input.0 as f32 / s, input.1 as f32 / s], origin: 0.0 }
    }

    /// The grid stretched over the image as `gw × gh` equal tiles, cell centres in the tiles'
    /// middles: the official renderer's placement (half a cell right and below where the features
    /// look, at any input size a multiple of the stride).
    #[must_use]
    pub fn tiles(gw: usize, gh: usize) -> Self {
        Self { span: [gw as f32, gh as f32], origin: 0.5 }
    }

    /// Grid coordinates (x, y) of normalised image position (u, v).
    #[must_use]
    pub fn grid_coords(&self, u: f32, v: f32) -> (f32, f32) {
        (u * self.span[0] - self.origin, v * self.span[1] - self.origin)
    }
}

/// How the attention grid lies over the original image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridMapping {
    /// Image as shown to the user (after EXIF orientation), (width, height).
    pub original: (usize, usize),
    /// Network input (width, height).
    pub input: (usize, usize),
    /// Attention grid (h, w).
    pub grid: (usize, usize),
    /// Backbone stride in input pixels (32; 16 or 8 with dilated stages).
    pub stride: usize,
}

impl GridMapping {
    /// The rectangle `(x0, y0, x1, y1)` in original-image pixels that grid cell `(row, col)` covers:
    /// the input pixels whose nearest receptive-field centre it is ([`cell_extent`]), scaled back.
    #[must_use]
    pub fn cell_rect(&self, row: usize, col: usize) -> (f64, f64, f64, f64) {
        let sx = self.original.0 as f64 / self.input.0 as f64;
        let sy = self.original.1 as f64 / self.input.1 as f64;
        let (x0, x1) = cell_extent(col, self.stride, self.grid.1, self.input.0);
        let (y0, y1) = cell_extent(row, self.stride, self.grid.0, self.input.1);
        (x0 as f64 * sx, y0 as f64 * sy, x1 as f64 * sx, y1 as f64 * sy)
    }

    /// The grid cell `(row, col)` under original-image pixel `(x, y)`, if inside the image.
    #[must_use]
    pub fn cell_at(&self, x: f64, y: f64) -> Option<(usize, usize)> {
        if x < 0.0 || y < 0.0 || x >= self.original.0 as f64 || y >= self.original.1 as f64 {
            return None;
        }
        let ix = x * self.input.0 as f64 / self.original.0 as f64;
        let iy = y * self.input.1 as f64 / self.original.1 as f64;
        Some((cell_of(iy as usize, self.stride, self.grid.0), cell_of(ix as usize, self.stride, self.grid.1)))
    }

    /// Where the grid lies over the image, for resampling it.
    #[must_use]
    pub fn placement(&self) -> GridPlacement {
        GridPlacement::receptive(self.input, self.stride)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_mapping_round_trips() {
        let m = GridMapping { original: (500, 389), input: (1028, 800), grid: (25, 33), stride: 32 };
        let (x0, y0, x1, y1) = m.cell_rect(3, 4);
        assert_eq!(m.cell_at((x0 + x1) / 2.0, (y0 + y1) / 2.0), Some((3, 4)));
        assert_eq!(m.cell_at(499.9, 388.9), Some((24, 32)));
        assert_eq!(m.cell_at(500.0, 10.0), None);
        // Cell (0, 0) is centred on the image's corner: its rectangle is half a stride wide.
        let (x0, y0, x1, y1) = m.cell_rect(0, 0);
        assert_eq!((x0, y0), (0.0, 0.0));
        assert!((x1 - 16.0 * 500.0 / 1028.0).abs() < 1e-9 && (y1 - 16.0 * 389.0 / 800.0).abs() < 1e-9);
    }

    #[test]
    fn cells_are_centred_on_multiples_of_the_stride() {
        // 128 pixels, stride 16, 8 cells: cell c covers [16c − 8, 16c + 8), the first and the last
        // clipped and extended to the edges.
        let owner: Vec<usize> = (0..128).map(|p| cell_of(p, 16, 8)).collect();
        assert_eq!(&owner[..9], &[0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!((owner[23], owner[24]), (1, 2));
        assert!(owner[104..].iter().all(|&c| c == 7));
        assert_eq!(cell_extent(0, 16, 8, 128), (0, 8));
        assert_eq!(cell_extent(1, 16, 8, 128), (8, 24));
        assert_eq!(cell_extent(7, 16, 8, 128), (104, 128));
        for c in 0..8 {
            let (a, b) = cell_extent(c, 16, 8, 128);
            assert!((a..b).all(|p| cell_of(p, 16, 8) == c));
        }
        // An input that is not a multiple of the stride: 100 pixels at stride 32 give 4 cells
        // centred on 0, 32, 64, 96.
        assert_eq!(cell_extent(3, 32, 4, 100), (80, 100));
        assert_eq!(cell_of(79, 32, 4), 2);
    }
}
