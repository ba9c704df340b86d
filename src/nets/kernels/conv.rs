//! Convolutions as matrix products: im2col (upsampling and asymmetric padding folded into the gather,
//! same-size taps as one shifted copy), several images per product, the adjoint col2im for input
//! gradients and dW = dy colᵀ for weight gradients; same-size 3×3 convolutions go to Winograd's
//! F(2×2, 3×3) or the direct kernel where those pay ([`Conv::lowering`]).

use super::{add_row_sums, gemm, host, ChannelMap, Grads, Tensor2};

/// How a convolution is computed ([`Conv::lowering`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lowering {
    /// Winograd's F(2×2, 3×3): 16 products per 2 × 2 outputs and channel pair instead of 36.
    Winograd,
    /// The direct 3×3 kernel, no im2col (the bits of im2col + GEMM).
    Direct,
    /// im2col and one matrix product.
    Gemm,
}

/// A 2-D convolution with weights [cout, cin·k·k] (PyTorch's [cout, cin, k, k] flattened) and a bias.
#[derive(Clone, Debug)]
pub struct Conv {
    cout: usize,
    cin: usize,
    k: usize,
    stride: usize,
    /// Zero padding (top, left, bottom, right).
    pad: [usize; 4],
    w: Vec<f32>,
    b: Vec<f32>,
    /// Index of the weight in the network's parameter list (the bias follows it).
    pub(crate) id: usize,
}

impl Conv {
    /// From a candle convolution, with `pad` (top, left, bottom, right) replacing its symmetric
    /// padding.
    pub fn from_candle(c: &candle_nn::Conv2d, pad: [usize; 4]) -> candle_core::Result<Self> {
        let (cout, cin, k, k2) = c.weight().dims4()?;
        if k != k2 {
            candle_core::bail!("non-square kernel {k}x{k2}");
        }
        let b = match c.bias() {
            Some(b) => host(b)?,
            None => vec![0.0; cout],
        };
        Ok(Conv { cout, cin, k, stride: c.config().stride, pad, w: host(c.weight())?, b, id: 0 })
    }

    /// The weight [cout, cin, k, k] and the bias.
    pub fn tensors(&mut self) -> [Tensor2<'_>; 2] {
        let (o, i, k) = (self.cout, self.cin, self.k);
        [("weight", vec![o, i, k, k], &mut self.w), ("bias", vec![o], &mut self.b)]
    }

    /// The weight and bias gradients of Σ dy · conv(x) added into `grads`, for the inputs `xs` and
    /// output gradients `dys` of [`Self::forward_many`] (same grouping): dW += dy colᵀ, db += Σ dy.
    #[allow(clippy::too_many_arguments)]
    pub fn weight_grads(&self, xs: &[Vec<f32>], dys: &[Vec<f32>], h: usize, w: usize, up: bool, group: usize, col: &mut Vec<f32>, grads: &mut Grads, flops: &mut u64) {
        let (oh, ow) = self.out_hw(h, w, up);
        let p = oh * ow;
        let kk = self.cin * self.k * self.k;
        let mut dyg = Vec::new();
        for (gx, gy) in xs.chunks(group.max(1)).zip(dys.chunks(group.max(1))) {
            let n = gx.len() * p;
            col.resize(kk * n, 0.0);
            dyg.clear();
            dyg.resize(self.cout * n, 0.0);
            for (i, (x, dy)) in gx.iter().zip(gy).enumerate() {
                self.im2col_strided(x, h, w, up, oh, ow, &mut col[i * p..], n);
                for c in 0..self.cout {
                    dyg[c * n + i * p..c * n + (i + 1) * p].copy_from_slice(&dy[c * p..(c + 1) * p]);
                }
            }
            gemm(self.cout, kk, n, &mut grads.0[self.id], kk, true, &dyg, n, 1, col, 1, n, 1.0);
            add_row_sums(&dyg, n, &mut grads.0[self.id + 1]);
            *flops += 2 * (self.cout * n * kk) as u64;
        }
    }

