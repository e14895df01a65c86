//! The overlay shader: validated by naga, and rendered off-screen (wgpu on a CPU adapter such as
//! Mesa's lavapipe) against the CPU reference of `colormap` for every colormap and interpolation.
#![cfg(feature = "gui")]

use intr_explorer::gui::gpu::pipeline::{self, AtlasLayout, OverlayPipeline, OverlayUniforms};
use intr_explorer::overlay::colormap::{self, Colormap, GridMap, GridPlacement, Interpolation, OverlayStyle};

#[test]
fn every_shader_validates_with_naga() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let src = std::fs::read_to_string(&path).unwrap();
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&src)));
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
                .validate(&module)
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 1, "no shaders found");
}

#[test]
fn atlas_layout_places_every_map() {
    let a = AtlasLayout::new(9600, 33, 25).unwrap();
    assert!(a.width <= pipeline::MAX_ATLAS_SIDE && a.height <= pipeline::MAX_ATLAS_SIDE);
    let (x, y) = a.origin(9599);
    assert!(x + 33 <= a.width && y + 25 <= a.height);
    let maps: Vec<f32> = (0..3 * 6).map(|v| v as f32).collect(); // three 2×3 maps
    let small = AtlasLayout::new(3, 3, 2).unwrap();
    let tex = small.pack(&maps);
    let (x1, y1) = small.origin(1);
    assert_eq!(tex[(y1 as usize + 1) * small.width as usize + x1 as usize + 2], 11.0);
    assert!(AtlasLayout::new(10_000_000, 33, 25).is_none());
}

fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32
        })
        .collect()
}

#[test]
fn gpu_overlay_matches_the_cpu_reference_for_every_colormap_and_interpolation() {
    let (device, queue, adapter) = pipeline::headless_device().expect("a wgpu adapter (Mesa lavapipe in CI)");
    eprintln!("adapter: {adapter}");
    let pipeline = OverlayPipeline::new(&device, &queue, eframe::egui_wgpu::wgpu::TextureFormat::Rgba8Unorm);
    let (w, h) = (70usize, 45usize);
    let (gw, gh) = (7usize, 5usize);
    // A photo-like gradient with texture, and two attention maps (softmax-like values).
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i * 37 + (i / (w * 3)) * 11) % 256) as u8).collect();
    let rgba: Vec<u8> = rgb.chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    let mut maps = pseudo(2 * gw * gh, 7);
    let total: f32 = maps[..gw * gh].iter().sum();
    maps.iter_mut().for_each(|v| *v /= total);
    let atlas = AtlasLayout::new(2, gw as u32, gh as u32).unwrap();
    let scene = pipeline.scene(&device, &queue, &rgba, (w as u32, h as u32), atlas, &maps);
    let map1 = &maps[gw * gh..];
    let (lo, hi) = colormap::value_range([map1]);
    let mut worst_all = 0;
    // Both placements: the official tiles, and cells centred on multiples of a stride of 10 (the
    // 70 × 45 input spans 7 × 4.5 cells, so the last row is cut at its centre).
    let placements = [GridPlacement::tiles(gw, gh), GridPlacement::receptive((w, h), 10)];
    for (cm, placement) in Colormap::ALL.into_iter().zip(placements.iter().cycle()) {
        let grid = GridMap::new(map1, (gw, gh), *placement);
        for interpolation in Interpolation::ALL {
            let style = OverlayStyle { colormap: cm, interpolation, lo, hi, threshold: 0.15, opacity: 0.6 };
            let u = OverlayUniforms::new(&atlas, 1, *placement, &style, ([0.0, 0.0], [1.0, 1.0]), true);
            let gpu = pipeline::render_offscreen(&device, &queue, &pipeline, &scene, &u, (w as u32, h as u32)).unwrap();
            let cpu = colormap::render_overlay(&rgb, w, h, &grid, &style);
            // A pixel whose normalised value sits on the threshold (within float rounding) may
            // legitimately be cut on one side and not the other; only those may differ more.
            let on_threshold = |px: usize| {
                let (x, y) = (px % w, px / w);
                let v = grid.sample((x as f32 + 0.5) / w as f32, (y as f32 + 0.5) / h as f32, interpolation);
                ((v - lo) / (hi - lo) - style.threshold).abs() < 1e-5
            };
            let mut worst = 0;
            let mut differing = 0;
            for (i, (a, b)) in gpu.iter().zip(&cpu).enumerate() {
                if a != b {
                    differing += 1;
                    if a.abs_diff(*b) > 2 {
                        let (x, y) = ((i / 4) % w, (i / 4) / w);
                        eprintln!(
                            "  pixel ({x}, {y}) channel {}: gpu {a} cpu {b}, on threshold: {}",
                            i % 4,
                            on_threshold(i / 4)
                        );
                    }
                }
                if !on_threshold(i / 4) {
                    worst = worst.max(a.abs_diff(*b));
                }
            }
            eprintln!(
                "{cm:?} {interpolation:?} {placement:?}: max diff {worst}/255, {differing} channel values differ"
            );
            assert!(worst <= 2, "{cm:?} {interpolation:?}: GPU and CPU differ by {worst}/255");
            worst_all = worst_all.max(worst);
        }
    }
    // The overlay is really there: it changes the photo.
    let style = OverlayStyle {
        colormap: Colormap::Turbo,
        interpolation: Interpolation::Nearest,
        lo,
        hi,
        threshold: 0.0,
        opacity: 1.0,
    };
    let u = OverlayUniforms::new(&atlas, 1, placements[1], &style, ([0.0, 0.0], [1.0, 1.0]), true);
    let gpu = pipeline::render_offscreen(&device, &queue, &pipeline, &scene, &u, (w as u32, h as u32)).unwrap();
    let photo_kept = gpu.chunks(4).zip(rgb.chunks(3)).filter(|(g, p)| &g[..3] == *p).count();
    assert!(photo_kept < w * h / 20, "opaque overlay left {photo_kept} photo pixels unchanged");
}

