//! egui paint callbacks that draw attention overlays with [`OverlayPipeline`]: each frame sends only
//! a small uniform block; the scenes (photo + atlas) live in the renderer's callback resources,
//! uploaded once per result.

use std::collections::HashMap;

use eframe::egui;
use eframe::egui_wgpu::{self, wgpu};

use super::pipeline::{AtlasLayout, OverlayPipeline, OverlayScene, OverlayUniforms};

/// Everything the callbacks need, stored in `egui_wgpu::Renderer::callback_resources`.
pub struct OverlayResources {
    pub pipeline: OverlayPipeline,
    /// Scenes by key (the analysis id).
    pub scenes: HashMap<u64, OverlayScene>,
}

impl OverlayResources {
    /// Installs the pipeline for the window's target format (once, at start-up).
    pub fn install(rs: &egui_wgpu::RenderState) {
        let pipeline = OverlayPipeline::new(&rs.device, &rs.queue, rs.target_format);
        rs.renderer.write().callback_resources.insert(Self { pipeline, scenes: HashMap::new() });
    }

    /// Uploads a scene under `key`, keeping at most `keep` scenes (oldest keys dropped first).
    pub fn upload(
        rs: &egui_wgpu::RenderState,
        key: u64,
        rgba: &[u8],
        size: (u32, u32),
        atlas: AtlasLayout,
        maps: &[f32],
        keep: usize,
    ) {
        let mut renderer = rs.renderer.write();
        let Some(res) = renderer.callback_resources.get_mut::<Self>() else { return };
        let scene = res.pipeline.scene(&rs.device, &rs.queue, rgba, size, atlas, maps);
        res.scenes.insert(key, scene);
        while res.scenes.len() > keep.max(1) {
            let Some(&oldest) = res.scenes.keys().min() else { break };
            res.scenes.remove(&oldest);
        }
    }

    /// Frees the scene under `key` (its photo was closed or analysed again).
    pub fn release(rs: &egui_wgpu::RenderState, key: u64) {
        if let Some(res) = rs.renderer.write().callback_resources.get_mut::<Self>() {
            res.scenes.remove(&key);
        }
    }

    /// Whether the scene under `key` is on the GPU.
    #[must_use]
    pub fn has(rs: &egui_wgpu::RenderState, key: u64) -> bool {
        rs.renderer.read().callback_resources.get::<Self>().is_some_and(|r| r.scenes.contains_key(&key))
    }

    /// How many scenes are on the GPU.
    #[must_use]
    pub fn scene_count(rs: &egui_wgpu::RenderState) -> usize {
        rs.renderer.read().callback_resources.get::<Self>().map_or(0, |r| r.scenes.len())
    }
}

/// One overlay draw. `slot` must be unique among the overlays of a frame.
pub struct OverlayCallback {
    pub scene: u64,
    pub slot: usize,
    pub uniforms: OverlayUniforms,
}

impl OverlayCallback {
    /// The egui paint callback drawing this overlay into `rect`.
    #[must_use]
    pub fn paint(self, rect: egui::Rect) -> egui::PaintCallback {
        egui_wgpu::Callback::new_paint_callback(rect, self)
    }
}

impl egui_wgpu::CallbackTrait for OverlayCallback {
    fn prepare(
        &self,
        _device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(res) = resources.get::<OverlayResources>() {
            res.pipeline.write_slot(queue, self.slot, &self.uniforms);
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        let Some(res) = resources.get::<OverlayResources>() else { return };
        if let Some(scene) = res.scenes.get(&self.scene) {
            res.pipeline.draw(pass, scene, self.slot);
        }
    }
}
