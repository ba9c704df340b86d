//! f32 CPU kernels for one image at a time, laid out [C, H·W]: 3×3 and 1×1 convolutions as GEMMs
//! (im2col, with nearest-neighbour 2× upsampling and asymmetric padding folded into the gather), group
//! normalisation fused with the activation and the time shift, linear maps and multi-head self-attention
//! as GEMMs. Each kernel runs on one thread (callers split a batch over images), so an image's result
//! does not depend on how many threads there are or how the batch is split. The matrix products are
//! the `gemm` crate's (the same that candle uses on the CPU).

use candle_core::Tensor;

use crate::lanes::exp_f32;

/// An activation function, applied element-wise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// x σ(x) (diffusers' `silu` and `swish`).
    Silu,
    /// x tanh(softplus x).
    Mish,
    /// x Φ(x), with the exact error function.
    Gelu,
    /// max(x, 0).
    Relu,
}

impl Act {
    /// The activation named by a diffusers `act_fn` (anything unknown: SiLU; configs are checked before).
    pub fn of(name: &str) -> Act {
        match name {
            "mish" => Act::Mish,
            "gelu" => Act::Gelu,
            "relu" => Act::Relu,
            _ => Act::Silu,
        }
    }

    /// The activation at x.
    #[inline]
    pub fn at(self, x: f32) -> f32 {
        match self {
            Act::Silu => x / (1.0 + exp_f32(-x)),
            Act::Relu => x.max(0.0),
            Act::Gelu => {
                let v = x as f64;
                (0.5 * v * (1.0 + candle_core::cpu::erf::erf_f64(v / std::f64::consts::SQRT_2))) as f32
            }
            Act::Mish => {
                let sp = x.max(0.0) + (1.0 + exp_f32(-x.abs())).ln();
                x * sp.tanh()
            }
        }
    }

    /// The activation's derivative at x.
    #[inline]
    pub fn grad(self, x: f32) -> f32 {
        match self {
            Act::Silu => {
                let s = 1.0 / (1.0 + exp_f32(-x));
                s * (1.0 + x * (1.0 - s))
            }
            Act::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Act::Gelu => {
                let v = x as f64;
                let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(v / std::f64::consts::SQRT_2));
                (cdf + v * (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt()) as f32
            }
            Act::Mish => {
                let sp = x.max(0.0) + (1.0 + exp_f32(-x.abs())).ln();
                let t = sp.tanh();
                t + x * (1.0 - t * t) / (1.0 + exp_f32(-x))
            }
        }
    }
}

/// dst[m × n] (row stride `dst_rs`) = (dst if `acc`) + scale · A · B, with A[i, kk] = a[i·a_rs + kk·a_cs]
/// and B[kk, j] = b[kk·b_rs + j·b_cs]; one thread.
#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, n: usize, k: usize, dst: &mut [f32], dst_rs: usize, acc: bool, a: &[f32], a_rs: usize, a_cs: usize, b: &[f32], b_rs: usize, b_cs: usize, scale: f32) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            (0..m).for_each(|i| dst[i * dst_rs..i * dst_rs + n].fill(0.0));
        }
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n);
    assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts above keep every index the strides reach inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// A tensor's values as f32 on the host.
pub(crate) fn host(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_device(&candle_core::Device::Cpu)?.to_vec1()
}

/// A parameter tensor: its name's last part, its shape and its values.
pub type Tensor2<'a> = (&'static str, Vec<usize>, &'a mut Vec<f32>);

/// Gradients of a network's parameters, one vector per tensor in the network's parameter order.
#[derive(Clone, Debug, Default)]
pub struct Grads(pub Vec<Vec<f32>>);

impl Grads {
    /// Zero gradients of tensors with these sizes.
    pub fn zeros(sizes: &[usize]) -> Self {
        Grads(sizes.iter().map(|&n| vec![0.0; n]).collect())
    }

