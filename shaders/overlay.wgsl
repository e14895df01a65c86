// Attention overlay: one attention map from the atlas, resampled (nearest / bilinear / bicubic),
// normalised, thresholded, colour-mapped through a LUT and blended over the photo.
//
// NOTE: keep in sync with `src/colormap.rs` (sampling positions, Keys cubic a = -0.75, LUT
// interpolation, threshold, blend) and with `OverlayUniforms` in
// `src/render/overlay.rs` (field order and padding).

const LUT_SIZE: f32 = 256.0;

struct Uniforms {
    // Part of the image shown: uv = uv_offset + quad_uv * uv_scale.
    uv_offset: vec2<f32>,
    uv_scale: vec2<f32>,
    // Top-left texel of this map in the atlas, and the grid size (w, h).
    map_origin: vec2<u32>,
    grid: vec2<u32>,
    // Where the grid lies: image position uv has grid coordinates uv * span - origin, cell (i, j)
    // centred at (j, i) (`GridPlacement` in src/model/preprocess.rs).
    span: vec2<f32>,
    lo: f32,
    hi: f32,
    threshold: f32,
    opacity: f32,
    // 0 nearest, 1 bilinear, 2 bicubic.
    interpolation: u32,
    // Row of the LUT texture.
    colormap: u32,
    // 1: draw the photo under the overlay; 0: overlay only (transparent where below threshold).
    draw_image: u32,
    origin: f32,
};

@group(0) @binding(0) var<uniform> u: Uniforms;
@group(0) @binding(1) var photo: texture_2d<f32>;
@group(0) @binding(2) var photo_sampler: sampler;
@group(0) @binding(3) var atlas: texture_2d<f32>;
@group(0) @binding(4) var luts: texture_2d<f32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VertexOut {
    // Triangle strip over the whole viewport: (0,0) (1,0) (0,1) (1,1) in quad coordinates.
    let q = vec2<f32>(f32(i & 1u), f32(i >> 1u));
    var out: VertexOut;
    out.position = vec4<f32>(q.x * 2.0 - 1.0, 1.0 - q.y * 2.0, 0.0, 1.0);
    out.uv = u.uv_offset + q * u.uv_scale;
    return out;
}

fn cell(x: i32, y: i32) -> f32 {
    let gx = clamp(x, 0, i32(u.grid.x) - 1);
    let gy = clamp(y, 0, i32(u.grid.y) - 1);
    return textureLoad(atlas, vec2<i32>(i32(u.map_origin.x) + gx, i32(u.map_origin.y) + gy), 0).r;
}

fn cubic(x_in: f32) -> f32 {
    let a = -0.75;
    let x = abs(x_in);
    if (x <= 1.0) {
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    } else if (x < 2.0) {
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    }
    return 0.0;
}

fn sample_map(uv: vec2<f32>) -> f32 {
    let g = uv * u.span - vec2<f32>(u.origin);
    if (u.interpolation == 0u) {
        let c = floor(g + 0.5);
        return cell(i32(c.x), i32(c.y));
    }
    let g0 = floor(g);
    let f = g - g0;
    let x0 = i32(g0.x);
    let y0 = i32(g0.y);
    if (u.interpolation == 1u) {
        let top = cell(x0, y0) * (1.0 - f.x) + cell(x0 + 1, y0) * f.x;
        let bottom = cell(x0, y0 + 1) * (1.0 - f.x) + cell(x0 + 1, y0 + 1) * f.x;
        return top * (1.0 - f.y) + bottom * f.y;
    }
    var acc = 0.0;
    for (var dy = -1; dy <= 2; dy++) {
        let wy = cubic(f32(dy) - f.y);
        var row = 0.0;
        for (var dx = -1; dx <= 2; dx++) {
            row += cell(x0 + dx, y0 + dy) * cubic(f32(dx) - f.x);
        }
        acc += row * wy;
    }
    return acc;
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let inside = all(in.uv >= vec2<f32>(0.0)) && all(in.uv <= vec2<f32>(1.0));
    var base = vec4<f32>(0.0, 0.0, 0.0, 0.0);
    if (u.draw_image == 1u) {
        base = vec4<f32>(textureSampleLevel(photo, photo_sampler, in.uv, 0.0).rgb, 1.0);
    }
    if (!inside) {
        return base;
    }
    let value = sample_map(clamp(in.uv, vec2<f32>(0.0), vec2<f32>(1.0)));
    let t = clamp((value - u.lo) / max(u.hi - u.lo, 1e-12), 0.0, 1.0);
    if (t < u.threshold) {
        return base;
    }
    let x = t * (LUT_SIZE - 1.0);
    let i = min(i32(floor(x)), i32(LUT_SIZE) - 2);
    let fi = x - f32(i);
    let c0 = textureLoad(luts, vec2<i32>(i, i32(u.colormap)), 0).rgb;
    let c1 = textureLoad(luts, vec2<i32>(i + 1, i32(u.colormap)), 0).rgb;
    let color = c0 + (c1 - c0) * fi;
    let a = u.opacity;
    if (u.draw_image == 1u) {
        return vec4<f32>(base.rgb * (1.0 - a) + color * a, 1.0);
    }
    // Premultiplied colour for blending over egui's own image.
    return vec4<f32>(color * a, a);
}
