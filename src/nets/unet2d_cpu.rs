//! The CPU inference path of diffusers' `UNet2DModel`: the network of [`crate::nets::unet2d::Unet2d`]
//! with its weights copied into the f32 kernels of [`crate::nets::kernels`], one image per thread. It
//! follows the candle forward pass block by block (a test in `tests/diffusers.rs` holds both to
//! diffusers' outputs and to each other); the candle network stays the device-generic path (GPUs).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::nets::header::backend;
use crate::nets::kernels::{host, Act, Conv, Lin, Norm, SelfAttention};
use crate::nets::unet2d::{Attn, GNorm, Resnet, TimeProj, Unet2d};

fn norm(g: &GNorm) -> candle_core::Result<Norm> {
    Ok(Norm::new(g.groups, g.eps, host(&g.weight)?, host(&g.bias)?))
}

fn conv(c: &candle_nn::Conv2d) -> candle_core::Result<Conv> {
    let p = c.config().padding;
    Conv::from_candle(c, [p; 4])
}

struct Res {
    norm1: Norm,
    conv1: Conv,
    temb: Lin,
    norm2: Norm,
    conv2: Conv,
    shortcut: Option<Conv>,
    scale_shift: bool,
    out_scale: f32,
    act: Act,
}

impl Res {
    fn of(r: &Resnet) -> candle_core::Result<Self> {
        Ok(Res {
            norm1: norm(&r.norm1)?,
            conv1: conv(&r.conv1)?,
            temb: Lin::from_candle(&r.temb)?,
            norm2: norm(&r.norm2)?,
            conv2: conv(&r.conv2)?,
            shortcut: r.shortcut.as_ref().map(conv).transpose()?,
            scale_shift: r.scale_shift,
            out_scale: r.out_scale as f32,
            act: r.act,
        })
    }

    /// The resnet on each image of `xs` ([cin, h·w] each) with its time embedding in `embs`.
    fn forward(&self, xs: &[Vec<f32>], h: usize, w: usize, embs: &[Vec<f32>], ws: &mut Work) -> Vec<Vec<f32>> {
        let hw = h * w;
        let g = group(hw);
        let a: Vec<Vec<f32>> = xs.iter().map(|x| self.norm1.apply(x, hw, None, None, Some(self.act))).collect();
        let (hb, _, _) = self.conv1.forward_many(&a, h, w, false, g, &mut ws.col, &mut ws.flops);
        let a2: Vec<Vec<f32>> = hb
            .iter()
            .zip(embs)
            .map(|(hb, emb)| {
                let t = self.temb.vec(emb, Some(self.act));
                if self.scale_shift {
                    let c = t.len() / 2;
                    self.norm2.apply(hb, hw, None, Some((&t[..c], &t[c..])), Some(self.act))
                } else {
                    self.norm2.apply(hb, hw, Some(&t), None, Some(self.act))
                }
            })
            .collect();
        let (mut out, _, _) = self.conv2.forward_many(&a2, h, w, false, g, &mut ws.col, &mut ws.flops);
        let skip = self.shortcut.as_ref().map(|s| s.forward_many(xs, h, w, false, g, &mut ws.col, &mut ws.flops).0);
        let d = self.out_scale;
        for (i, o) in out.iter_mut().enumerate() {
            let sk = skip.as_ref().map_or(&xs[i], |s| &s[i]);
            o.iter_mut().zip(sk).for_each(|(o, &s)| *o = (s + *o) / d);
        }
        out
    }
}

/// Images one thread carries through the network together, so that the convolutions of small levels
/// share matrix products (the batch is cut into such teams by index: the same on any number of threads).
const TEAM: usize = 16;

/// The columns a convolution's matrix product aims at: images per product = COLS / (h·w), 1 to TEAM.
const COLS: usize = 1024;

fn group(hw: usize) -> usize {
    (COLS / hw.max(1)).clamp(1, TEAM)
}

fn attn(a: &Attn) -> candle_core::Result<SelfAttention> {
    Ok(SelfAttention {
        norm: a.norm.as_ref().map(norm).transpose()?,
        q: Lin::from_candle(&a.q)?,
        k: Lin::from_candle(&a.k)?,
        v: Lin::from_candle(&a.v)?,
        out: Lin::from_candle(&a.out)?,
        heads: a.heads,
        rescale: a.rescale as f32,
    })
}

struct Level {
    resnets: Vec<Res>,
    attns: Vec<SelfAttention>,
    /// The down- or upsampling convolution.
    resample: Option<Conv>,
}

