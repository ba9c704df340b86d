//! Linear maps y = W x + b: on one vector (time embeddings) and on the columns of a matrix (attention
//! projections), with their transposes and weight gradients.

use super::{add_row_sums, gemm, host, Act, Grads, Tensor2};

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

    /// W x + b for one vector x (with `act` applied to x first when given), each sum in the order of
    /// `x` (the bits of `b + Σ w·x` by `Iterator::sum`).
    pub fn vec(&self, x: &[f32], act: Option<Act>) -> Vec<f32> {
        let xa: Vec<f32> = match act {
            Some(a) => x.iter().map(|&v| a.at(v)).collect(),
            None => x.to_vec(),
        };
        // Each output's products summed in order from the start `Iterator::sum` uses, eight outputs
        // side by side so that their sums overlap.
        let start: f32 = std::iter::empty::<f32>().sum();
        let mut y = Vec::with_capacity(self.out);
        for (o0, rows) in (0..self.out).step_by(8).zip(self.w.chunks(8 * self.inp)) {
            let n = rows.len() / self.inp;
            let mut acc = [start; 8];
            for (i, &v) in xa.iter().enumerate() {
                for (a, k) in acc.iter_mut().zip(0..n) {
                    *a += rows[k * self.inp + i] * v;
                }
            }
            y.extend(acc[..n].iter().zip(&self.b[o0..]).map(|(a, b)| b + a));
        }
        y
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

#[cfg(test)]
mod tests {
    use super::super::norm::test_values;
    use super::*;

    /// The interleaved sums give the bits of `b + Σ w·x` summed output by output with
    /// `Iterator::sum`, with and without the activation, on sizes that leave a partial block of 8.
    #[test]
    fn vec_gives_the_plain_sums_bits() {
        for (out, inp) in [(13usize, 37usize), (8, 128), (64, 128), (1, 3)] {
            let lin = Lin { out, inp, w: test_values(out * inp, 1), b: test_values(out, 2), id: 0 };
            let x = test_values(inp, 3);
            for act in [None, Some(Act::Silu)] {
                let xa: Vec<f32> = x.iter().map(|&v| act.map_or(v, |a| a.at(v))).collect();
                let want: Vec<u32> = (0..out).map(|o| (lin.b[o] + lin.w[o * inp..(o + 1) * inp].iter().zip(&xa).map(|(w, v)| w * v).sum::<f32>()).to_bits()).collect();
                let got: Vec<u32> = lin.vec(&x, act).iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{out} × {inp}, {act:?}");
            }
        }
    }
}
