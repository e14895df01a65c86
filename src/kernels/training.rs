//! CPU kernels with backward passes for training's hottest operations: the gather of a
//! convolution (im2col, and [`conv2d`] on top of it), batch norm on batch statistics and the stem's
//! max-pool. Built from candle's generic views and
//! element-wise operations, each cost many full passes over the activations, single-threaded, and
//! as many freshly zeroed buffers; these take one pass each way, spread over the cores.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Error, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// The contiguous f32 values of a storage.
fn values<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("{op}: f32 input expected") };
    let (a, b) = l.contiguous_offsets().ok_or_else(|| Error::Msg(format!("{op}: contiguous input expected")))?;
    Ok(&v[a..b])
}

/// Runs `f` on the values of a CPU f32 tensor (made contiguous first).
fn with_values<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => Ok(f(values(s, layout, op)?)),
        _ => candle_core::bail!("{op}: CPU tensor expected"),
    }
}

/// Geometry of a square-kernel 2-D convolution over a channels-first activation (C, B, H, W).
#[derive(Debug, Clone, Copy)]
pub struct ConvGeometry {
    pub c: usize,
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub dilation: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeometry {
    /// The geometry of a `k × k` kernel over `(c, b, h, w)`, PyTorch's `stride`/`padding`/`dilation`.
    #[must_use]
    pub fn new(
        (c, b, h, w): (usize, usize, usize, usize),
        k: usize,
        stride: usize,
        pad: usize,
        dilation: usize,
    ) -> Self {
        let ho = (h + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
        let wo = (w + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
        Self { c, b, h, w, k, stride, pad, dilation, ho, wo }
    }

    /// Columns of the gathered matrix: one per output position.
    fn positions(&self) -> usize {
        self.b * self.ho * self.wo
    }

    /// The input row (or column) under output `o` for kernel offset `t`, if inside the image.
    fn source(&self, o: usize, t: usize, len: usize) -> Option<usize> {
        let i = (o * self.stride + t * self.dilation).checked_sub(self.pad)?;
        (i < len).then_some(i)
    }

    /// Calls `f(input index, column index)` for every pair of row `(tap, c)`'s gather, where the
    /// input index is within channel `c`'s (B, H, W) block.
    fn for_each_tap(&self, tap: usize, mut f: impl FnMut(usize, usize)) {
        let (ky, kx) = (tap / self.k, tap % self.k);
        for b in 0..self.b {
            for oy in 0..self.ho {
                let Some(iy) = self.source(oy, ky, self.h) else { continue };
                let row_in = (b * self.h + iy) * self.w;
                let row_out = (b * self.ho + oy) * self.wo;
                for ox in 0..self.wo {
                    if let Some(ix) = self.source(ox, kx, self.w) {
                        f(row_in + ix, row_out + ox);
                    }
                }
            }
        }
    }
}

/// im2col: (C, B, H, W) → (k·k·C, B·Ho·Wo), rows tap-major (row = (ky·k + kx)·C + c), zero where
/// the kernel reaches into the padding.
struct Im2Col(ConvGeometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = values(s, l, self.name())?;
        if x.len() != g.c * g.b * g.h * g.w {
            candle_core::bail!("im2col: input of {} values, geometry expects {}", x.len(), g.c * g.b * g.h * g.w);
        }
        let n = g.positions();
        let plane = g.b * g.h * g.w;
        let mut out = vec![0f32; g.k * g.k * g.c * n];
        out.par_chunks_mut(n).enumerate().for_each(|(row, dst)| {
            let (tap, c) = (row / g.c, row % g.c);
            let src = &x[c * plane..(c + 1) * plane];
            g.for_each_tap(tap, |i, o| dst[o] = src[i]);
        });
        Ok((CpuStorage::F32(out), Shape::from((g.k * g.k * g.c, n))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0))?))
    }
}

/// The adjoint of [`Im2Col`]: sums every column entry back onto the input it was gathered from.
struct Col2Im(ConvGeometry);

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let cols = values(s, l, self.name())?;
        let n = g.positions();
        if cols.len() != g.k * g.k * g.c * n {
            candle_core::bail!("col2im: {} values, geometry expects {}", cols.len(), g.k * g.k * g.c * n);
        }
        let plane = g.b * g.h * g.w;
        let mut out = vec![0f32; g.c * plane];
        out.par_chunks_mut(plane).enumerate().for_each(|(c, dst)| {
            for tap in 0..g.k * g.k {
                let src = &cols[(tap * g.c + c) * n..(tap * g.c + c + 1) * n];
                g.for_each_tap(tap, |i, o| dst[i] += src[o]);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((g.c, g.b, g.h, g.w))))
    }
}