/// Scratch that lives for one image: the im2col buffer and the FLOP count.
#[derive(Default)]
struct Work {
    col: Vec<f32>,
    flops: u64,
}

/// A `UNet2DModel` on the CPU kernels (f32, one image per thread).
pub struct Unet2dCpu {
    shape_in: [usize; 3],
    out_ch: usize,
    center: bool,
    fourier: bool,
    time: TimeProj,
    lin1: Lin,
    lin2: Lin,
    /// Class embeddings [classes, temb].
    class_emb: Option<(usize, Vec<f32>)>,
    conv_in: Conv,
    downs: Vec<Level>,
    mid: Option<(Res, Option<SelfAttention>, Res)>,
    ups: Vec<Level>,
    norm_out: Norm,
    conv_out: Conv,
}

impl Unet2dCpu {
    /// The network of `net` on the CPU kernels, for inputs of `h` × `w` pixels.
    pub fn new(net: &Unet2d, h: usize, w: usize) -> Result<Self> {
        Self::build(net, h, w).map_err(backend("copying the UNet2DModel's weights to the CPU kernels"))
    }

    fn build(net: &Unet2d, h: usize, w: usize) -> candle_core::Result<Self> {
        let c = &net.cfg;
        let level = |resnets: &[Resnet], attns: &[Attn], resample: Option<Conv>| -> candle_core::Result<Level> {
            Ok(Level { resnets: resnets.iter().map(Res::of).collect::<candle_core::Result<_>>()?, attns: attns.iter().map(attn).collect::<candle_core::Result<_>>()?, resample })
        };
        let downs = net
            .downs
            .iter()
            .map(|b| {
                let down = match &b.down {
                    // downsample_padding 0: diffusers pads right and bottom by one, then convolves unpadded.
                    Some(d) if b.pad_right => Some(Conv::from_candle(d, [0, 0, 1, 1])?),
                    Some(d) => Some(conv(d)?),
                    None => None,
                };
                level(&b.resnets, &b.attns, down)
            })
            .collect::<candle_core::Result<_>>()?;
        let ups = net.ups.iter().map(|b| level(&b.resnets, &b.attns, b.up.as_ref().map(conv).transpose()?)).collect::<candle_core::Result<_>>()?;
        let mid = match &net.mid {
            Some(m) => Some((Res::of(&m.first)?, m.attn.as_ref().map(attn).transpose()?, Res::of(&m.second)?)),
            None => None,
        };
        let class_emb = match &net.class_emb {
            Some(e) => Some((e.embeddings().dim(1)?, host(e.embeddings())?)),
            None => None,
        };
        Ok(Unet2dCpu {
            shape_in: [c.in_channels, h, w],
            out_ch: c.out_channels,
            center: c.center_input_sample,
            fourier: c.time_embedding_type == "fourier",
            time: net.time.clone(),
            lin1: Lin::from_candle(&net.lin1)?,
            lin2: Lin::from_candle(&net.lin2)?,
            class_emb,
            conv_in: conv(&net.conv_in)?,
            downs,
            mid,
            ups,
            norm_out: norm(&net.norm_out)?,
            conv_out: conv(&net.conv_out)?,
        })
    }

    /// Values per input image and per output image.
    pub fn sizes(&self) -> (usize, usize) {
        let [c, h, w] = self.shape_in;
        (c * h * w, self.out_ch * h * w)
    }

    /// The network's output for the images `x` [B, C, H, W] (row-major) at timestep labels `t` (B values)
    /// and class labels (B values, class-conditional models only) into `out` [B, C_out, H, W]. Images
    /// are spread over the rayon pool; each image's arithmetic is the same on any number of threads.
    pub fn forward(&self, x: &[f32], t: &[f32], class_labels: Option<&[u32]>, out: &mut [f32]) -> Result<()> {
        let (di, dout) = self.sizes();
        let b = t.len();
        if x.len() != b * di || out.len() != b * dout || class_labels.is_some_and(|l| l.len() != b) {
            return Err(Error::param("UNet2DModel batch", format!("{} inputs, {} labels, {} outputs", x.len(), b, out.len()), format!("expected B × {di} inputs, B labels and B × {dout} outputs")));
        }
        match (&self.class_emb, class_labels) {
            (Some((dim, e)), Some(l)) => {
                let k = e.len() / dim;
                if let Some(bad) = l.iter().find(|&&v| v as usize >= k) {
                    return Err(Error::param("class label", bad, format!("the model has classes 0 to {}", k - 1)));
                }
            }
            (Some(_), None) => return Err(Error::param("class label", "none", "this model is class-conditional: give a class label")),
            (None, Some(_)) => return Err(Error::param("class label", "given", "this model is not class-conditional: leave the class label out")),
            (None, None) => {}
        }
        out.par_chunks_mut(TEAM * dout).zip(x.par_chunks(TEAM * di)).enumerate().for_each_init(Work::default, |ws, (j, (o, xi))| {
            let r = j * TEAM..j * TEAM + xi.len() / di;
            self.forward_team(xi, &t[r.clone()], class_labels.map(|l| &l[r]), o, ws);
        });
        Ok(())
    }