    /// self += other, tensor by tensor.
    pub fn add(&mut self, other: &Grads) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            a.iter_mut().zip(b).for_each(|(a, &b)| *a += b);
        }
    }
}

/// Σ over each row of `dy` [rows, n] into `db`.
fn add_row_sums(dy: &[f32], n: usize, db: &mut [f32]) {
    for (r, d) in dy.chunks(n).zip(db.iter_mut()) {
        *d += r.iter().sum::<f32>();
    }
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

    /// Output channels.
    pub fn cout(&self) -> usize {
        self.cout
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
        let mut out = vec![0.0f32; self.cout * p];
        for (o, &b) in out.chunks_mut(p).zip(&self.b) {
            o.fill(b);
        }
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
            dst.clear();
            dst.resize(self.cout * n, 0.0);
            for (o, &b) in dst.chunks_mut(n).zip(&self.b) {
                o.fill(b);
            }
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
    /// Σ dy · conv(x), for the output gradients `dys` ([cout, oh·ow] each): colᵀ = Wᵀ dy by one
    /// matrix product per `group` images, then scattered back onto the input (the adjoint of im2col).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_many(&self, dys: &[Vec<f32>], h: usize, w: usize, up: bool, group: usize, col: &mut Vec<f32>, flops: &mut u64) -> Vec<Vec<f32>> {
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
                        let (dy, dxo) = (ky as isize - self.pad[0] as isize, kx as isize - self.pad[1] as isize);
                        let oy_lo = (-dy).clamp(0, h as isize) as usize;
                        let oy_hi = (h as isize - dy).clamp(oy_lo as isize, h as isize) as usize;
                        for r in row[oy_lo * w..oy_hi * w].chunks_mut(w) {
                            r[..lo].fill(0.0);
                            r[hi..].fill(0.0);
                        }
                        let off = dy * w as isize + dxo;
                        let (q0, q1) = (oy_lo * w, oy_hi * w);
                        let a = q0.max((-off).max(0) as usize).min(q1);
                        let b = (q1 as isize).min((h * w) as isize - off).max(a as isize) as usize;
                        let sa = (a as isize + off) as usize;
                        img[sa..sa + (b - a)].iter_mut().zip(&row[a..b]).for_each(|(d, &v)| *d += v);
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
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
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
            r[..lo].fill(0.0);
            r[hi..].fill(0.0);
        }
    }
}

/// Group normalisation with a per-channel affine map.
#[derive(Clone, Debug)]
pub struct Norm {
    groups: usize,
    eps: f64,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    /// Index of γ in the network's parameter list (β follows it).
    pub(crate) id: usize,
}

impl Norm {
    /// From weights and biases of `gamma.len()` channels.
    pub fn new(groups: usize, eps: f64, gamma: Vec<f32>, beta: Vec<f32>) -> Self {
        Norm { groups, eps, gamma, beta, id: 0 }
    }

    /// act( GN(x + shift_in_c) · (1 + scale_c) + shift_c ) per channel c for `x` [C, hw]: `shift_in` is added to
    /// every channel before the statistics (the default time shift), `post` = (scale, shift) after the
    /// affine map (scale_shift); statistics in f64.
    pub fn apply(&self, x: &[f32], hw: usize, shift_in: Option<&[f32]>, post: Option<(&[f32], &[f32])>, act: Option<Act>) -> Vec<f32> {
        let st = self.stats(x, hw, shift_in);
        self.apply_with(x, hw, &st, shift_in, post, act)
    }

