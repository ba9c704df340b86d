//! The 3×3 convolution's lowerings timed side by side on the layer shapes of the shipped experts and
//! the diffusers-course MNIST model (a team of 16 images, one thread, fastest of REPS passes):
//! - the shipped path, [`Conv::forward_many`], by the lowering it picks ([`Conv::lowering`]):
//!   Winograd's F(2×2, 3×3) or the direct kernel (AVX-512 CPUs) or else im2col and one matrix product
//!   with k = 9·cin over a group of images side by side;
//! - the direct kernel and Winograd's F(2×2, 3×3) each on every shape (Winograd's largest difference
//!   from im2col + GEMM relative to the largest output is printed);
//! - im2col + GEMM alone ([`Conv::forward_many_gemm`]), which the direct kernel's bits equal;
//! - an "implicit GEMM", kept as a record of why it is not used: the images zero-padded once, one
//!   after the other, and nine accumulated products with k = cin, each reading the padded images at
//!   the tap's offset (the border columns computed and dropped; f32 sums in another order, so its
//!   outputs differ by ≈ 1e-6: the largest difference is printed);
//! - the matrix products alone, on a column matrix built beforehand (what the convolution would cost
//!   if im2col and the copies were free): the ceiling the matrix-product library sets on these shapes.
//!
//! cargo run --release --example conv_lowering -- [REPS]

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig};
use wfrmix::nets::kernels::{gemm, Conv, Lowering};

/// Images per team, as `Unet2dCpu` cuts a batch.
const TEAM: usize = 16;

/// Images per matrix product at h·w pixels, as `Unet2dCpu` groups them.
fn group(hw: usize) -> usize {
    (1024 / hw).clamp(1, TEAM)
}