    /// The output size for an h × w input (after 2× upsampling when `up`).
    pub fn out_hw(&self, h: usize, w: usize, up: bool) -> (usize, usize) {
        let (h, w) = if up { (2 * h, 2 * w) } else { (h, w) };
        ((h + self.pad[0] + self.pad[2] - self.k) / self.stride + 1, (w + self.pad[1] + self.pad[3] - self.k) / self.stride + 1)
    }

    /// The convolution of `x` [cin, h·w] (nearest-neighbour upsampled 2× first when `up`) into a new
    /// [cout, oh·ow] buffer; `col` is scratch. Returns the output and its (oh, ow); `flops` grows by the
    /// multiply-adds counted twice.
    pub fn forward(&self, x: &[f32], h: usize, w: usize, up: bool, col: &mut Vec<f32>, flops: &mut u64) -> (Vec<f32>, usize, usize) {
        let (oh, ow) = self.out_hw(h, w, up);
        let p = oh * ow;
        let kk = self.cin * self.k * self.k;
        debug_assert_eq!(x.len(), self.cin * h * w);
        let mut out = Vec::with_capacity(self.cout * p);
        fill_bias(&mut out, &self.b, p);
        let direct = self.k == 1 && self.stride == 1 && !up && self.pad == [0; 4];
        let rhs: &[f32] = if direct {
            x
        } else {
            col.resize(kk * p, 0.0);
            self.im2col(x, h, w, up, oh, ow, col);
            col
        };
        gemm(self.cout, p, kk, &mut out, p, true, &self.w, kk, 1, rhs, p, 1, 1.0);
        *flops += 2 * (self.cout * p * kk) as u64;
        (out, oh, ow)
    }

