//! The attention-overlay pipeline (`shaders/overlay.wgsl`): GPU resources, uploads and draws.
//!
//! Knows textures, LUTs and uniforms — not classes, heads or layers. All maps of one result are
//! uploaded once into an R32Float atlas; a draw only selects a map by its atlas origin, so switching
//! class, head, layer, colormap or opacity is a uniform update.

use eframe::egui_wgpu::wgpu;
use wgpu::util::DeviceExt as _;

use crate::overlay::colormap::{Colormap, GridPlacement, LUT_SIZE, OverlayStyle};

/// The shader source.
pub const SHADER: &str = include_str!("../../../shaders/overlay.wgsl");
/// Largest atlas side in texels (wgpu's default `max_texture_dimension_2d`).
pub const MAX_ATLAS_SIDE: u32 = 8192;
/// Uniform slots available per frame (one per overlay drawn).
pub const MAX_DRAWS: usize = 512;
/// Dynamic-offset stride of the uniform slots.
const SLOT: u64 = 256;

/// Per-draw parameters. NOTE: keep in sync with `Uniforms` in `shaders/overlay.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct OverlayUniforms {
    pub uv_offset: [f32; 2],
    pub uv_scale: [f32; 2],
    pub map_origin: [u32; 2],
    pub grid: [u32; 2],
    pub span: [f32; 2],
    pub lo: f32,
    pub hi: f32,
    pub threshold: f32,
    pub opacity: f32,
    pub interpolation: u32,
    pub colormap: u32,
    pub draw_image: u32,
    pub origin: f32,
}

impl OverlayUniforms {
    /// Uniforms that show map `index` of `atlas`, placed over the image by `placement`, with
    /// `style` over the image region `uv_offset + [0,1]² · uv_scale`.
    #[must_use]
    pub fn new(
        atlas: &AtlasLayout,
        index: usize,
        placement: GridPlacement,
        style: &OverlayStyle,
        uv: ([f32; 2], [f32; 2]),
        draw_image: bool,
    ) -> Self {
        let (x, y) = atlas.origin(index);
        Self {
            uv_offset: uv.0,
            uv_scale: uv.1,
            map_origin: [x, y],
            grid: [atlas.gw, atlas.gh],
            span: placement.span,
            lo: style.lo,
            hi: style.hi,
            threshold: style.threshold,
            opacity: style.opacity,
            interpolation: style.interpolation.code(),
            colormap: colormap_row(style.colormap),
            draw_image: u32::from(draw_image),
            origin: placement.origin,
        }
    }
}

/// Row of `colormap` in the LUT texture.
#[must_use]
pub fn colormap_row(colormap: Colormap) -> u32 {
    Colormap::ALL.iter().position(|&c| c == colormap).unwrap_or(0) as u32
}

/// Where each map lies in the atlas: `per_row` maps of `gw × gh` texels side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtlasLayout {
    pub gw: u32,
    pub gh: u32,
    pub count: usize,
    pub per_row: u32,
    pub width: u32,
    pub height: u32,
}

impl AtlasLayout {
    /// Layout for `count` maps of `gw × gh`, or `None` if they cannot fit in one texture.
    #[must_use]
    pub fn new(count: usize, gw: u32, gh: u32) -> Option<Self> {
        if gw == 0 || gh == 0 || count == 0 || gw > MAX_ATLAS_SIDE {
            return None;
        }
        let per_row = (MAX_ATLAS_SIDE / gw).min(u32::try_from(count).ok()?).max(1);
        let rows = u32::try_from(count.div_ceil(per_row as usize)).ok()?;
        let height = rows.checked_mul(gh)?;
        (height <= MAX_ATLAS_SIDE).then_some(Self { gw, gh, count, per_row, width: per_row * gw, height })
    }

    /// Top-left texel of map `index`.
    #[must_use]
    pub fn origin(&self, index: usize) -> (u32, u32) {
        let i = index as u32;
        ((i % self.per_row) * self.gw, (i / self.per_row) * self.gh)
    }

    /// The atlas texels (row-major f32) for `maps` (`count` consecutive `gh × gw` maps).
    #[must_use]
    pub fn pack(&self, maps: &[f32]) -> Vec<f32> {
        let (gw, gh) = (self.gw as usize, self.gh as usize);
        let mut texels = vec![0.0f32; (self.width * self.height) as usize];
        for k in 0..self.count {
            let (x0, y0) = self.origin(k);
            for y in 0..gh {
                let src = &maps[(k * gh + y) * gw..(k * gh + y + 1) * gw];
                let dst = (y0 as usize + y) * self.width as usize + x0 as usize;
                texels[dst..dst + gw].copy_from_slice(src);
            }
        }
        texels
    }
}

