//! Fast channels-last 3×3 im2col (zero padding 1) as a candle custom op with an exact backward
//! (col2im), so that a convolution is im2col + one matmul in both directions. candle's own conv2d
//! backward goes through conv_transpose2d, which is slow on the CPU, and an im2col built from
//! `narrow` + `stack` spends most of its time in strided copies.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

fn dims(layout: &Layout, name: &str) -> candle_core::Result<(usize, usize, usize, usize, usize)> {
    let (b, h, w, c) = layout.shape().dims4()?;
    let Some((start, _)) = layout.contiguous_offsets() else {
        candle_core::bail!("{name}: input must be contiguous")
    };
    Ok((b, h, w, c, start))
}

fn f32s<'a>(s: &'a CpuStorage, name: &str) -> candle_core::Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("{name}: only f32 is supported"),
    }
}

/// Calls `f(pixel, tap, source_pixel)` for every in-image neighbour of every pixel of an h × w image
/// in a 3×3 window with zero padding 1 (tap = kh·3 + kw; pixels row-major). im2col copies along these
/// pairs and col2im, its adjoint, adds back along the same pairs.
#[inline(always)]
fn for_each_tap(h: usize, w: usize, mut f: impl FnMut(usize, usize, usize)) {
    for y in 0..h {
        for xx in 0..w {
            for kh in 0..3 {
                let sy = y as isize + kh as isize - 1;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                for kw in 0..3 {
                    let sx = xx as isize + kw as isize - 1;
                    if sx < 0 || sx >= w as isize {
                        continue;
                    }
                    f(y * w + xx, kh * 3 + kw, sy as usize * w + sx as usize);
                }
            }
        }
    }
}

/// [B, H, W, C] → [B, H, W, 9·C + 1], column (kh·3 + kw)·C + c holding x[b, h + kh − 1, w + kw − 1, c]
/// (zero outside the image); the last column is 1 (so that the bias is a row of the weight matrix).
pub struct Im2col3;

/// The adjoint of [`Im2col3`]: [B, H, W, 9·C + 1] → [B, H, W, C] (the shape of the original input; `c`).
pub struct Col2im3 {
    c: usize,
}

impl CustomOp1 for Im2col3 {
    fn name(&self) -> &'static str {
        "im2col3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c, start) = dims(l, "im2col3")?;
        let n = b * h * w * c;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(im2col3(&v[start..start + n], b, h, w, c)),
            CpuStorage::F64(v) => CpuStorage::F64(im2col3(&v[start..start + n], b, h, w, c)),
            _ => candle_core::bail!("im2col3: only f32 and f64 are supported"),
        };
        Ok((out, Shape::from((b, h, w, 9 * c + 1))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2im3 { c: arg.dim(3)? })?))
    }
}

impl CustomOp1 for Col2im3 {
    fn name(&self) -> &'static str {
        "col2im3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c9, start) = dims(l, "col2im3")?;
        let c = self.c;
        if c9 != 9 * c + 1 {
            candle_core::bail!("col2im3: {c9} columns for {c} channels");
        }
        let n = b * h * w * c9;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(col2im3(&v[start..start + n], b, h, w, c)),
            CpuStorage::F64(v) => CpuStorage::F64(col2im3(&v[start..start + n], b, h, w, c)),
            _ => candle_core::bail!("col2im3: only f32 and f64 are supported"),
        };
        Ok((out, Shape::from((b, h, w, c))))
    }
}

/// [`Im2col3`] on contiguous values (f32 for the networks, f64 for the gradient tests).
fn im2col3<T: candle_core::WithDType>(x: &[T], b: usize, h: usize, w: usize, c: usize) -> Vec<T> {
    let c9 = 9 * c + 1;
    let mut out = vec![T::from_f64(0.0); b * h * w * c9];
    out.par_chunks_mut(h * w * c9).zip(x.par_chunks(h * w * c)).for_each(|(o, xi)| {
        for p in 0..h * w {
            o[p * c9 + 9 * c] = T::from_f64(1.0);
        }
        for_each_tap(h, w, |p, tap, src| {
            o[p * c9 + tap * c..p * c9 + (tap + 1) * c].copy_from_slice(&xi[src * c..(src + 1) * c]);
        });
    });
    out
}

/// [`Col2im3`] on contiguous values.
fn col2im3<T: candle_core::WithDType>(g: &[T], b: usize, h: usize, w: usize, c: usize) -> Vec<T> {
    let c9 = 9 * c + 1;
    let mut out = vec![T::from_f64(0.0); b * h * w * c];
    out.par_chunks_mut(h * w * c).zip(g.par_chunks(h * w * c9)).for_each(|(o, gi)| {
        for_each_tap(h, w, |p, tap, dst| {
            let src = &gi[p * c9 + tap * c..p * c9 + (tap + 1) * c];
            o[dst * c..(dst + 1) * c].iter_mut().zip(src).for_each(|(a, &b)| *a += b);
        });
    });
    out
}

/// A 3×3 convolution with zero padding 1, channels-last: x `[B, H, W, Ci]`, weight `[Co, Ci, 3, 3]` (the
/// files' layout), bias `[Co]` → `[B, H, W, Co]`, as [`Im2col3`] and one matrix product (the bias a row
/// of the weight matrix), so that its backward is col2im and matrix products too.
pub fn conv3x3_nhwc(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (bs, h, wd, ci) = x.dims4()?;
    let co = w.dim(0)?;
    let cols = x.contiguous()?.apply_op1(Im2col3)?.reshape((bs * h * wd, 9 * ci + 1))?;
    // The weight [Co, Ci, 3, 3] → [Co, 3, 3, Ci] → [9·Ci, Co], with the bias as its last row.
    let wm = w.permute((0, 2, 3, 1))?.reshape((co, 9 * ci))?.t()?;
    let wm = Tensor::cat(&[&wm, &b.reshape((1, co))?], 0)?;
    cols.matmul(&wm)?.reshape((bs, h, wd, co))
}