    /// The convolution of each image of `xs` (each [cin, h·w]), as [`Self::forward`] does it, with
    /// the images side by side in one matrix product per `group` images (small images make thin
    /// products; the same images in the same groups give the same bits). Returns the outputs and (oh, ow).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_many(&self, xs: &[Vec<f32>], h: usize, w: usize, up: bool, group: usize, col: &mut Vec<f32>, flops: &mut u64) -> (Vec<Vec<f32>>, usize, usize) {
        self.forward_many_mapped(xs, None, h, w, up, group, col, flops)
    }

    /// [`Self::forward_many`] of `maps[i]` applied to each image `xs[i]` (a norm and its activation):
    /// the Winograd and direct paths apply them as they copy their input, so the mapped images are
    /// never stored.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_many_mapped(&self, xs: &[Vec<f32>], maps: Option<&[ChannelMap]>, h: usize, w: usize, up: bool, group: usize, col: &mut Vec<f32>, flops: &mut u64) -> (Vec<Vec<f32>>, usize, usize) {
        self.forward_many_as(self.lowering(h, w, up), xs, maps, h, w, up, group, col, flops)
    }

    /// [`Self::forward_many_mapped`] by the given lowering, where it applies (a same-size 3×3
    /// convolution on a CPU and build with AVX-512F for [`Lowering::Winograd`] and
    /// [`Lowering::Direct`]; im2col + GEMM otherwise). The direct path gives im2col + GEMM's bits;
    /// Winograd's agrees with them to rounding.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_many_as(&self, lowering: Lowering, xs: &[Vec<f32>], maps: Option<&[ChannelMap]>, h: usize, w: usize, up: bool, group: usize, col: &mut Vec<f32>, flops: &mut u64) -> (Vec<Vec<f32>>, usize, usize) {
        let (oh, ow) = self.out_hw(h, w, up);
        let p = oh * ow;
        let kk = self.cin * self.k * self.k;
        let fast = self.same_size_3x3(oh, ow, h, w, up) && super::direct::available();
        match lowering {
            Lowering::Winograd if fast => {
                *flops += 2 * (self.cout * xs.len() * p * kk) as u64;
                return (super::winograd::conv3x3(xs, maps, h, w, up, self.cin, &self.w, &self.b, col), oh, ow);
            }
            Lowering::Direct if fast => {
                let kcs = super::direct::blocks_per_image(xs.len(), group, p, self.cout, kk);
                *flops += 2 * (self.cout * xs.len() * p * kk) as u64;
                return (super::direct::conv3x3(xs, maps, &kcs, h, w, up, self.cin, &self.w, &self.b, col), oh, ow);
            }
            _ => {}
        }
        match maps {
            Some(maps) => {
                let a: Vec<Vec<f32>> = xs.iter().zip(maps).map(|(x, m)| m.apply(x, h * w)).collect();
                self.forward_many_gemm(&a, h, w, up, group, col, flops)
            }
            None => self.forward_many_gemm(xs, h, w, up, group, col, flops),
        }
    }

    /// How [`Self::forward_many`] computes this convolution on inputs of h × w (upsampled when `up`):
    /// a same-size 3×3 convolution, stride 1 and padding 1, on a CPU and build with AVX-512F, takes
    /// Winograd's F(2×2, 3×3) on the shapes `winograd::takes` names, else the direct kernel on the
    /// shapes `direct::takes` names; the rest im2col + GEMM.
    pub fn lowering(&self, h: usize, w: usize, up: bool) -> Lowering {
        let (oh, ow) = self.out_hw(h, w, up);
        Self::choose(self.same_size_3x3(oh, ow, h, w, up), ow, self.cin, self.cout)
    }

    /// The lowering of a convolution from `cin` to `cout` channels with output rows of `ow` pixels,
    /// `same` when it is a same-size 3×3 one.
    fn choose(same: bool, ow: usize, cin: usize, cout: usize) -> Lowering {
        if !same || !super::direct::available() {
            Lowering::Gemm
        } else if super::winograd::takes(ow, cin, cout) {
            Lowering::Winograd
        } else if super::direct::takes(ow, cout) {
            Lowering::Direct
        } else {
            Lowering::Gemm
        }
    }

    /// A 3×3 convolution, stride 1 and padding 1, whose output (oh, ow) has its input's size (2× it
    /// when `up`): its adjoint is one too.
    fn same_size_3x3(&self, oh: usize, ow: usize, h: usize, w: usize, up: bool) -> bool {
        let (vh, vw) = if up { (2 * h, 2 * w) } else { (h, w) };
        self.k == 3 && self.stride == 1 && self.pad == [1; 4] && (oh, ow) == (vh, vw)
    }

    /// [`Self::forward_many`] by im2col and `gemm` only (the direct path gives its bits).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_many_gemm(&self, xs: &[Vec<f32>], h: usize, w: usize, up: bool, group: usize, col: &mut Vec<f32>, flops: &mut u64) -> (Vec<Vec<f32>>, usize, usize) {
        let (oh, ow) = self.out_hw(h, w, up);
        let p = oh * ow;
        let kk = self.cin * self.k * self.k;
        let mut outs = Vec::with_capacity(xs.len());
        let mut dst = Vec::new();
        for g in xs.chunks(group.max(1)) {
            if g.len() == 1 {
                outs.push(self.forward(&g[0], h, w, up, col, flops).0);
                continue;
            }
            let n = g.len() * p;
            col.resize(kk * n, 0.0);
            for (i, x) in g.iter().enumerate() {
                debug_assert_eq!(x.len(), self.cin * h * w);
                self.im2col_strided(x, h, w, up, oh, ow, &mut col[i * p..], n);
            }
            fill_bias(&mut dst, &self.b, n);
            gemm(self.cout, n, kk, &mut dst, n, true, &self.w, kk, 1, col, n, 1, 1.0);
            *flops += 2 * (self.cout * n * kk) as u64;
            for i in 0..g.len() {
                let mut o = Vec::with_capacity(self.cout * p);
                for c in 0..self.cout {
                    o.extend_from_slice(&dst[c * n + i * p..c * n + (i + 1) * p]);
                }
                outs.push(o);
            }
        }
        (outs, oh, ow)
    }

    /// The gradient with respect to each input ([cin, h·w], upsampled 2× first when `up`) of
    /// Σ dy · conv(x), for the output gradients `dys` ([cout, oh·ow] each). Where the forward pass is a
    /// same-size 3×3 convolution, its adjoint is one too, by the weights flipped in both directions
    /// with cin and cout swapped: Winograd's F(2×2, 3×3) or the direct kernel runs it (on the upsampled
    /// grid when `up`, each 2 × 2 block then summed onto its pixel) where [`Self::lowering`]'s rule
    /// takes that shape (cout in, cin out). Elsewhere [`Self::backward_many_gemm`]; the three sum in
    /// other orders (equal to rounding: tested).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_many(&self, dys: &[Vec<f32>], h: usize, w: usize, up: bool, group: usize, col: &mut Vec<f32>, flops: &mut u64) -> Vec<Vec<f32>> {
        let (oh, ow) = self.out_hw(h, w, up);
        let adjoint = Self::choose(self.same_size_3x3(oh, ow, h, w, up), ow, self.cout, self.cin);
        self.backward_many_as(adjoint, dys, h, w, up, group, col, flops)
    }

    /// [`Self::backward_many`] with the adjoint convolution computed by `adjoint` where it applies (as
    /// in [`Self::forward_many_as`]).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_many_as(&self, adjoint: Lowering, dys: &[Vec<f32>], h: usize, w: usize, up: bool, group: usize, col: &mut Vec<f32>, flops: &mut u64) -> Vec<Vec<f32>> {
        let (oh, ow) = self.out_hw(h, w, up);
        let p = oh * ow;
        if adjoint != Lowering::Gemm && self.same_size_3x3(oh, ow, h, w, up) && super::direct::available() {
            let kk = self.cout * 9;
            // W'[ci, co·9 + t] = W[co, ci·9 + 8 − t].
            let mut wt = vec![0.0f32; self.cin * kk];
            for co in 0..self.cout {
                for ci in 0..self.cin {
                    for t in 0..9 {
                        wt[ci * kk + co * 9 + 8 - t] = self.w[co * self.cin * 9 + ci * 9 + t];
                    }
                }
            }
            let kcs = super::direct::blocks_per_image(dys.len(), group, p, self.cin, kk);
            *flops += 2 * (self.cin * dys.len() * p * kk) as u64;
            let zero = vec![0.0; self.cin];
            let us = if adjoint == Lowering::Winograd { super::winograd::conv3x3(dys, None, oh, ow, false, self.cout, &wt, &zero, col) } else { super::direct::conv3x3(dys, None, &kcs, oh, ow, false, self.cout, &wt, &zero, col) };
            if !up {
                return us;
            }
            return us
                .iter()
                .map(|u| {
                    let mut dx = vec![0.0f32; self.cin * h * w];
                    for (ci, d) in dx.chunks_mut(h * w).enumerate() {
                        downsum2(&u[ci * p..(ci + 1) * p], h, w, d);
                    }
                    dx
                })
                .collect();
        }
        self.backward_many_gemm(dys, h, w, up, group, col, flops)
    }

    /// [`Self::backward_many`] by matrix products only: colᵀ = Wᵀ dy by one product per `group`
    /// images, then scattered back onto the input (the adjoint of im2col).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_many_gemm(&self, dys: &[Vec<f32>], h: usize, w: usize, up: bool, group: usize, col: &mut Vec<f32>, flops: &mut u64) -> Vec<Vec<f32>> {
        let (oh, ow) = self.out_hw(h, w, up);
        let p = oh * ow;
        let kk = self.cin * self.k * self.k;
        let mut dxs = Vec::with_capacity(dys.len());
        let mut dyg = Vec::new();
        for g in dys.chunks(group.max(1)) {
            let n = g.len() * p;
            let rhs: &[f32] = if g.len() == 1 {
                &g[0]
            } else {
                dyg.clear();
                dyg.resize(self.cout * n, 0.0);
                for (i, dy) in g.iter().enumerate() {
                    for c in 0..self.cout {
                        dyg[c * n + i * p..c * n + (i + 1) * p].copy_from_slice(&dy[c * p..(c + 1) * p]);
                    }
                }
                &dyg
            };
            col.resize(kk * n, 0.0);
            // colᵀ[K, n] = Wᵀ[K, cout] · dy[cout, n]; W is stored [cout, K].
            gemm(kk, n, self.cout, col, n, false, &self.w, 1, kk, rhs, n, 1, 1.0);
            *flops += 2 * (self.cout * n * kk) as u64;
            for i in 0..g.len() {
                let mut dx = vec![0.0f32; self.cin * h * w];
                self.col2im(&mut col[i * p..], n, h, w, up, oh, ow, &mut dx);
                dxs.push(dx);
            }
        }
        dxs
    }

    /// dx += the adjoint of [`Self::im2col_strided`] applied to `col` (rows `row_stride` apart; `col`
    /// is scratch: the border columns of a same-size stride-1 tap are zeroed and the tap added to the
    /// image as one contiguous shifted run, like [`Self::shifted_copy`] in reverse).
    #[allow(clippy::too_many_arguments)]
    fn col2im(&self, col: &mut [f32], row_stride: usize, h: usize, w: usize, up: bool, oh: usize, ow: usize, dx: &mut [f32]) {
        let (k, s) = (self.k, self.stride);
        let (vh, vw) = if up { (2 * h, 2 * w) } else { (h, w) };
        let sh = usize::from(up);
        if s == 1 && up && oh == vh && ow == vw {
            // The adjoint of im2col's upsampled path: shifted adds onto one upsampled channel, then
            // each 2×2 block summed onto its source pixel.
            let mut u = vec![0.0f32; vh * vw];
            for ci in 0..self.cin {
                u.fill(0.0);
                for ky in 0..k {
                    for kx in 0..k {
                        let row = &mut col[((ci * k + ky) * k + kx) * row_stride..][..oh * ow];
                        let lo = self.pad[1].saturating_sub(kx).min(ow);
                        let hi = (vw + self.pad[1]).saturating_sub(kx).clamp(lo, ow);
                        Self::shifted_add(row, vh, vw, ky as isize - self.pad[0] as isize, kx as isize - self.pad[1] as isize, lo, hi, &mut u);
                    }
                }
                downsum2(&u, h, w, &mut dx[ci * h * w..(ci + 1) * h * w]);
            }
            return;
        }
        for ci in 0..self.cin {
            let img = &mut dx[ci * h * w..(ci + 1) * h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = &mut col[((ci * k + ky) * k + kx) * row_stride..][..oh * ow];
                    let lo = self.pad[1].saturating_sub(kx).div_ceil(s).min(ow);
                    let hi = ((vw + self.pad[1]).saturating_sub(kx).div_ceil(s)).clamp(lo, ow);
                    if lo == hi {
                        continue;
                    }
                    if s == 1 && !up && ow == w && oh == h {
                        Self::shifted_add(row, h, w, ky as isize - self.pad[0] as isize, kx as isize - self.pad[1] as isize, lo, hi, img);
                        continue;
                    }
                    let first = lo * s + kx - self.pad[1];
                    for oy in 0..oh {
                        let vy = (oy * s + ky) as isize - self.pad[0] as isize;
                        if vy < 0 || vy >= vh as isize {
                            continue;
                        }
                        let dst = &mut img[((vy as usize) >> sh) * w..][..w];
                        let src = &row[oy * ow + lo..oy * ow + hi];
                        match (s, up) {
                            (1, false) => dst[first..first + hi - lo].iter_mut().zip(src).for_each(|(d, &v)| *d += v),
                            (_, false) => src.iter().enumerate().for_each(|(i, &v)| dst[first + i * s] += v),
                            _ => src.iter().enumerate().for_each(|(i, &v)| dst[(first + i * s) >> 1] += v),
                        }
                    }
                }
            }
        }
    }

    /// col[(ci·k + ky)·k + kx, oy·ow + ox] = the (upsampled, padded) input at (ci, oy·s + ky, ox·s + kx).
    #[allow(clippy::too_many_arguments)]
    fn im2col(&self, x: &[f32], h: usize, w: usize, up: bool, oh: usize, ow: usize, col: &mut [f32]) {
        self.im2col_strided(x, h, w, up, oh, ow, col, oh * ow)
    }

    /// [`Self::im2col`] with rows `row_stride` apart.
    #[allow(clippy::too_many_arguments)]
    fn im2col_strided(&self, x: &[f32], h: usize, w: usize, up: bool, oh: usize, ow: usize, col: &mut [f32], row_stride: usize) {
        let (k, s) = (self.k, self.stride);
        let (vh, vw) = if up { (2 * h, 2 * w) } else { (h, w) };
        let sh = usize::from(up);
        let p = oh * ow;
        if s == 1 && up && oh == vh && ow == vw {
            // A same-size convolution of the upsampled image: upsample one channel at a time, then
            // each tap is a shifted copy.
            let mut u = vec![0.0f32; vh * vw];
            for ci in 0..self.cin {
                upsample2(&x[ci * h * w..(ci + 1) * h * w], h, w, &mut u);
                for ky in 0..k {
                    for kx in 0..k {
                        let row = &mut col[((ci * k + ky) * k + kx) * row_stride..][..p];
                        let lo = self.pad[1].saturating_sub(kx).min(ow);
                        let hi = (vw + self.pad[1]).saturating_sub(kx).clamp(lo, ow);
                        Self::shifted_copy(&u, vh, vw, ky as isize - self.pad[0] as isize, kx as isize - self.pad[1] as isize, lo, hi, row);
                    }
                }
            }
            return;
        }
        for ci in 0..self.cin {
            let img = &x[ci * h * w..(ci + 1) * h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = &mut col[((ci * k + ky) * k + kx) * row_stride..][..p];
                    // The output columns whose input column lies inside the image: vx = ox·s + kx − pl in [0, vw).
                    let lo = self.pad[1].saturating_sub(kx).div_ceil(s).min(ow);
                    let hi = ((vw + self.pad[1]).saturating_sub(kx).div_ceil(s)).clamp(lo, ow);
                    if s == 1 && !up && ow == w && oh == h {
                        Self::shifted_copy(img, h, w, ky as isize - self.pad[0] as isize, kx as isize - self.pad[1] as isize, lo, hi, row);
                        continue;
                    }
                    for oy in 0..oh {
                        let dst = &mut row[oy * ow..(oy + 1) * ow];
                        // Virtual row in the padded (upsampled) image.
                        let vy = (oy * s + ky) as isize - self.pad[0] as isize;
                        if vy < 0 || vy >= vh as isize {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &img[((vy as usize) >> sh) * w..][..w];
                        zero_edge(&mut dst[..lo]);
                        zero_edge(&mut dst[hi..]);
                        let first = lo * s + kx - self.pad[1];
                        match (s, up) {
                            (1, false) => dst[lo..hi].copy_from_slice(&src[first..first + hi - lo]),
                            (_, false) => dst[lo..hi].iter_mut().enumerate().for_each(|(i, d)| *d = src[first + i * s]),
                            _ => dst[lo..hi].iter_mut().enumerate().for_each(|(i, d)| *d = src[(first + i * s) >> 1]),
                        }
                    }
                }
            }
        }
    }
}