/// Device-wide resources: pipeline, layouts, sampler, LUTs, uniform slots.
pub struct OverlayPipeline {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    luts: wgpu::TextureView,
    uniforms: wgpu::Buffer,
}

/// One photo and its atlas of maps, bound for drawing.
pub struct OverlayScene {
    pub atlas: AtlasLayout,
    pub image_size: (u32, u32),
    bind_group: wgpu::BindGroup,
}

fn texture_2d(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    label: &str,
    size: (u32, u32),
    format: wgpu::TextureFormat,
    data: &[u8],
) -> wgpu::Texture {
    device.create_texture_with_data(
        queue,
        &wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d { width: size.0, height: size.1, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        },
        wgpu::util::TextureDataOrder::LayerMajor,
        data,
    )
}

impl OverlayPipeline {
    /// Builds the pipeline for render targets of `format`.
    #[must_use]
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue, format: wgpu::TextureFormat) -> Self {
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("overlay.wgsl"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let tex = |binding, filterable| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                sample_type: wgpu::TextureSampleType::Float { filterable },
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("overlay"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::VERTEX_FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: wgpu::BufferSize::new(std::mem::size_of::<OverlayUniforms>() as u64),
                    },
                    count: None,
                },
                tex(1, true),
                wgpu::BindGroupLayoutEntry {
                    binding: 2,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                    count: None,
                },
                tex(3, false),
                tex(4, false),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("overlay"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("overlay"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                buffers: &[],
            },
            primitive: wgpu::PrimitiveState { topology: wgpu::PrimitiveTopology::TriangleStrip, ..Default::default() },
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                targets: &[Some(wgpu::ColorTargetState {
                    format,
                    // egui's framebuffer holds premultiplied colours.
                    blend: Some(wgpu::BlendState::PREMULTIPLIED_ALPHA_BLENDING),
                    write_mask: wgpu::ColorWrites::ALL,
                })],
            }),
            multiview_mask: None,
            cache: None,
        });
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("photo"),
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            address_mode_u: wgpu::AddressMode::ClampToEdge,
            address_mode_v: wgpu::AddressMode::ClampToEdge,
            ..Default::default()
        });
        // One LUT row per colormap; padded to 8 rows so the texture is never a degenerate size.
        let rows = Colormap::ALL.len().max(8);
        let mut lut_bytes = vec![0u8; LUT_SIZE * rows * 4];
        for (r, cm) in Colormap::ALL.iter().enumerate() {
            for (i, c) in cm.lut().iter().enumerate() {
                let o = (r * LUT_SIZE + i) * 4;
                lut_bytes[o..o + 3].copy_from_slice(c);
                lut_bytes[o + 3] = 255;
            }
        }
        let luts = texture_2d(
            device,
            queue,
            "colormap LUTs",
            (LUT_SIZE as u32, rows as u32),
            wgpu::TextureFormat::Rgba8Unorm,
            &lut_bytes,
        )
        .create_view(&wgpu::TextureViewDescriptor::default());
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("overlay uniforms"),
            size: SLOT * MAX_DRAWS as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Self { pipeline, layout, sampler, luts, uniforms }
    }

    /// Uploads a photo (RGBA8, sRGB values as stored) and `atlas.count` maps of `gh × gw` values.
    #[must_use]
    pub fn scene(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        rgba: &[u8],
        size: (u32, u32),
        atlas: AtlasLayout,
        maps: &[f32],
    ) -> OverlayScene {
        let photo = texture_2d(device, queue, "photo", size, wgpu::TextureFormat::Rgba8Unorm, rgba);
        let texels = atlas.pack(maps);
        let atlas_tex = texture_2d(
            device,
            queue,
            "attention atlas",
            (atlas.width, atlas.height),
            wgpu::TextureFormat::R32Float,
            bytemuck::cast_slice(&texels),
        );
        let view = |t: &wgpu::Texture| t.create_view(&wgpu::TextureViewDescriptor::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("overlay scene"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &self.uniforms,
                        offset: 0,
                        size: wgpu::BufferSize::new(std::mem::size_of::<OverlayUniforms>() as u64),
                    }),
                },
                wgpu::BindGroupEntry { binding: 1, resource: wgpu::BindingResource::TextureView(&view(&photo)) },
                wgpu::BindGroupEntry { binding: 2, resource: wgpu::BindingResource::Sampler(&self.sampler) },
                wgpu::BindGroupEntry { binding: 3, resource: wgpu::BindingResource::TextureView(&view(&atlas_tex)) },
                wgpu::BindGroupEntry { binding: 4, resource: wgpu::BindingResource::TextureView(&self.luts) },
            ],
        });
        OverlayScene { atlas, image_size: size, bind_group }
    }

    /// Writes the uniforms of every draw of this frame (slot i for draw i).
    pub fn write_uniforms(&self, queue: &wgpu::Queue, draws: &[OverlayUniforms]) {
        let mut bytes = vec![0u8; draws.len().min(MAX_DRAWS) * SLOT as usize];
        for (i, d) in draws.iter().take(MAX_DRAWS).enumerate() {
            let o = i * SLOT as usize;
            bytes[o..o + std::mem::size_of::<OverlayUniforms>()].copy_from_slice(bytemuck::bytes_of(d));
        }
        if !bytes.is_empty() {
            queue.write_buffer(&self.uniforms, 0, &bytes);
        }
    }

    /// Writes the uniforms of one draw slot.
    pub fn write_slot(&self, queue: &wgpu::Queue, slot: usize, uniforms: &OverlayUniforms) {
        let slot = slot.min(MAX_DRAWS - 1) as u64;
        queue.write_buffer(&self.uniforms, slot * SLOT, bytemuck::bytes_of(uniforms));
    }

    /// Records draw `slot` (its uniforms written by [`Self::write_uniforms`]) into `pass`.
    pub fn draw(&self, pass: &mut wgpu::RenderPass<'_>, scene: &OverlayScene, slot: usize) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &scene.bind_group, &[(slot.min(MAX_DRAWS - 1) as u64 * SLOT) as u32]);
        pass.draw(0..4, 0..1);
    }
}