    /// Each group's (mean, 1/√(var + eps)) of x + shift_in.
    pub fn stats(&self, x: &[f32], hw: usize, shift_in: Option<&[f32]>) -> Vec<(f64, f64)> {
        let cg = self.gamma.len() / self.groups;
        (0..self.groups)
            .map(|g| {
                // Sums in eight f64 lanes (vectorised; the order is fixed by the layout alone).
                let (mut l1, mut l2) = ([0.0f64; 8], [0.0f64; 8]);
                for ch in g * cg..(g + 1) * cg {
                    let a = shift_in.map_or(0.0, |s| s[ch]);
                    let row = &x[ch * hw..(ch + 1) * hw];
                    let mut it = row.chunks_exact(8);
                    for c8 in &mut it {
                        for j in 0..8 {
                            let v = (c8[j] + a) as f64;
                            l1[j] += v;
                            l2[j] += v * v;
                        }
                    }
                    for (j, &v) in it.remainder().iter().enumerate() {
                        let v = (v + a) as f64;
                        l1[j] += v;
                        l2[j] += v * v;
                    }
                }
                let (s1, s2): (f64, f64) = (l1.iter().sum(), l2.iter().sum());
                let n = (cg * hw) as f64;
                let mean = s1 / n;
                let var = (s2 / n - mean * mean).max(0.0);
                (mean, 1.0 / (var + self.eps).sqrt())
            })
            .collect()
    }

    /// Channel `ch`'s map z = x·m + q (and the factor γ(1 + scale) that multiplies the normalised x).
    fn coeffs(&self, ch: usize, (mean, inv): (f64, f64), shift_in: Option<&[f32]>, post: Option<(&[f32], &[f32])>) -> (f32, f32, f64) {
        let a = shift_in.map_or(0.0, |s| s[ch]) as f64;
        let (mul, sh) = post.map_or((1.0, 0.0), |(sc, sf)| (1.0 + sc[ch] as f64, sf[ch] as f64));
        let g = self.gamma[ch] as f64 * mul;
        // y = (x + a − mean)·inv·γ·(1 + scale) + β·(1 + scale) + shift = x·m + q.
        let q = ((a - mean) * inv * self.gamma[ch] as f64 + self.beta[ch] as f64) * mul + sh;
        ((inv * g) as f32, q as f32, g)
    }

    /// [`Self::apply`] with the statistics given.
    pub fn apply_with(&self, x: &[f32], hw: usize, st: &[(f64, f64)], shift_in: Option<&[f32]>, post: Option<(&[f32], &[f32])>, act: Option<Act>) -> Vec<f32> {
        let cg = self.gamma.len() / self.groups;
        let mut out = vec![0.0f32; x.len()];
        for ch in 0..self.gamma.len() {
            let (m, q, _) = self.coeffs(ch, st[ch / cg], shift_in, post);
            affine_act(act, &x[ch * hw..(ch + 1) * hw], &mut out[ch * hw..(ch + 1) * hw], m, q);
        }
        out
    }