impl Conv {
    /// row[oy·w + ox] = img[oy + dy, ox + dx], zero outside the image (a stride-1 tap of a
    /// same-size convolution; the valid columns are lo..hi): one contiguous copy of the rows that land
    /// inside, whose wrapped-around elements fall in the border columns, then the border zeroed.
    #[allow(clippy::too_many_arguments)]
    fn shifted_copy(img: &[f32], h: usize, w: usize, dy: isize, dx: isize, lo: usize, hi: usize, row: &mut [f32]) {
        let oy_lo = (-dy).clamp(0, h as isize) as usize;
        let oy_hi = (h as isize - dy).clamp(oy_lo as isize, h as isize) as usize;
        let off = dy * w as isize + dx;
        let (q0, q1) = (oy_lo * w, oy_hi * w);
        row[..q0].fill(0.0);
        row[q1..].fill(0.0);
        let a = q0.max((-off).max(0) as usize).min(q1);
        let b = (q1 as isize).min((h * w) as isize - off).max(a as isize) as usize;
        row[q0..a].fill(0.0);
        row[b..q1].fill(0.0);
        let sa = (a as isize + off) as usize;
        row[a..b].copy_from_slice(&img[sa..sa + (b - a)]);
        for r in row[q0..q1].chunks_mut(w) {
            zero_edge(&mut r[..lo]);
            zero_edge(&mut r[hi..]);
        }
    }
}

