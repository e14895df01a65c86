//! Value ranges of attention maps under each normalisation, and the overlay style they give.

use super::Look;
use super::colormap::{self, ABSOLUTE_MAX, Normalization, OverlayStyle};
use crate::intr::IntrOutput;

/// Min and max over every head and the head mean of `classes` at `layer`.
#[must_use]
pub fn range_over(o: &IntrOutput, layer: usize, classes: &[usize]) -> (f32, f32) {
    let maps: Vec<Vec<f32>> = classes
        .iter()
        .flat_map(|&c| (0..o.heads).map(Some).chain([None]).map(move |h| (c, h)))
        .map(|(c, h)| o.map_values(layer, c, h))
        .collect();
    colormap::value_range(maps.iter().map(Vec::as_slice))
}

/// The value range of one map under `norm`; `compared` are the classes sharing a scale.
#[must_use]
pub fn value_range(
    o: &IntrOutput,
    layer: usize,
    norm: Normalization,
    (class, head): (usize, Option<usize>),
    compared: &[usize],
) -> (f32, f32) {
    match norm {
        Normalization::PerMap => colormap::value_range([o.map_values(layer, class, head).as_slice()]),
        Normalization::SharedHeads => range_over(o, layer, &[class]),
        Normalization::SharedClasses => {
            let mut classes = compared.to_vec();
            if !classes.contains(&class) {
                classes.push(class);
            }
            range_over(o, layer, &classes)
        }
        Normalization::Absolute => (0.0, ABSOLUTE_MAX),
    }
}

/// The overlay style of `look` with the value range `(lo, hi)`.
#[must_use]
pub fn style(look: &Look, (lo, hi): (f32, f32)) -> OverlayStyle {
    OverlayStyle {
        colormap: look.colormap,
        interpolation: look.interpolation,
        lo,
        hi,
        threshold: look.threshold,
        opacity: look.opacity,
    }
}