fn main() -> candle_core::Result<()> {
    let reps: usize = std::env::args().nth(1).map_or(Ok(20), |s| s.parse()).expect("REPS: a whole number");
    let mut rng = wfrmix::rng::seeded(1);
    let mut normal = |n: usize, s: f64| {
        let mut v = vec![0.0; n];
        wfrmix::rng::fill_normal(&mut rng, &mut v);
        v.iter().map(|&x| (x * s) as f32).collect::<Vec<f32>>()
    };
    println!("| cin → cout, h×w | images per product | shipped (µs per team) | lowering | direct | Winograd | im2col + GEMM | implicit GEMM | products alone | GFLOP/s: shipped, im2col + GEMM, products alone | direct = im2col bits | Winograd's largest difference / largest output | implicit's largest difference |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // Expert a's 3×3 shapes ([16, 32, 32] channels), then expert c's and the diffusers-course MNIST
    // model's ([32, 64, 64]), then DDPM-CIFAR-10's ([128, 256, 256, 256] on 32 to 4 pixels) and a wide one
    // on 7-pixel rows.
    for &(cin, cout, h) in &[(16, 16, 28), (32, 16, 28), (32, 32, 14), (32, 32, 7), (64, 32, 28), (64, 64, 14), (64, 64, 7), (128, 128, 32), (256, 256, 16), (256, 256, 8), (256, 256, 4), (128, 128, 7)] {
        let w = h;
        let p = h * w;
        let wt = normal(cout * cin * 9, (1.0 / (9.0 * cin as f64)).sqrt());
        let bias = normal(cout, 0.1);
        let weight = Tensor::from_vec(wt.clone(), (cout, cin, 3, 3), &Device::Cpu)?;
        let conv = Conv::from_candle(&Conv2d::new(weight, Some(Tensor::from_vec(bias.clone(), cout, &Device::Cpu)?), Conv2dConfig { padding: 1, ..Default::default() }), [1; 4])?;
        let xs: Vec<Vec<f32>> = (0..TEAM).map(|_| normal(cin * p, 1.0)).collect();
        let g = group(p);
        let (mut col, mut flops) = (Vec::new(), 0u64);
        let shipped = |col: &mut Vec<f32>, flops: &mut u64| conv.forward_many(&xs, h, w, false, g, col, flops).0;
        let im2col = |col: &mut Vec<f32>, flops: &mut u64| conv.forward_many_gemm(&xs, h, w, false, g, col, flops).0;
        let direct = |col: &mut Vec<f32>, flops: &mut u64| conv.forward_many_as(Lowering::Direct, &xs, None, h, w, false, g, col, flops).0;
        let winograd = |col: &mut Vec<f32>, flops: &mut u64| conv.forward_many_as(Lowering::Winograd, &xs, None, h, w, false, g, col, flops).0;

        // Implicit: per group, the images padded to (h+2)×(w+2) one after the other, with a margin of
        // w+3 zeros at both ends so that every tap's offset stays inside the buffer.
        let (pw, pp) = (w + 2, (h + 2) * (w + 2));
        let margin = pw + 1;
        let taps: Vec<Vec<f32>> = (0..9).map(|k| (0..cout * cin).map(|j| wt[(j / cin) * cin * 9 + (j % cin) * 9 + k]).collect()).collect();
        let implicit = |pad: &mut Vec<f32>, outp: &mut Vec<f32>| {
            let mut outs = Vec::with_capacity(TEAM);
            for gr in xs.chunks(g) {
                let np = gr.len() * pp;
                let rs = np + 2 * margin;
                pad.clear();
                pad.resize(cin * rs, 0.0);
                for (i, x) in gr.iter().enumerate() {
                    for c in 0..cin {
                        for y in 0..h {
                            let d = c * rs + margin + i * pp + (y + 1) * pw + 1;
                            pad[d..d + w].copy_from_slice(&x[c * p + y * w..c * p + (y + 1) * w]);
                        }
                    }
                }
                outp.clear();
                outp.resize(cout * np, 0.0);
                for (k, tap) in taps.iter().enumerate() {
                    let start = (margin as isize + (k / 3) as isize * pw as isize - pw as isize + (k % 3) as isize - 1) as usize;
                    gemm(cout, np, cin, outp, np, k > 0, tap, cin, 1, &pad[start..], rs, 1, 1.0);
                }
                for i in 0..gr.len() {
                    let mut o = Vec::with_capacity(cout * p);
                    for co in 0..cout {
                        for y in 0..h {
                            let s = co * np + i * pp + (y + 1) * pw + 1;
                            o.extend(outp[s..s + w].iter().map(|v| v + bias[co]));
                        }
                    }
                    outs.push(o);
                }
            }
            outs
        };
        let (mut pad, mut outp) = (Vec::new(), Vec::new());
        let a = shipped(&mut col, &mut flops);
        let b = implicit(&mut pad, &mut outp);
        let reference = im2col(&mut col, &mut flops);
        let same = direct(&mut col, &mut flops).iter().flatten().map(|v| v.to_bits()).eq(reference.iter().flatten().map(|v| v.to_bits()));
        let top = reference.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
        let wdiff = winograd(&mut col, &mut flops).iter().flatten().zip(reference.iter().flatten()).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / top;
        let diff = a.iter().flatten().zip(b.iter().flatten()).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        // The shipped products alone: the same shapes, operands' layout and one reused column
        // buffer (as the shipped path reuses its scratch), filled once.
        let kk = cin * 9;
        let col1 = normal(kk * g * p, 1.0);
        let mut dst = vec![0.0f32; cout * g * p];
        let products = |dst: &mut Vec<f32>| {
            for gr in xs.chunks(g) {
                let n = gr.len() * p;
                gemm(cout, n, kk, dst, n, true, &wt, kk, 1, &col1, n, 1, 1.0);
            }
        };
        let (mut ta, mut tb, mut tc, mut td, mut te, mut tf) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..reps {
            let t = Instant::now();
            std::hint::black_box(direct(&mut col, &mut flops));
            te = te.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::hint::black_box(winograd(&mut col, &mut flops));
            tf = tf.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::hint::black_box(im2col(&mut col, &mut flops));
            td = td.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            products(&mut dst);
            std::hint::black_box(&dst);
            tc = tc.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::hint::black_box(shipped(&mut col, &mut flops));
            ta = ta.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::hint::black_box(implicit(&mut pad, &mut outp));
            tb = tb.min(t.elapsed().as_secs_f64());
        }
        let gf = 2.0 * (cout * kk * p * TEAM) as f64 * 1e-9;
        let lowering = conv.lowering(h, w, false);
        println!("| {cin} → {cout}, {h}×{w} | {g} | {:.0} | {lowering:?} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0}, {:.0}, {:.0} | {same} | {wdiff:.1e} | {diff:.1e} |", ta * 1e6, te * 1e6, tf * 1e6, td * 1e6, tb * 1e6, tc * 1e6, gf / ta, gf / td, gf / tc);
    }
    Ok(())
}
