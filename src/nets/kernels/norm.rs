//! Group normalisation with its per-channel affine map, fused with the activation and the resnets' time
//! terms (a shift before the statistics, or a scale and shift after), and its backward pass; the
//! element-wise loops are compiled for AVX-512 or AVX2 where the CPU has them (the same bits in every
//! build: `widest!`).

use super::{Act, Grads, Tensor2};
use super::exp_fma;

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
                    lane_sums(&x[ch * hw..(ch + 1) * hw], a, &mut l1, &mut l2);
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
        ChannelMap { maps: self.maps(st, shift_in, post), act }.apply(x, hw)
    }

    /// The per-channel maps x ↦ x·m + q that [`Self::apply_with`] applies before the activation.
    pub fn maps(&self, st: &[(f64, f64)], shift_in: Option<&[f32]>, post: Option<(&[f32], &[f32])>) -> Vec<(f32, f32)> {
        let cg = self.gamma.len() / self.groups;
        (0..self.gamma.len())
            .map(|ch| {
                let (m, q, _) = self.coeffs(ch, st[ch / cg], shift_in, post);
                (m, q)
            })
            .collect()
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

widest! {
    /// The group norm backward's first pass over one channel: dz = dy·act'(x·m + q), g = dz·gch into `gb`,
    /// and the sums (Σg, Σg·x̂, Σdz, Σdz·x̂) with x̂ = x·xi + xc, in eight f64 lanes (the widest vectors the
    /// CPU has; the same bits in every build).
    fn norm_pass1(act: Option<Act>, x: &[f32], dy: &[f32], m: f32, q: f32, xi: f32, xc: f32, gch: f32, gb: &mut [f32]) -> [f64; 4] => norm_pass1_body, norm_pass1_avx512, norm_pass1_avx2
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn norm_pass1_body(act: Option<Act>, x: &[f32], dy: &[f32], m: f32, q: f32, xi: f32, xc: f32, gch: f32, gb: &mut [f32]) -> [f64; 4] {
    match act {
        None => pass1_with(|_| 1.0, x, dy, m, q, xi, xc, gch, gb),
        Some(Act::Silu) => pass1_with(
            |z| {
                let s = 1.0 / (1.0 + exp_fma(-z));
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

widest! {
    /// The second pass: dx = inv·(g − ma − x̂·mb) into `dx`, returning Σ dx (f64 lanes).
    fn norm_pass2(x: &[f32], g: &[f32], xi: f32, xc: f32, ma: f32, mb: f32, dx: &mut [f32]) -> f64 => norm_pass2_body, norm_pass2_avx512, norm_pass2_avx2
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

widest! {
    /// l1[j] += Σ (v + a), l2[j] += Σ (v + a)² over the values v of `row` at positions ≡ j (mod 8), in
    /// f64 (the widest build the CPU runs: the same operations in the same order, so the same bits).
    fn lane_sums(row: &[f32], a: f32, l1: &mut [f64; 8], l2: &mut [f64; 8]) => lane_sums_body, lane_sums_avx512, lane_sums_avx2
}

#[inline(always)]
fn lane_sums_body(row: &[f32], a: f32, l1: &mut [f64; 8], l2: &mut [f64; 8]) {
    let (mut s1, mut s2) = (*l1, *l2);
    let mut it = row.chunks_exact(8);
    for c8 in &mut it {
        for j in 0..8 {
            let v = (c8[j] + a) as f64;
            s1[j] += v;
            s2[j] += v * v;
        }
    }
    for (j, &v) in it.remainder().iter().enumerate() {
        let v = (v + a) as f64;
        s1[j] += v;
        s2[j] += v * v;
    }
    (*l1, *l2) = (s1, s2);
}

widest! {
    /// dst = act(src · m + q), element-wise (the widest build the CPU runs; the same bits in each).
    fn affine_act(act: Option<Act>, src: &[f32], dst: &mut [f32], m: f32, q: f32) => affine_act_body, affine_act_avx512, affine_act_avx2
}

#[inline(always)]
fn affine_act_body(act: Option<Act>, src: &[f32], dst: &mut [f32], m: f32, q: f32) {
    let it = dst.iter_mut().zip(src);
    match act {
        None => it.for_each(|(d, &v)| *d = v * m + q),
        Some(Act::Silu) => it.for_each(|(d, &v)| {
            let z = v * m + q;
            *d = z / (1.0 + exp_fma(-z));
        }),
        Some(Act::Relu) => it.for_each(|(d, &v)| *d = (v * m + q).max(0.0)),
        Some(a) => it.for_each(|(d, &v)| *d = a.at(v * m + q)),
    }
}

/// act(x·m_c + q_c) on each channel c of an image: a norm's application ([`Norm::maps`]), which a
/// convolution can fuse into the copy it makes of its input.
#[derive(Clone, Debug)]
pub struct ChannelMap {
    /// (m, q) per channel.
    pub maps: Vec<(f32, f32)>,
    pub act: Option<Act>,
}

impl ChannelMap {
    /// The map on `x` [C, hw].
    pub fn apply(&self, x: &[f32], hw: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; x.len()];
        for (ch, &(m, q)) in self.maps.iter().enumerate() {
            affine_act(self.act, &x[ch * hw..(ch + 1) * hw], &mut out[ch * hw..(ch + 1) * hw], m, q);
        }
        out
    }

    /// The map on one channel `src` into `dst`.
    pub(super) fn apply_channel(&self, ch: usize, src: &[f32], dst: &mut [f32]) {
        let (m, q) = self.maps[ch];
        affine_act(self.act, src, dst, m, q);
    }
}

/// Channel `c` of image `x` ([channels, hw]), mapped by `maps[i]` into `buf` when maps are given (the
/// convolutions' input copies apply the norm this way).
pub(super) fn mapped_channel<'a>(maps: Option<&[ChannelMap]>, i: usize, x: &'a [f32], c: usize, hw: usize, buf: &'a mut [f32]) -> &'a [f32] {
    let src = &x[c * hw..(c + 1) * hw];
    match maps {
        Some(m) => {
            m[i].apply_channel(c, src, buf);
            buf
        }
        None => src,
    }
}

/// Values in (−6, 6) from a fixed LCG, with every 97th in (−100, 100) to reach exp's clamps (test inputs).
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            if i % 97 == 0 { 200.0 * (u - 0.5) } else { 12.0 * (u - 0.5) }
        })
        .collect()
}

#[cfg(all(test, target_arch = "x86_64"))]
mod builds {
    use super::*;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The baseline, AVX2 and AVX-512 builds of every element-wise kernel give the same bits (each on
    /// the CPUs that have it), at lengths with every remainder mod 16.
    #[test]
    fn every_build_gives_the_same_bits() {
        let (h2, h5) = (std::arch::is_x86_feature_detected!("avx2"), std::arch::is_x86_feature_detected!("avx512f"));
        for n in [1usize, 7, 8, 15, 16, 17, 33, 196, 785] {
            let (x, dy) = (test_values(n, n as u64), test_values(n, 7 + n as u64));
            for act in [None, Some(Act::Silu), Some(Act::Gelu)] {
                let mut want = vec![0.0f32; n];
                affine_act_body(act, &x, &mut want, 0.7, -0.2);
                let mut g0 = vec![0.0f32; n];
                let s0 = norm_pass1_body(act, &x, &dy, 0.7, -0.2, 1.3, 0.1, 0.9, &mut g0);
                let mut d0 = vec![0.0f32; n];
                let t0 = norm_pass2_body(&x, &dy, 1.3, 0.1, 0.05, -0.3, &mut d0);
                let (mut l1, mut l2) = ([0.0; 8], [0.0; 8]);
                lane_sums_body(&x, 0.25, &mut l1, &mut l2);
                for (has, wide) in [(h2, false), (h5, true)] {
                    if !has {
                        continue;
                    }
                    let (mut got, mut g, mut d) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
                    let (mut m1, mut m2) = ([0.0; 8], [0.0; 8]);
                    // SAFETY: each build runs only where the CPU has its features (checked above).
                    let (s, t) = unsafe {
                        if wide {
                            affine_act_avx512(act, &x, &mut got, 0.7, -0.2);
                            lane_sums_avx512(&x, 0.25, &mut m1, &mut m2);
                            (norm_pass1_avx512(act, &x, &dy, 0.7, -0.2, 1.3, 0.1, 0.9, &mut g), norm_pass2_avx512(&x, &dy, 1.3, 0.1, 0.05, -0.3, &mut d))
                        } else {
                            affine_act_avx2(act, &x, &mut got, 0.7, -0.2);
                            lane_sums_avx2(&x, 0.25, &mut m1, &mut m2);
                            (norm_pass1_avx2(act, &x, &dy, 0.7, -0.2, 1.3, 0.1, 0.9, &mut g), norm_pass2_avx2(&x, &dy, 1.3, 0.1, 0.05, -0.3, &mut d))
                        }
                    };
                    assert_eq!(bits(&got), bits(&want), "affine_act n={n} {act:?} wide={wide}");
                    assert_eq!(bits(&g), bits(&g0), "norm_pass1 n={n} {act:?} wide={wide}");
                    assert_eq!(s.map(f64::to_bits), s0.map(f64::to_bits), "norm_pass1 sums n={n} wide={wide}");
                    assert_eq!((bits(&d), t.to_bits()), (bits(&d0), t0.to_bits()), "norm_pass2 n={n} wide={wide}");
                    assert_eq!((m1.map(f64::to_bits), m2.map(f64::to_bits)), (l1.map(f64::to_bits), l2.map(f64::to_bits)), "lane_sums n={n} wide={wide}");
                }
            }
        }
    }
}