impl Conv {
    /// img[oy·w + ox + (dy·w + dx)] += row[oy·w + ox] over the tap's valid outputs (columns lo..hi):
    /// the adjoint of [`Self::shifted_copy`]; `row`'s border columns are zeroed so that one contiguous
    /// add covers the rows that land inside the image.
    #[allow(clippy::too_many_arguments)]
    fn shifted_add(row: &mut [f32], h: usize, w: usize, dy: isize, dx: isize, lo: usize, hi: usize, img: &mut [f32]) {
        let oy_lo = (-dy).clamp(0, h as isize) as usize;
        let oy_hi = (h as isize - dy).clamp(oy_lo as isize, h as isize) as usize;
        for r in row[oy_lo * w..oy_hi * w].chunks_mut(w) {
            zero_edge(&mut r[..lo]);
            zero_edge(&mut r[hi..]);
        }
        let off = dy * w as isize + dx;
        let (q0, q1) = (oy_lo * w, oy_hi * w);
        let a = q0.max((-off).max(0) as usize).min(q1);
        let b = (q1 as isize).min((h * w) as isize - off).max(a as isize) as usize;
        let sa = (a as isize + off) as usize;
        img[sa..sa + (b - a)].iter_mut().zip(&row[a..b]).for_each(|(d, &v)| *d += v);
    }
}