    /// Multiply-adds (counted twice) of one image's forward pass.
    pub fn flops(&self) -> u64 {
        let (di, dout) = self.sizes();
        let mut ws = Work::default();
        let class = self.class_emb.as_ref().map(|_| [0]);
        self.forward_team(&vec![0.0; di], &[500.0], class.as_ref().map(|c| &c[..]), &mut vec![0.0; dout], &mut ws);
        ws.flops
    }

    /// The network on the images of `x` (a team) into `out`.
    fn forward_team(&self, x: &[f32], t: &[f32], class: Option<&[u32]>, out: &mut [f32], ws: &mut Work) {
        let [_, h0, w0] = self.shape_in;
        let (di, dout) = self.sizes();
        let xs: Vec<Vec<f32>> = x.chunks(di).map(|xi| if self.center { xi.iter().map(|&v| v * 2.0 - 1.0).collect() } else { xi.to_vec() }).collect();
        let embs: Vec<Vec<f32>> = (0..xs.len())
            .map(|i| {
                let (feat, _) = self.time.features(&t[i..i + 1]);
                let mut emb = self.lin2.vec(&self.lin1.vec(&feat, None), Some(Act::Silu));
                if let (Some((dim, e)), Some(l)) = (&self.class_emb, class) {
                    let l = l[i] as usize;
                    emb.iter_mut().zip(&e[l * dim..(l + 1) * dim]).for_each(|(a, &b)| *a += b);
                }
                emb
            })
            .collect();
        let attend = |a: &SelfAttention, h: Vec<Vec<f32>>, l: usize, ws: &mut Work| -> Vec<Vec<f32>> { h.iter().map(|x| a.forward(x, l, &mut ws.flops)).collect() };
        let (mut h, mut hh, mut ww) = self.conv_in.forward_many(&xs, h0, w0, false, group(h0 * w0), &mut ws.col, &mut ws.flops);
        let mut skips = vec![h.clone()];
        for blk in &self.downs {
            for (j, r) in blk.resnets.iter().enumerate() {
                h = r.forward(&h, hh, ww, &embs, ws);
                if let Some(a) = blk.attns.get(j) {
                    h = attend(a, h, hh * ww, ws);
                }
                skips.push(h.clone());
            }
            if let Some(d) = &blk.resample {
                (h, hh, ww) = d.forward_many(&h, hh, ww, false, group(hh * ww / 4), &mut ws.col, &mut ws.flops);
                skips.push(h.clone());
            }
        }
        if let Some((first, a, second)) = &self.mid {
            h = first.forward(&h, hh, ww, &embs, ws);
            if let Some(a) = a {
                h = attend(a, h, hh * ww, ws);
            }
            h = second.forward(&h, hh, ww, &embs, ws);
        }
        for blk in &self.ups {
            for (j, r) in blk.resnets.iter().enumerate() {
                // Checked at load time: the levels' skips match the up blocks' resnets one for one.
                let s = skips.pop().expect("one skip per up-block resnet");
                h.iter_mut().zip(&s).for_each(|(hi, si)| hi.extend_from_slice(si));
                h = r.forward(&h, hh, ww, &embs, ws);
                if let Some(a) = blk.attns.get(j) {
                    h = attend(a, h, hh * ww, ws);
                }
            }
            if let Some(u) = &blk.resample {
                (h, hh, ww) = u.forward_many(&h, hh, ww, true, group(4 * hh * ww), &mut ws.col, &mut ws.flops);
            }
        }
        let a: Vec<Vec<f32>> = h.iter().map(|x| self.norm_out.apply(x, hh * ww, None, None, Some(Act::Silu))).collect();
        let (o, _, _) = self.conv_out.forward_many(&a, hh, ww, false, group(hh * ww), &mut ws.col, &mut ws.flops);
        for ((dst, o), &ti) in out.chunks_mut(dout).zip(&o).zip(t) {
            if self.fourier {
                dst.iter_mut().zip(o).for_each(|(d, &v)| *d = v / ti);
            } else {
                dst.copy_from_slice(o);
            }
        }
    }
}