    /// The gradient with respect to x of Σ dy · [`Self::apply`] at x (shift_in and post held fixed), from
    /// the forward pass's input and statistics.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(&self, x: &[f32], hw: usize, st: &[(f64, f64)], shift_in: Option<&[f32]>, post: Option<(&[f32], &[f32])>, act: Option<Act>, dy: &[f32]) -> Vec<f32> {
        self.backward_full(x, hw, st, shift_in, post, act, dy, None).dx
    }

    /// The gradients of Σ dy · [`Self::apply`]: with x̂ the normalised input, z = x̂·γ(1 + scale) +
    /// β(1 + scale) + shift and g = ∂/∂x̂ per element, ∂/∂x = inv·(g − mean(g) − x̂·mean(g x̂)) over each
    /// group; γ's and β's gradients go into `grads` when given; the time terms' gradients are returned.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_full(&self, x: &[f32], hw: usize, st: &[(f64, f64)], shift_in: Option<&[f32]>, post: Option<(&[f32], &[f32])>, act: Option<Act>, dy: &[f32], mut grads: Option<&mut Grads>) -> NormBack {
        let c = self.gamma.len();
        let cg = c / self.groups;
        let mut nb = NormBack { dx: vec![0.0f32; x.len()], d_shift_in: vec![0.0; c], d_scale: vec![0.0; c], d_shift: vec![0.0; c] };
        let mut gx = vec![0.0f32; cg * hw];
        for (gi, &(mean, inv)) in st.iter().enumerate() {
            let (mut sa, mut sb) = (0.0f64, 0.0f64);
            for (k, ch) in (gi * cg..(gi + 1) * cg).enumerate() {
                let (m, q, g) = self.coeffs(ch, (mean, inv), shift_in, post);
                let a = shift_in.map_or(0.0, |s| s[ch]) as f64;
                let r = ch * hw..(ch + 1) * hw;
                // x̂ = x·inv + (a − mean)·inv, in f32 per element; the sums in f64 lanes.
                let [ga, gb, sz, szx] = norm_pass1(act, &x[r.clone()], &dy[r], m, q, inv as f32, ((a - mean) * inv) as f32, g as f32, &mut gx[k * hw..(k + 1) * hw]);
                sa += ga;
                sb += gb;
                let mul = post.map_or(1.0, |(sc, _)| 1.0 + sc[ch] as f64);
                nb.d_scale[ch] = (self.gamma[ch] as f64 * szx + self.beta[ch] as f64 * sz) as f32;
                nb.d_shift[ch] = sz as f32;
                if let Some(gr) = grads.as_deref_mut() {
                    gr.0[self.id][ch] += (mul * szx) as f32;
                    gr.0[self.id + 1][ch] += (mul * sz) as f32;
                }
            }
            let n = (cg * hw) as f64;
            let (ma, mb) = (sa / n, sb / n);
            for (k, ch) in (gi * cg..(gi + 1) * cg).enumerate() {
                let a = shift_in.map_or(0.0, |s| s[ch]) as f64;
                let r = ch * hw..(ch + 1) * hw;
                nb.d_shift_in[ch] = norm_pass2(&x[r.clone()], &gx[k * hw..(k + 1) * hw], inv as f32, ((a - mean) * inv) as f32, ma as f32, mb as f32, &mut nb.dx[r]) as f32;
            }
        }
        nb
    }

    /// γ and β.
    pub fn tensors(&mut self) -> [Tensor2<'_>; 2] {
        let c = self.gamma.len();
        [("weight", vec![c], &mut self.gamma), ("bias", vec![c], &mut self.beta)]
    }
}

/// The gradients [`Norm::backward_full`] returns: with respect to the input, and per channel to the
/// input shift, the scale and the shift.
pub struct NormBack {
    pub dx: Vec<f32>,
    pub d_shift_in: Vec<f32>,
    pub d_scale: Vec<f32>,
    pub d_shift: Vec<f32>,
}