fn host(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Per (image, group) mean and 1/√(var + eps) of channels-last x [B, HW, C] with G groups.
fn group_stats(x: &[f32], b: usize, hw: usize, c: usize, g: usize, eps: f64) -> Vec<(f64, f64)> {
    let cg = c / g;
    let n = (hw * cg) as f64;
    let mut st = Vec::with_capacity(b * g);
    for bi in 0..b {
        let xi = &x[bi * hw * c..(bi + 1) * hw * c];
        let mut s1 = vec![0f64; g];
        let mut s2 = vec![0f64; g];
        for px in xi.chunks_exact(c) {
            for (j, &v) in px.iter().enumerate() {
                s1[j / cg] += v as f64;
            }
        }
        let mean: Vec<f64> = s1.iter().map(|s| s / n).collect();
        for px in xi.chunks_exact(c) {
            for (j, &v) in px.iter().enumerate() {
                let d = v as f64 - mean[j / cg];
                s2[j / cg] += d * d;
            }
        }
        for k in 0..g {
            st.push((mean[k], 1.0 / (s2[k] / n + eps).sqrt()));
        }
    }
    st
}

/// GroupNorm with its affine map, channels-last: (x `[B, H, W, C]`, γ `[C]`, β `[C]`) → γ·(x − μ)/σ + β,
/// μ and σ² = var + eps per image and group. Hand-written forward and exact backward (candle's fused
/// norms record wrong or no input gradients, and the plain-op version is dominated by broadcasts).
pub struct GroupNorm {
    pub groups: usize,
    pub eps: f64,
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        "group_norm_nhwc"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c, start) = dims(l1, "group_norm")?;
        let (Some((g0, _)), Some((b0, _))) = (l2.contiguous_offsets(), l3.contiguous_offsets()) else {
            candle_core::bail!("group_norm: γ and β must be contiguous")
        };
        let x = &f32s(s1, "group_norm")?[start..start + b * h * w * c];
        let gamma = &f32s(s2, "group_norm")?[g0..g0 + c];
        let beta = &f32s(s3, "group_norm")?[b0..b0 + c];
        let st = group_stats(x, b, h * w, c, self.groups, self.eps);
        let cg = c / self.groups;
        let mut out = vec![0f32; x.len()];
        for bi in 0..b {
            let (xi, oi) = (&x[bi * h * w * c..(bi + 1) * h * w * c], &mut out[bi * h * w * c..(bi + 1) * h * w * c]);
            let stb = &st[bi * self.groups..(bi + 1) * self.groups];
            for (px, po) in xi.chunks_exact(c).zip(oi.chunks_exact_mut(c)) {
                for j in 0..c {
                    let (m, r) = stb[j / cg];
                    po[j] = ((px[j] as f64 - m) * r * gamma[j] as f64 + beta[j] as f64) as f32;
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, h, w, c))))
    }

    fn bwd(&self, x: &Tensor, gamma: &Tensor, _beta: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, h, w, c) = x.dims4()?;
        let (xs, gs, gam) = (host(x)?, host(grad)?, host(gamma)?);
        let g = self.groups;
        let cg = c / g;
        let hw = h * w;
        let n = (hw * cg) as f64;
        let st = group_stats(&xs, b, hw, c, g, self.eps);
        let mut dx = vec![0f32; xs.len()];
        let mut dgamma = vec![0f64; c];
        let mut dbeta = vec![0f64; c];
        for bi in 0..b {
            let r = bi * hw * c..(bi + 1) * hw * c;
            let (xi, gi) = (&xs[r.clone()], &gs[r.clone()]);
            let stb = &st[bi * g..(bi + 1) * g];
            // Per group: mean of ĝ = grad·γ and of ĝ·y.
            let mut mg = vec![0f64; g];
            let mut mgy = vec![0f64; g];
            for (px, pg) in xi.chunks_exact(c).zip(gi.chunks_exact(c)) {
                for j in 0..c {
                    let (m, rs) = stb[j / cg];
                    let y = (px[j] as f64 - m) * rs;
                    let gh = pg[j] as f64 * gam[j] as f64;
                    mg[j / cg] += gh;
                    mgy[j / cg] += gh * y;
                    dgamma[j] += pg[j] as f64 * y;
                    dbeta[j] += pg[j] as f64;
                }
            }
            let di = &mut dx[r];
            for ((px, pg), pd) in xi.chunks_exact(c).zip(gi.chunks_exact(c)).zip(di.chunks_exact_mut(c)) {
                for j in 0..c {
                    let k = j / cg;
                    let (m, rs) = stb[k];
                    let y = (px[j] as f64 - m) * rs;
                    let gh = pg[j] as f64 * gam[j] as f64;
                    pd[j] = (rs * (gh - mg[k] / n - y * mgy[k] / n)) as f32;
                }
            }
        }
        let dev = x.device();
        let to = |v: Vec<f64>| Tensor::from_vec(v.into_iter().map(|a| a as f32).collect::<Vec<f32>>(), c, dev);
        Ok((Some(Tensor::from_vec(dx, (b, h, w, c), dev)?), Some(to(dgamma)?), Some(to(dbeta)?)))
    }
}