#[test]
fn an_exported_png_figure_shows_the_pixels_of_the_gpu_view() {
    use intr_explorer::figure::{self, FigureOptions, View};
    use intr_explorer::image::decode::RgbImage;
    use intr_explorer::intr::IntrOutput;
    use intr_explorer::overlay::Look;
    use intr_explorer::overlay::range::{style, value_range};

    let (device, queue, _) = pipeline::headless_device().expect("a wgpu adapter (Mesa lavapipe in CI)");
    let pipeline = OverlayPipeline::new(&device, &queue, eframe::egui_wgpu::wgpu::TextureFormat::Rgba8Unorm);
    let (w, h, gw, gh) = (96usize, 64usize, 6usize, 4usize);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i * 29 + (i / (w * 3)) * 7) % 256) as u8).collect();
    let photo = RgbImage { width: w, height: h, data: rgb.clone() };
    // One layer, two heads, two classes.
    let attention = pseudo(2 * 2 * gw * gh, 3);
    let output = IntrOutput {
        logits: vec![0.5, 1.5],
        attention,
        layers: 1,
        heads: 2,
        classes: 2,
        grid: (gh, gw),
        // An input of 4 × the photo at stride 64: cells centred on multiples of 16 photo pixels.
        input: (4 * w, 4 * h),
        stride: 64,
        timings: Default::default(),
    };
    let names = vec!["Bunting & Co".to_string(), "Finch <test>".to_string()];
    for (look, head) in [
        (Look::default(), Some(1)),
        (
            Look {
                colormap: Colormap::Turbo,
                interpolation: Interpolation::Bicubic,
                threshold: 0.3,
                opacity: 0.8,
                ..Look::default()
            },
            None,
        ),
    ] {
        let view = View::Single { class: 1, head };
        let opts = FigureOptions { look, layer: 0, labels: true, letters: false, ..Default::default() };
        let fig = figure::compose(&photo, &output, &names, &view, &opts, Default::default());
        let png = intr_explorer::figure::to_png(&fig, 96.0).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgba8();
        let rect = intr_explorer::figure::layout(&fig).panel_rects[0];

        // The same view through the window's shader.
        let map = output.map_values(0, 1, head);
        let style = style(&look, value_range(&output, 0, look.normalization, (1, head), &[]));
        let atlas = AtlasLayout::new(1, gw as u32, gh as u32).unwrap();
        let rgba: Vec<u8> = rgb.chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        let scene = pipeline.scene(&device, &queue, &rgba, (w as u32, h as u32), atlas, &map);
        let u = OverlayUniforms::new(&atlas, 0, output.placement(), &style, ([0.0, 0.0], [1.0, 1.0]), true);
        let gpu = pipeline::render_offscreen(&device, &queue, &pipeline, &scene, &u, (w as u32, h as u32)).unwrap();

        let (x0, y0) = (rect.0.round() as u32, rect.1.round() as u32);
        assert_eq!((rect.2.round() as usize, rect.3.round() as usize), (w, h), "panel drawn at its native size");
        let mut worst = 0;
        for y in 0..h {
            for x in 0..w {
                let p = img.get_pixel(x0 + x as u32, y0 + y as u32);
                for c in 0..3 {
                    worst = worst.max(p[c].abs_diff(gpu[(y * w + x) * 4 + c]));
                }
            }
        }
        eprintln!("{look:?}: exported PNG vs GPU view, max diff {worst}/255");
        assert!(worst <= 2, "exported figure differs from the GPU view by {worst}/255");
    }
}