/// The group norm backward's first pass over one channel: dz = dy·act'(x·m + q), g = dz·gch into `gb`,
/// and the sums (Σg, Σg·x̂, Σdz, Σdz·x̂) with x̂ = x·xi + xc, in eight f64 lanes (AVX2 where the CPU has
/// it; no FMA, so the same bits either way).
#[allow(clippy::too_many_arguments)]
fn norm_pass1(act: Option<Act>, x: &[f32], dy: &[f32], m: f32, q: f32, xi: f32, xc: f32, gch: f32, gb: &mut [f32]) -> [f64; 4] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { norm_pass1_avx2(act, x, dy, m, q, xi, xc, gch, gb) };
    }
    norm_pass1_body(act, x, dy, m, q, xi, xc, gch, gb)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn norm_pass1_avx2(act: Option<Act>, x: &[f32], dy: &[f32], m: f32, q: f32, xi: f32, xc: f32, gch: f32, gb: &mut [f32]) -> [f64; 4] {
    norm_pass1_body(act, x, dy, m, q, xi, xc, gch, gb)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn norm_pass1_body(act: Option<Act>, x: &[f32], dy: &[f32], m: f32, q: f32, xi: f32, xc: f32, gch: f32, gb: &mut [f32]) -> [f64; 4] {
    match act {
        None => pass1_with(|_| 1.0, x, dy, m, q, xi, xc, gch, gb),
        Some(Act::Silu) => pass1_with(
            |z| {
                let s = 1.0 / (1.0 + exp_f32(-z));
                s * (1.0 + z * (1.0 - s))
            },
            x,
            dy,
            m,
            q,
            xi,
            xc,
            gch,
            gb,
        ),
        Some(a) => pass1_with(|z| a.grad(z), x, dy, m, q, xi, xc, gch, gb),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pass1_with(grad: impl Fn(f32) -> f32, x: &[f32], dy: &[f32], m: f32, q: f32, xi: f32, xc: f32, gch: f32, gb: &mut [f32]) -> [f64; 4] {
    let mut acc = [[0.0f64; 8]; 4];
    let one = |j: usize, xv: f32, d: f32, o: &mut f32, acc: &mut [[f64; 8]; 4]| {
        let dz = d * grad(xv * m + q);
        let xh = xv * xi + xc;
        let g = dz * gch;
        *o = g;
        acc[0][j] += g as f64;
        acc[1][j] += (g * xh) as f64;
        acc[2][j] += dz as f64;
        acc[3][j] += (dz * xh) as f64;
    };
    let n8 = x.len() / 8 * 8;
    for ((xc8, dc8), oc8) in x[..n8].chunks_exact(8).zip(dy[..n8].chunks_exact(8)).zip(gb[..n8].chunks_exact_mut(8)) {
        for j in 0..8 {
            one(j, xc8[j], dc8[j], &mut oc8[j], &mut acc);
        }
    }
    for (j, ((&xv, &d), o)) in x[n8..].iter().zip(&dy[n8..]).zip(&mut gb[n8..]).enumerate() {
        one(j, xv, d, o, &mut acc);
    }
    acc.map(|l| l.iter().sum())
}

/// The second pass: dx = inv·(g − ma − x̂·mb) into `dx`, returning Σ dx (f64 lanes).
#[allow(clippy::too_many_arguments)]
fn norm_pass2(x: &[f32], g: &[f32], xi: f32, xc: f32, ma: f32, mb: f32, dx: &mut [f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { norm_pass2_avx2(x, g, xi, xc, ma, mb, dx) };
    }
    norm_pass2_body(x, g, xi, xc, ma, mb, dx)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn norm_pass2_avx2(x: &[f32], g: &[f32], xi: f32, xc: f32, ma: f32, mb: f32, dx: &mut [f32]) -> f64 {
    norm_pass2_body(x, g, xi, xc, ma, mb, dx)
}

#[inline(always)]
fn norm_pass2_body(x: &[f32], g: &[f32], xi: f32, xc: f32, ma: f32, mb: f32, dx: &mut [f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    for (j, ((&xv, &gv), o)) in x.iter().zip(g).zip(dx.iter_mut()).enumerate() {
        let xh = xv * xi + xc;
        let v = xi * (gv - ma - xh * mb);
        *o = v;
        acc[j % 8] += v as f64;
    }
    acc.iter().sum()
}

/// dst = act(src · m + q), element-wise (the AVX2 build where the CPU has it: no FMA, so the same bits).
fn affine_act(act: Option<Act>, src: &[f32], dst: &mut [f32], m: f32, q: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { affine_act_avx2(act, src, dst, m, q) };
    }
    affine_act_body(act, src, dst, m, q)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn affine_act_avx2(act: Option<Act>, src: &[f32], dst: &mut [f32], m: f32, q: f32) {
    affine_act_body(act, src, dst, m, q)
}

#[inline(always)]
fn affine_act_body(act: Option<Act>, src: &[f32], dst: &mut [f32], m: f32, q: f32) {
    let it = dst.iter_mut().zip(src);
    match act {
        None => it.for_each(|(d, &v)| *d = v * m + q),
        Some(Act::Silu) => it.for_each(|(d, &v)| {
            let z = v * m + q;
            *d = z / (1.0 + exp_f32(-z));
        }),
        Some(Act::Relu) => it.for_each(|(d, &v)| *d = (v * m + q).max(0.0)),
        Some(a) => it.for_each(|(d, &v)| *d = a.at(v * m + q)),
    }
}

/// A row of scores into softmax probabilities (max-shifted; max and sum in eight lanes).
fn softmax(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { softmax_avx2(row) };
    }
    softmax_body(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_avx2(row: &mut [f32]) {
    softmax_body(row)
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    let mut mx = [f32::NEG_INFINITY; 8];
    let mut it = row.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            mx[j] = if c[j] > mx[j] { c[j] } else { mx[j] };
        }
    }
    let m = it.remainder().iter().chain(&mx).fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    row.iter_mut().for_each(|v| *v = exp_f32(*v - m));
    let mut z = [0.0f32; 8];
    let mut it = row.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            z[j] += c[j];
        }
    }
    let iz = 1.0 / (it.remainder().iter().sum::<f32>() + z.iter().sum::<f32>());
    row.iter_mut().for_each(|v| *v *= iz);
}

/// A linear map y = W x + b, W [out, in].
#[derive(Clone, Debug)]
pub struct Lin {
    out: usize,
    inp: usize,
    w: Vec<f32>,
    b: Vec<f32>,
    /// Index of the weight in the network's parameter list (the bias follows it).
    pub(crate) id: usize,
}

impl Lin {
    /// From a candle linear layer.
    pub fn from_candle(l: &candle_nn::Linear) -> candle_core::Result<Self> {
        let (out, inp) = l.weight().dims2()?;
        let b = match l.bias() {
            Some(b) => host(b)?,
            None => vec![0.0; out],
        };
        Ok(Lin { out, inp, w: host(l.weight())?, b, id: 0 })
    }

    /// W x + b for one vector x (with `act` applied to x first when given).
    pub fn vec(&self, x: &[f32], act: Option<Act>) -> Vec<f32> {
        let xa: Vec<f32> = match act {
            Some(a) => x.iter().map(|&v| a.at(v)).collect(),
            None => x.to_vec(),
        };
        (0..self.out).map(|o| self.b[o] + self.w[o * self.inp..(o + 1) * self.inp].iter().zip(&xa).map(|(w, v)| w * v).sum::<f32>()).collect()
    }

    /// The weight [out, in] and the bias.
    pub fn tensors(&mut self) -> [Tensor2<'_>; 2] {
        let (o, i) = (self.out, self.inp);
        [("weight", vec![o, i], &mut self.w), ("bias", vec![o], &mut self.b)]
    }

    /// Output size.
    pub fn out_dim(&self) -> usize {
        self.out
    }

    /// For y = [`Self::vec`] of (x, act): the weight and bias gradients of dy · y added into `grads`, and
    /// the gradient with respect to x.
    pub fn vec_backward(&self, x: &[f32], act: Option<Act>, dy: &[f32], grads: Option<&mut Grads>) -> Vec<f32> {
        if let Some(g) = grads {
            let xa: Vec<f32> = x.iter().map(|&v| act.map_or(v, |a| a.at(v))).collect();
            for (o, &d) in dy.iter().enumerate() {
                g.0[self.id][o * self.inp..(o + 1) * self.inp].iter_mut().zip(&xa).for_each(|(w, &v)| *w += d * v);
                g.0[self.id + 1][o] += d;
            }
        }
        (0..self.inp)
            .map(|i| {
                let s: f32 = dy.iter().enumerate().map(|(o, &d)| d * self.w[o * self.inp + i]).sum();
                act.map_or(s, |a| s * a.grad(x[i]))
            })
            .collect()
    }

    /// For Y = [`Self::cols`] of X: dW += dY Xᵀ and db += Σ dY into `grads`.
    pub fn cols_weight_grads(&self, x: &[f32], dy: &[f32], n: usize, grads: &mut Grads, flops: &mut u64) {
        gemm(self.out, self.inp, n, &mut grads.0[self.id], self.inp, true, dy, n, 1, x, 1, n, 1.0);
        add_row_sums(dy, n, &mut grads.0[self.id + 1]);
        *flops += 2 * (self.out * n * self.inp) as u64;
    }

    /// dst [in, n] += Wᵀ dy for the columns of dy [out, n].
    pub fn cols_t_acc(&self, dy: &[f32], n: usize, dst: &mut [f32], flops: &mut u64) {
        gemm(self.inp, n, self.out, dst, n, true, &self.w, 1, self.inp, dy, n, 1, 1.0);
        *flops += 2 * (self.out * n * self.inp) as u64;
    }

    /// W X + b for the columns of X [in, n], into a new [out, n].
    pub fn cols(&self, x: &[f32], n: usize, flops: &mut u64) -> Vec<f32> {
        let mut y = vec![0.0f32; self.out * n];
        for (r, &b) in y.chunks_mut(n).zip(&self.b) {
            r.fill(b);
        }
        gemm(self.out, n, self.inp, &mut y, n, true, &self.w, self.inp, 1, x, n, 1, 1.0);
        *flops += 2 * (self.out * n * self.inp) as u64;
        y
    }
}

/// diffusers' `Attention` on an image: group norm, q/k/v projections, softmax(q kᵀ/√d) v per head, the
/// output projection, the residual, and division by `rescale`.
#[derive(Clone, Debug)]
pub struct SelfAttention {
    /// The group norm (none in a scale_shift mid block without `attn_norm_num_groups`).
    pub norm: Option<Norm>,
    /// Query, key, value and output projections.
    pub q: Lin,
    pub k: Lin,
    pub v: Lin,
    pub out: Lin,
    /// Number of heads.
    pub heads: usize,
    /// The residual's divisor.
    pub rescale: f32,
}

/// What [`SelfAttention::backward`] needs of a forward pass: its input, the norm's statistics and the
/// projections.
pub struct AttnRec {
    x: Vec<f32>,
    stats: Vec<(f64, f64)>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// The heads' output before the output projection.
    o: Vec<f32>,
}

impl SelfAttention {
    /// The block on `x` [C, L].
    pub fn forward(&self, x: &[f32], l: usize, flops: &mut u64) -> Vec<f32> {
        self.forward_rec(x, l, flops).0
    }

    /// [`Self::forward`], and what the backward pass needs.
    pub fn forward_rec(&self, x: &[f32], l: usize, flops: &mut u64) -> (Vec<f32>, AttnRec) {
        let c = self.q.out;
        let (hn, stats) = match &self.norm {
            Some(n) => {
                let st = n.stats(x, l, None);
                (n.apply_with(x, l, &st, None, None, None), st)
            }
            None => (x.to_vec(), Vec::new()),
        };
        let (q, k, v) = (self.q.cols(&hn, l, flops), self.k.cols(&hn, l, flops), self.v.cols(&hn, l, flops));
        let dh = c / self.heads;
        let mut o = vec![0.0f32; c * l];
        let mut s = vec![0.0f32; l * l];
        for h in 0..self.heads {
            let off = h * dh * l;
            self.probabilities(&q[off..], &k[off..], dh, l, &mut s);
            // o[a, i] = Σ_j v[a, j] S[i, j].
            gemm(dh, l, l, &mut o[off..], l, false, &v[off..], l, 1, &s, 1, l, 1.0);
            *flops += 4 * (l * l * dh) as u64;
        }
        let mut y = self.out.cols(&o, l, flops);
        let r = 1.0 / self.rescale;
        y.iter_mut().zip(x).for_each(|(y, &xv)| *y = (*y + xv) * r);
        (y, AttnRec { x: x.to_vec(), stats, q, k, v, o })
    }

    /// P[i, j] = softmax_j(Σ_a q[a, i] k[a, j] / √dh) for one head (q, k: [dh, L] at row stride L).
    fn probabilities(&self, q: &[f32], k: &[f32], dh: usize, l: usize, p: &mut [f32]) {
        let scale = 1.0 / (dh as f32).sqrt();
        gemm(l, l, dh, p, l, false, q, 1, l, k, l, 1, scale);
        p.chunks_mut(l).for_each(softmax);
    }

    /// The gradient with respect to x of Σ dy · [`Self::forward`] at x, from the forward's record; the
    /// parameters' gradients go into `grads` when given.
    pub fn backward(&self, rec: &AttnRec, dy: &[f32], l: usize, flops: &mut u64, mut grads: Option<&mut Grads>) -> Vec<f32> {
        let c = self.q.out;
        let dh = c / self.heads;
        let scale = 1.0 / (dh as f32).sqrt();
        let r = 1.0 / self.rescale;
        let dyr: Vec<f32> = dy.iter().map(|&d| d * r).collect();
        // dO = Woᵀ dy/r; then per head dV = dO P, dP = dOᵀ V, dS = P ⊙ (dP − rowsum(P ⊙ dP)),
        // dQ = scale · K dSᵀ, dK = scale · Q dS.
        let mut d_o = vec![0.0f32; c * l];
        self.out.cols_t_acc(&dyr, l, &mut d_o, flops);
        let (mut dq, mut dk, mut dv) = (vec![0.0f32; c * l], vec![0.0f32; c * l], vec![0.0f32; c * l]);
        let mut p = vec![0.0f32; l * l];
        let mut dp = vec![0.0f32; l * l];
        for h in 0..self.heads {
            let off = h * dh * l;
            self.probabilities(&rec.q[off..], &rec.k[off..], dh, l, &mut p);
            gemm(dh, l, l, &mut dv[off..], l, false, &d_o[off..], l, 1, &p, l, 1, 1.0);
            gemm(l, l, dh, &mut dp, l, false, &d_o[off..], 1, l, &rec.v[off..], l, 1, 1.0);
            for (pr, dr) in p.chunks(l).zip(dp.chunks_mut(l)) {
                let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                dr.iter_mut().zip(pr).for_each(|(d, &pv)| *d = pv * (*d - dot));
            }
            gemm(dh, l, l, &mut dq[off..], l, false, &rec.k[off..], l, 1, &dp, 1, l, scale);
            gemm(dh, l, l, &mut dk[off..], l, false, &rec.q[off..], l, 1, &dp, l, 1, scale);
            *flops += 10 * (l * l * dh) as u64;
        }
        let mut dhn = vec![0.0f32; c * l];
        self.q.cols_t_acc(&dq, l, &mut dhn, flops);
        self.k.cols_t_acc(&dk, l, &mut dhn, flops);
        self.v.cols_t_acc(&dv, l, &mut dhn, flops);
        if let Some(g) = grads.as_deref_mut() {
            let hn = match &self.norm {
                Some(n) => n.apply_with(&rec.x, l, &rec.stats, None, None, None),
                None => rec.x.clone(),
            };
            self.out.cols_weight_grads(&rec.o, &dyr, l, g, flops);
            for (lin, d) in [(&self.q, &dq), (&self.k, &dk), (&self.v, &dv)] {
                lin.cols_weight_grads(&hn, d, l, g, flops);
            }
        }
        let mut dx = match &self.norm {
            Some(n) => n.backward_full(&rec.x, l, &rec.stats, None, None, None, &dhn, grads).dx,
            None => dhn,
        };
        dx.iter_mut().zip(&dyr).for_each(|(d, &g)| *d += g);
        dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_naive_product_with_strides() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        // A stored transposed (a_rs = 1, a_cs = m), B row-major.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let mut d = vec![1.0f32; m * n];
        gemm(m, n, k, &mut d, n, true, &at, 1, m, &b, n, 1, 2.0);
        for i in 0..m {
            for j in 0..n {
                let want = 1.0 + 2.0 * (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum::<f32>();
                assert!((d[i * n + j] - want).abs() < 1e-5, "{i},{j}");
            }
        }
    }
}