/// `out` becomes [bias.len(), n] with each row its bias (written once, not zeroed first).
fn fill_bias(out: &mut Vec<f32>, bias: &[f32], n: usize) {
    out.clear();
    for &b in bias {
        out.extend(std::iter::repeat_n(b, n));
    }
}

/// Nearest-neighbour 2× upsampling of one h × w channel into `u` (2h × 2w).
fn upsample2(img: &[f32], h: usize, w: usize, u: &mut [f32]) {
    let w2 = 2 * w;
    for y in 0..h {
        let (top, rest) = u[2 * y * w2..(2 * y + 2) * w2].split_at_mut(w2);
        for (pair, &v) in top.chunks_exact_mut(2).zip(&img[y * w..(y + 1) * w]) {
            pair[0] = v;
            pair[1] = v;
        }
        rest.copy_from_slice(top);
    }
}

/// dx[y, x] += the sum of the 2 × 2 block of `u` (2h × 2w) above it: the adjoint of [`upsample2`].
fn downsum2(u: &[f32], h: usize, w: usize, dx: &mut [f32]) {
    let w2 = 2 * w;
    for y in 0..h {
        let (r0, r1) = (&u[2 * y * w2..(2 * y + 1) * w2], &u[(2 * y + 1) * w2..(2 * y + 2) * w2]);
        for (x, d) in dx[y * w..(y + 1) * w].iter_mut().enumerate() {
            *d += (r0[2 * x] + r0[2 * x + 1]) + (r1[2 * x] + r1[2 * x + 1]);
        }
    }
}

/// Zero a row's border columns (at most a few, as padding makes them): stores in place of a call to
/// memset, which would cost more than the stores (a 3×3 tap has two such runs per image row).
#[inline(always)]
fn zero_edge(s: &mut [f32]) {
    match s.len() {
        0 => {}
        1 => s[0] = 0.0,
        2 => {
            s[0] = 0.0;
            s[1] = 0.0;
        }
        _ => s.fill(0.0),
    }
}