/// The gathered matrix of a convolution over `x` (C, B, H, W): (k·k·C, B·Ho·Wo), differentiable.
pub fn im2col(x: &Tensor, g: ConvGeometry) -> Result<Tensor> {
    if g.k == 1 && g.stride == 1 && g.pad == 0 {
        return x.reshape((g.c, g.positions()));
    }
    x.contiguous()?.apply_op1(Im2Col(g))
}

/// 3×3 max-pool, stride 2, padding 1 (the ResNet stem) of (C, B, H, W); the gradient goes to the
/// first maximum of each window in row-major order, as PyTorch's.
struct MaxPool3x3S2 {
    dims: (usize, usize, usize, usize),
}

impl MaxPool3x3S2 {
    fn out_side(n: usize) -> usize {
        (n + 2 - 3) / 2 + 1
    }

    /// For every output of plane `x` (H × W): the index of the maximum within the plane.
    fn argmax(&self, x: &[f32], mut f: impl FnMut(usize, usize)) {
        let (_, _, h, w) = self.dims;
        let (ho, wo) = (Self::out_side(h), Self::out_side(w));
        for oy in 0..ho {
            for ox in 0..wo {
                let mut best: Option<(usize, f32)> = None;
                for iy in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h) {
                    for ix in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w) {
                        let v = x[iy * w + ix];
                        if best.is_none_or(|(_, b)| v > b) {
                            best = Some((iy * w + ix, v));
                        }
                    }
                }
                if let Some((i, _)) = best {
                    f(oy * wo + ox, i);
                }
            }
        }
    }
}

impl CustomOp1 for MaxPool3x3S2 {
    fn name(&self) -> &'static str {
        "max-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, b, h, w) = self.dims;
        let x = values(s, l, self.name())?;
        let (ho, wo) = (Self::out_side(h), Self::out_side(w));
        let mut out = vec![0f32; c * b * ho * wo];
        out.par_chunks_mut(ho * wo).zip(x.par_chunks(h * w)).for_each(|(dst, src)| {
            self.argmax(src, |o, i| dst[o] = src[i]);
        });
        Ok((CpuStorage::F32(out), Shape::from((c, b, ho, wo))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (c, b, h, w) = self.dims;
        let (ho, wo) = (Self::out_side(h), Self::out_side(w));
        let dx = with_values(arg, self.name(), |x| {
            with_values(grad, self.name(), |dy| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(h * w)
                    .zip(x.par_chunks(h * w).zip(dy.par_chunks(ho * wo)))
                    .for_each(|(dst, (src, g))| self.argmax(src, |o, i| dst[i] += g[o]));
                dx
            })
        })??;
        Ok(Some(Tensor::from_vec(dx, (c, b, h, w), arg.device())?))
    }
}

/// 3×3 max-pool, stride 2, padding 1 of a channels-first activation (C, B, H, W), differentiable.
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let dims = x.dims4()?;
    x.apply_op1(MaxPool3x3S2 { dims })
}

/// Per-channel mean and biased variance of a channels-first activation (C, …).
pub fn channel_stats(x: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = x.dim(0)?;
    with_values(x, "batch statistics", |v| {
        let m = v.len() / c.max(1);
        v.par_chunks(m.max(1))
            .map(|ch| {
                let mean = ch.iter().map(|&a| f64::from(a)).sum::<f64>() / m as f64;
                let var = ch.iter().map(|&a| (f64::from(a) - mean).powi(2)).sum::<f64>() / m as f64;
                (mean as f32, var as f32)
            })
            .unzip()
    })
}