/// A headless device, preferring a CPU adapter (lavapipe/llvmpipe) so results are reproducible.
pub fn headless_device() -> Result<(wgpu::Device, wgpu::Queue, String), String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(|a| match a.get_info().device_type {
        wgpu::DeviceType::Cpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::DiscreteGpu => 2,
        _ => 3,
    });
    let adapter = adapters.into_iter().next().ok_or("no graphics adapter (install Mesa's Vulkan drivers: lavapipe)")?;
    let info = adapter.get_info();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
        .map_err(|e| format!("cannot open {}: {e}", info.name))?;
    Ok((device, queue, format!("{} ({:?})", info.name, info.backend)))
}

/// Renders one overlay over the whole `size` target and returns its RGBA8 pixels.
pub fn render_offscreen(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    pipeline: &OverlayPipeline,
    scene: &OverlayScene,
    uniforms: &OverlayUniforms,
    size: (u32, u32),
) -> Result<Vec<u8>, String> {
    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("offscreen"),
        size: wgpu::Extent3d { width: size.0, height: size.1, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let view = target.create_view(&wgpu::TextureViewDescriptor::default());
    pipeline.write_uniforms(queue, std::slice::from_ref(uniforms));
    let padded_row = (size.0 * 4).div_ceil(256) * 256;
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: u64::from(padded_row * size.1),
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("offscreen") });
    {
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("offscreen"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color::TRANSPARENT),
                    store: wgpu::StoreOp::Store,
                },
            })],
            depth_stencil_attachment: None,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        pipeline.draw(&mut pass, scene, 0);
    }
    encoder.copy_texture_to_buffer(
        wgpu::TexelCopyTextureInfo {
            texture: &target,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        wgpu::TexelCopyBufferInfo {
            buffer: &readback,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(padded_row),
                rows_per_image: Some(size.1),
            },
        },
        wgpu::Extent3d { width: size.0, height: size.1, depth_or_array_layers: 1 },
    );
    let index = queue.submit([encoder.finish()]);
    let slice = readback.slice(..);
    slice.map_async(wgpu::MapMode::Read, |_| {});
    let _ = device.poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None });
    let data = slice.get_mapped_range().map_err(|e| format!("cannot read the rendered image back: {e:?}"))?;
    let mut out = Vec::with_capacity((size.0 * size.1 * 4) as usize);
    for row in 0..size.1 as usize {
        let start = row * padded_row as usize;
        out.extend_from_slice(&data[start..start + size.0 as usize * 4]);
    }
    Ok(out)
}