/// Batch norm of (C, …) on given batch statistics: `(x − mean)·invstd·weight + bias`, with the
/// full backward pass of batch statistics (the gradient flows through mean and variance too).
struct BatchNorm {
    mean: Vec<f32>,
    invstd: Vec<f32>,
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = values(s1, l1, self.name())?;
        let (w, b) = (values(s2, l2, self.name())?, values(s3, l3, self.name())?);
        let c = self.mean.len();
        if w.len() != c || b.len() != c || x.len() % c != 0 {
            candle_core::bail!("batch-norm: {} channels, weight {}, bias {}", c, w.len(), b.len());
        }
        let m = x.len() / c;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(m).zip(x.par_chunks(m)).enumerate().for_each(|(ch, (dst, src))| {
            let scale = self.invstd[ch] * w[ch];
            let shift = b[ch] - self.mean[ch] * scale;
            dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s * scale + shift);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = self.mean.len();
        let w_values = with_values(w, self.name(), <[f32]>::to_vec)?;
        let grad = grad.contiguous()?;
        let (dx, sums) = with_values(x, self.name(), |xv| {
            with_values(&grad, self.name(), |dy| {
                let m = xv.len() / c;
                let mut dx = vec![0f32; xv.len()];
                let sums: Vec<(f32, f32)> = dx
                    .par_chunks_mut(m)
                    .zip(xv.par_chunks(m).zip(dy.par_chunks(m)))
                    .enumerate()
                    .map(|(ch, (dst, (xs, dys)))| {
                        let (mean, invstd) = (self.mean[ch], self.invstd[ch]);
                        let (mut sum_dy, mut sum_dy_xhat) = (0f64, 0f64);
                        for (&xv, &g) in xs.iter().zip(dys) {
                            sum_dy += f64::from(g);
                            sum_dy_xhat += f64::from(g * (xv - mean) * invstd);
                        }
                        let k = w_values[ch] * invstd;
                        let (a, bb) = ((sum_dy / m as f64) as f32, (sum_dy_xhat / m as f64) as f32);
                        for ((d, &xv), &g) in dst.iter_mut().zip(xs).zip(dys) {
                            *d = k * (g - a - (xv - mean) * invstd * bb);
                        }
                        (sum_dy_xhat as f32, sum_dy as f32)
                    })
                    .collect();
                (dx, sums)
            })
        })??;
        let (dw, db): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, c, dev)?),
            Some(Tensor::from_vec(db, c, dev)?),
        ))
    }
}

/// Batch norm on batch statistics of a channels-first activation (C, …), differentiable in `x`,
/// `weight` and `bias`; returns the output and the (mean, biased variance) it used.
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
    let x = x.contiguous()?;
    let (mean, var) = channel_stats(&x)?;
    let invstd = var.iter().map(|&v| (f64::from(v) + eps).sqrt().recip() as f32).collect();
    let y = x.apply_op3(weight, bias, BatchNorm { mean: mean.clone(), invstd })?;
    Ok((y, mean, var))
}

/// 2-D convolution (no bias) of a channels-first activation (C, B, H, W) with (O, C, k, k) →
/// (O, B, Ho, Wo): the gathered matrix (see [`im2col`]) times one matmul.
/// `stride`, `padding`, `dilation` as PyTorch.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize, dilation: usize) -> Result<Tensor> {
    let (o, c, k, _) = w.dims4()?;
    let g = ConvGeometry::new(x.dims4()?, k, stride, padding, dilation);
    let cols = im2col(x, g)?;
    // (O, C, k, k) → (O, k·k·C), tap-major as the gathered rows.
    let wm = w.permute((0, 2, 3, 1))?.contiguous()?.reshape((o, k * k * c))?;
    wm.matmul(&cols)?.reshape((o, g.b, g.ho, g.wo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device, Var};

    /// Values uniform in [-1, 1) from a seeded xorshift generator.
    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| next()).collect::<Vec<f32>>(), shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Every `s`-th element of dimension `dim` (length `n` taken from offset `start`), via reshape.
    fn strided(x: &Tensor, dim: usize, start: usize, n: usize, s: usize) -> Result<Tensor> {
        if s == 1 {
            return x.narrow(dim, start, n);
        }
        let v = x.narrow(dim, start, n * s)?;
        let mut shape = v.dims().to_vec();
        shape[dim] = n;
        shape.insert(dim + 1, s);
        v.contiguous()?.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
    }

    /// 3×3 max-pool, stride 2, padding 1 as a maximum over nine strided views, from candle's
    /// differentiable operations: the reference for [`max_pool_3x3_s2`].
    fn reference_max_pool(x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (ho, wo) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
        // Padding with a very negative value never wins the maximum (inputs follow a ReLU: ≥ 0).
        let xp = x.pad_with_zeros(2, 1, 2)?.pad_with_zeros(3, 1, 2)?;
        let pad_mask = Tensor::ones((h, w), x.dtype(), x.device())?
            .pad_with_zeros(0, 1, 2)?
            .pad_with_zeros(1, 1, 2)?
            .affine(1e9, -1e9)?;
        let xp = xp.broadcast_add(&pad_mask)?;
        let mut out: Option<Tensor> = None;
        for dy in 0..3 {
            for dx in 0..3 {
                let v = strided(&strided(&xp, 2, dy, ho, 2)?, 3, dx, wo, 2)?;
                out = Some(match out {
                    None => v,
                    Some(o) => o.maximum(&v)?,
                });
            }
        }
        out.ok_or_else(|| candle_core::Error::Msg("empty pool".into()))
    }

    /// im2col from candle's own views: pad, then one strided window per tap.
    fn reference_im2col(x: &Tensor, g: ConvGeometry) -> Tensor {
        let xp =
            x.pad_with_zeros(2, g.pad, g.pad + g.stride).unwrap().pad_with_zeros(3, g.pad, g.pad + g.stride).unwrap();
        let mut rows = Vec::new();
        for ky in 0..g.k {
            for kx in 0..g.k {
                let mut taps = Vec::new();
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let (iy, ix) = (oy * g.stride + ky * g.dilation, ox * g.stride + kx * g.dilation);
                        taps.push(xp.narrow(2, iy, 1).unwrap().narrow(3, ix, 1).unwrap());
                    }
                }
                // (C, B, Ho·Wo) → (C, B·Ho·Wo)
                let t = Tensor::cat(&taps, 3).unwrap().reshape((g.c, g.b, g.ho * g.wo)).unwrap();
                rows.push(t.reshape((g.c, g.b * g.ho * g.wo)).unwrap());
            }
        }
        Tensor::cat(&rows, 0).unwrap()
    }

    #[test]
    fn im2col_matches_views_and_col2im_is_its_adjoint() {
        for (k, stride, pad, dil) in [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2), (1, 2, 0, 1), (7, 2, 3, 1)] {
            let x = rand(&[3, 2, 9, 8], 1);
            let g = ConvGeometry::new(x.dims4().unwrap(), k, stride, pad, dil);
            let cols = im2col(&x, g).unwrap();
            assert_eq!(max_diff(&cols, &reference_im2col(&x, g)), 0.0, "k {k} s {stride} p {pad} d {dil}");
            // <im2col(x), y> == <x, col2im(y)> for any y.
            let y = rand(cols.dims(), 2);
            let back = y.apply_op1_no_bwd(&Col2Im(g)).unwrap();
            let lhs = (&cols * &y).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            let rhs = (&x * &back).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "adjoint: {lhs} vs {rhs}");
        }
    }

    #[test]
    fn max_pool_matches_candle_views_forward_and_backward() {
        let x = Var::from_tensor(&rand(&[2, 3, 9, 8], 7).relu().unwrap()).unwrap();
        let probe = rand(&[2, 3, 5, 4], 8);
        let ours = max_pool_3x3_s2(x.as_tensor()).unwrap();
        let theirs = reference_max_pool(x.as_tensor()).unwrap();
        assert_eq!(max_diff(&ours, &theirs), 0.0);
        let g1 = (&ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&theirs * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        // Random inputs have no ties, so both routes send each gradient to the same input.
        let (a, b) = (g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap());
        assert!(max_diff(a, b) < 1e-6, "{}", max_diff(a, b));
    }

    #[test]
    fn batch_norm_gradients_match_candle_autograd() {
        let x = Var::from_tensor(&rand(&[4, 3, 5, 6], 3)).unwrap();
        let w = Var::from_tensor(&(rand(&[4], 4) + 1.0).unwrap()).unwrap();
        let b = Var::from_tensor(&rand(&[4], 5)).unwrap();
        let probe = rand(&[4, 3, 5, 6], 6);
        let eps = 1e-5;

        let (y, mean, var) = batch_norm_train(x.as_tensor(), w.as_tensor(), b.as_tensor(), eps).unwrap();
        let ours = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();

        // The same function from candle's differentiable operations.
        let x2 = x.as_tensor().reshape((4, ())).unwrap();
        let m = x2.mean_keepdim(D::Minus1).unwrap();
        let centred = x2.broadcast_sub(&m).unwrap();
        let v = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let y_ref = centred
            .broadcast_div(&(v.clone() + eps).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&w.as_tensor().reshape((4, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.as_tensor().reshape((4, 1)).unwrap())
            .unwrap()
            .reshape((4, 3, 5, 6))
            .unwrap();
        let theirs = (&y_ref * &probe).unwrap().sum_all().unwrap().backward().unwrap();

        assert!(max_diff(&y, &y_ref) < 1e-5);
        let m_ref = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let v_ref = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..4 {
            assert!((mean[i] - m_ref[i]).abs() < 1e-6 && (var[i] - v_ref[i]).abs() < 1e-6);
        }
        for var in [&x, &w, &b] {
            let (a, r) = (ours.get(var.as_tensor()).unwrap(), theirs.get(var.as_tensor()).unwrap());
            assert!(max_diff(a, r) < 1e-4, "gradient differs by {}", max_diff(a, r));
        }
    }
}
