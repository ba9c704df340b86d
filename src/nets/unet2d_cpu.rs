//! The CPU path of diffusers' `UNet2DModel`: the network of [`crate::nets::unet2d::Unet2d`]
//! with its weights copied into the f32 kernels of [`crate::nets::kernels`], one image per thread. It
//! follows the candle forward pass block by block (a test in `tests/diffusers.rs` holds both to
//! diffusers' outputs and to each other); the candle network stays the device-generic path (GPUs).
//! The forward and backward passes live here; the child module `train` adds the parameter walk,
//! initialisation and the training loss.

mod train;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::nets::header::backend;
use crate::nets::kernels::{host, Act, AttnRec, ChannelMap, Conv, Grads, Lin, Norm, SelfAttention};
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

    /// The resnet on each image of `xs` ([cin, h·w] each) with its time embedding in `embs`; with a
    /// tape, what the backward pass needs is recorded on it.
    fn forward(&self, xs: &[Vec<f32>], h: usize, w: usize, embs: &[Vec<f32>], ws: &mut Work, tape: Option<&mut Vec<ResRec>>) -> Vec<Vec<f32>> {
        let hw = h * w;
        let g = group(hw);
        // Each norm (and its activation) is applied by the convolution after it, as it copies its input.
        let st1: Vec<Vec<(f64, f64)>> = xs.iter().map(|x| self.norm1.stats(x, hw, None)).collect();
        let m1: Vec<ChannelMap> = st1.iter().map(|st| ChannelMap { maps: self.norm1.maps(st, None, None), act: Some(self.act) }).collect();
        let (hb, _, _) = self.conv1.forward_many_mapped(xs, Some(&m1), h, w, false, g, &mut ws.col, &mut ws.flops);
        let ts = per_distinct(embs, |emb| self.temb.vec(emb, Some(self.act)));
        let mut st2 = Vec::with_capacity(xs.len());
        let m2: Vec<ChannelMap> = hb
            .iter()
            .zip(&ts)
            .map(|(hb, t)| {
                let (shift, post) = self.time_terms(t);
                let st = self.norm2.stats(hb, hw, shift);
                let m = ChannelMap { maps: self.norm2.maps(&st, shift, post), act: Some(self.act) };
                st2.push(st);
                m
            })
            .collect();
        let (mut out, _, _) = self.conv2.forward_many_mapped(&hb, Some(&m2), h, w, false, g, &mut ws.col, &mut ws.flops);
        let skip = self.shortcut.as_ref().map(|s| s.forward_many(xs, h, w, false, g, &mut ws.col, &mut ws.flops).0);
        let d = self.out_scale;
        for (i, o) in out.iter_mut().enumerate() {
            let sk = skip.as_ref().map_or(&xs[i], |s| &s[i]);
            o.iter_mut().zip(sk).for_each(|(o, &s)| *o = (s + *o) / d);
        }
        if let Some(tape) = tape {
            for ((((x, st1), hb), st2), t) in xs.iter().zip(st1).zip(hb).zip(st2).zip(ts) {
                tape.push(ResRec { x: x.clone(), st1, hb, st2, t });
            }
        }
        out
    }

    /// The time embedding's projection as the second norm's input shift (default) or its scale and
    /// shift (scale_shift).
    #[allow(clippy::type_complexity)]
    fn time_terms<'a>(&self, t: &'a [f32]) -> (Option<&'a [f32]>, Option<(&'a [f32], &'a [f32])>) {
        if self.scale_shift {
            let c = t.len() / 2;
            (None, Some((&t[..c], &t[c..])))
        } else {
            (Some(t), None)
        }
    }

    /// The gradient with respect to each input of Σ dy · resnet(x), from the forward's records; with
    /// `train` = (gradients, time embeddings, their gradients), the parameters' gradients and the
    /// embeddings' are added in.
    #[allow(clippy::type_complexity)]
    fn backward(&self, recs: &[ResRec], dys: &[Vec<f32>], h: usize, w: usize, ws: &mut Work, mut train: Option<(&mut Grads, &[Vec<f32>], &mut [Vec<f32>])>) -> Vec<Vec<f32>> {
        let hw = h * w;
        let g = group(hw);
        let d = self.out_scale;
        let dyd: Vec<Vec<f32>> = dys.iter().map(|dy| dy.iter().map(|&v| v / d).collect()).collect();
        if let Some((gr, _, _)) = train.as_mut() {
            let a2: Vec<Vec<f32>> = recs
                .iter()
                .map(|r| {
                    let (shift, post) = self.time_terms(&r.t);
                    self.norm2.apply_with(&r.hb, hw, &r.st2, shift, post, Some(self.act))
                })
                .collect();
            self.conv2.weight_grads(&a2, &dyd, h, w, false, g, &mut ws.col, gr, &mut ws.flops);
        }
        let da2 = self.conv2.backward_many(&dyd, h, w, false, g, &mut ws.col, &mut ws.flops);
        let mut dhb = Vec::with_capacity(recs.len());
        for (i, (r, da)) in recs.iter().zip(&da2).enumerate() {
            let (shift, post) = self.time_terms(&r.t);
            let nb = self.norm2.backward_full(&r.hb, hw, &r.st2, shift, post, Some(self.act), da, train.as_mut().map(|(gr, _, _)| &mut **gr));
            if let Some((gr, embs, demb)) = train.as_mut() {
                let dt: Vec<f32> = if self.scale_shift { nb.d_scale.iter().chain(&nb.d_shift).copied().collect() } else { nb.d_shift_in.clone() };
                let de = self.temb.vec_backward(&embs[i], Some(self.act), &dt, Some(gr));
                demb[i].iter_mut().zip(&de).for_each(|(a, &b)| *a += b);
            }
            dhb.push(nb.dx);
        }
        if let Some((gr, _, _)) = train.as_mut() {
            let a: Vec<Vec<f32>> = recs.iter().map(|r| self.norm1.apply_with(&r.x, hw, &r.st1, None, None, Some(self.act))).collect();
            self.conv1.weight_grads(&a, &dhb, h, w, false, g, &mut ws.col, gr, &mut ws.flops);
        }
        let da = self.conv1.backward_many(&dhb, h, w, false, g, &mut ws.col, &mut ws.flops);
        let mut dx: Vec<Vec<f32>> = recs.iter().zip(&da).map(|(r, da)| self.norm1.backward_full(&r.x, hw, &r.st1, None, None, Some(self.act), da, train.as_mut().map(|(gr, _, _)| &mut **gr)).dx).collect();
        let dskip = match &self.shortcut {
            Some(s) => {
                if let Some((gr, _, _)) = train.as_mut() {
                    let xs: Vec<Vec<f32>> = recs.iter().map(|r| r.x.clone()).collect();
                    s.weight_grads(&xs, &dyd, h, w, false, g, &mut ws.col, gr, &mut ws.flops);
                }
                s.backward_many(&dyd, h, w, false, g, &mut ws.col, &mut ws.flops)
            }
            None => dyd,
        };
        for (a, b) in dx.iter_mut().zip(&dskip) {
            a.iter_mut().zip(b).for_each(|(a, &b)| *a += b);
        }
        dx
    }
}
/// What [`Res::backward`] needs of one image's forward pass.
struct ResRec {
    x: Vec<f32>,
    st1: Vec<(f64, f64)>,
    hb: Vec<f32>,
    st2: Vec<(f64, f64)>,
    t: Vec<f32>,
}

/// A forward pass's records, and whether they include the convolutions' inputs (for weight gradients).
pub(crate) struct Tape {
    recs: Vec<Rec>,
    keep_inputs: bool,
}

/// One forward step as the backward pass finds it (popped in reverse order).
enum Rec {
    /// A resnet's records at h × w; for an up-block resnet, the channels of its input that came
    /// from below (the rest is the skip), as a count of values.
    Res(Vec<ResRec>, usize, usize, Option<usize>),
    /// An attention block on L positions.
    Attn(Vec<AttnRec>, usize),
    /// A convolution's input size, and its inputs when the tape keeps them (training).
    Conv(usize, usize, Vec<Vec<f32>>),
    /// The output norm's inputs and statistics.
    Out(Vec<Vec<f32>>, Vec<Vec<(f64, f64)>>, usize),
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
    /// The class embeddings' index in the parameter list.
    class_id: usize,
    /// The parameter tensors' sizes, in the parameter order.
    param_sizes: Vec<usize>,
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
            class_id: 0,
            param_sizes: Vec::new(),
            conv_in: conv(&net.conv_in)?,
            downs,
            mid,
            ups,
            norm_out: norm(&net.norm_out)?,
            conv_out: conv(&net.conv_out)?,
        })
        .map(|mut m| {
            m.assign_ids();
            m
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
        self.check(x, t, class_labels, out)?;
        out.par_chunks_mut(TEAM * dout).zip(x.par_chunks(TEAM * di)).enumerate().for_each_init(Work::default, |ws, (j, (o, xi))| {
            let r = j * TEAM..j * TEAM + xi.len() / di;
            self.forward_team(xi, &t[r.clone()], class_labels.map(|l| &l[r]), o, ws, None);
        });
        Ok(())
    }

    /// The batch's shapes and class labels against the model's.
    fn check(&self, x: &[f32], t: &[f32], class_labels: Option<&[u32]>, out: &[f32]) -> Result<()> {
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
                Ok(())
            }
            (Some(_), None) => Err(Error::param("class label", "none", "this model is class-conditional: give a class label")),
            (None, Some(_)) => Err(Error::param("class label", "given", "this model is not class-conditional: leave the class label out")),
            (None, None) => Ok(()),
        }
    }

    /// Multiply-adds (counted twice) of one image's forward pass.
    pub fn flops(&self) -> u64 {
        let (di, dout) = self.sizes();
        let mut ws = Work::default();
        let class = self.class_emb.as_ref().map(|_| [0]);
        self.forward_team(&vec![0.0; di], &[500.0], class.as_ref().map(|c| &c[..]), &mut vec![0.0; dout], &mut ws, None);
        ws.flops
    }

    /// The network on the images of `x` (a team) into `out`; with a tape, what the backward pass
    /// needs is recorded on it.
    fn forward_team(&self, x: &[f32], t: &[f32], class: Option<&[u32]>, out: &mut [f32], ws: &mut Work, mut tape: Option<&mut Tape>) {
        let [_, h0, w0] = self.shape_in;
        let (di, dout) = self.sizes();
        let xs: Vec<Vec<f32>> = x.chunks(di).map(|xi| if self.center { xi.iter().map(|&v| v * 2.0 - 1.0).collect() } else { xi.to_vec() }).collect();
        let embs = self.embeddings(t, class);
        let taping = tape.is_some();
        let keep = tape.as_ref().is_some_and(|t| t.keep_inputs);
        let kept = |h: &Vec<Vec<f32>>| if keep { h.clone() } else { Vec::new() };
        let mut rec = |r: Rec| {
            if let Some(tp) = tape.as_deref_mut() {
                tp.recs.push(r);
            }
        };
        let res = |r: &Res, h: &[Vec<f32>], hh: usize, ww: usize, ws: &mut Work, split: Option<usize>, rec: &mut dyn FnMut(Rec)| -> Vec<Vec<f32>> {
            let mut rr = Vec::new();
            let y = r.forward(h, hh, ww, &embs, ws, taping.then_some(&mut rr));
            rec(Rec::Res(rr, hh, ww, split));
            y
        };
        let attend = |a: &SelfAttention, h: Vec<Vec<f32>>, l: usize, ws: &mut Work, rec: &mut dyn FnMut(Rec)| -> Vec<Vec<f32>> {
            if !taping {
                return h.iter().map(|x| a.forward(x, l, &mut ws.flops)).collect();
            }
            let (ys, rs): (Vec<_>, Vec<_>) = h.iter().map(|x| a.forward_rec(x, l, &mut ws.flops)).unzip();
            rec(Rec::Attn(rs, l));
            ys
        };
        rec(Rec::Conv(h0, w0, kept(&xs)));
        let (h, mut hh, mut ww) = self.conv_in.forward_many(&xs, h0, w0, false, group(h0 * w0), &mut ws.col, &mut ws.flops);
        // Every down-path activation is a skip; the newest one is the next layer's input.
        let mut skips = vec![h];
        for blk in &self.downs {
            for (j, r) in blk.resnets.iter().enumerate() {
                let mut y = res(r, &skips[skips.len() - 1], hh, ww, ws, None, &mut rec);
                if let Some(a) = blk.attns.get(j) {
                    y = attend(a, y, hh * ww, ws, &mut rec);
                }
                skips.push(y);
            }
            if let Some(d) = &blk.resample {
                rec(Rec::Conv(hh, ww, kept(&skips[skips.len() - 1])));
                let (y, oh, ow) = d.forward_many(&skips[skips.len() - 1], hh, ww, false, group(hh * ww / 4), &mut ws.col, &mut ws.flops);
                (hh, ww) = (oh, ow);
                skips.push(y);
            }
        }
        let mut h = match &self.mid {
            Some((first, a, second)) => {
                let mut y = res(first, &skips[skips.len() - 1], hh, ww, ws, None, &mut rec);
                if let Some(a) = a {
                    y = attend(a, y, hh * ww, ws, &mut rec);
                }
                res(second, &y, hh, ww, ws, None, &mut rec)
            }
            None => skips[skips.len() - 1].clone(),
        };
        for blk in &self.ups {
            for (j, r) in blk.resnets.iter().enumerate() {
                // Checked at load time: the levels' skips match the up blocks' resnets one for one.
                let s = skips.pop().expect("one skip per up-block resnet");
                let split = h[0].len();
                h.iter_mut().zip(&s).for_each(|(hi, si)| hi.extend_from_slice(si));
                h = res(r, &h, hh, ww, ws, Some(split), &mut rec);
                if let Some(a) = blk.attns.get(j) {
                    h = attend(a, h, hh * ww, ws, &mut rec);
                }
            }
            if let Some(u) = &blk.resample {
                rec(Rec::Conv(hh, ww, kept(&h)));
                (h, hh, ww) = u.forward_many(&h, hh, ww, true, group(4 * hh * ww), &mut ws.col, &mut ws.flops);
            }
        }
        let st: Vec<Vec<(f64, f64)>> = h.iter().map(|x| self.norm_out.stats(x, hh * ww, None)).collect();
        let a: Vec<Vec<f32>> = h.iter().zip(&st).map(|(x, st)| self.norm_out.apply_with(x, hh * ww, st, None, None, Some(Act::Silu))).collect();
        if taping {
            rec(Rec::Out(h, st, hh * ww));
            rec(Rec::Conv(hh, ww, Vec::new()));
        }
        let (o, _, _) = self.conv_out.forward_many(&a, hh, ww, false, group(hh * ww), &mut ws.col, &mut ws.flops);
        self.write_output(&o, t, dout, out);
    }

    /// The output convolution's result per image into `out` (divided by the noise level for Fourier
    /// models, as diffusers does).
    fn write_output(&self, o: &[Vec<f32>], t: &[f32], dout: usize, out: &mut [f32]) {
        for ((dst, o), &ti) in out.chunks_mut(dout).zip(o).zip(t) {
            if self.fourier {
                dst.iter_mut().zip(o).for_each(|(d, &v)| *d = v / ti);
            } else {
                dst.copy_from_slice(o);
            }
        }
    }

    /// The time embedding (plus the class embedding) of each image.
    fn embeddings(&self, t: &[f32], class: Option<&[u32]>) -> Vec<Vec<f32>> {
        let keys: Vec<(f32, u32)> = (0..t.len()).map(|i| (t[i], class.map_or(0, |c| c[i]))).collect();
        per_distinct(&keys, |&(ti, l)| {
            let (feat, _) = self.time.features(&[ti]);
            let mut emb = self.lin2.vec(&self.lin1.vec(&feat, None), Some(Act::Silu));
            if let (Some((dim, e)), Some(_)) = (&self.class_emb, class) {
                let l = l as usize;
                emb.iter_mut().zip(&e[l * dim..(l + 1) * dim]).for_each(|(a, &b)| *a += b);
            }
            emb
        })
    }

    /// Vector–Jacobian products: the gradient with respect to each image of `x` of v · net(x) at
    /// timestep labels `t` into `out` (the shapes of [`Self::forward`]), by one forward pass that keeps
    /// what it needs and one backward pass (weights are constants). Teams of four images per thread,
    /// so the same bits on any thread count.
    pub fn vjp(&self, x: &[f32], t: &[f32], class_labels: Option<&[u32]>, v: &[f32], out: &mut [f32]) -> Result<()> {
        let (di, dout) = self.sizes();
        self.check(x, t, class_labels, out)?;
        if v.len() != t.len() * dout || di != dout {
            return Err(Error::param("UNet2DModel VJP batch", format!("{} cotangents", v.len()), format!("expected B × {dout} (and as many outputs as inputs)")));
        }
        out.par_chunks_mut(VJP_TEAM * di).zip(x.par_chunks(VJP_TEAM * di)).zip(v.par_chunks(VJP_TEAM * dout)).enumerate().for_each_init(Work::default, |ws, (j, ((o, xi), vi))| {
            let r = j * VJP_TEAM..j * VJP_TEAM + xi.len() / di;
            let mut tape = Tape { recs: Vec::new(), keep_inputs: false };
            let mut y = vec![0.0f32; vi.len()];
            let class = class_labels.map(|l| &l[r.clone()]);
            self.forward_team(xi, &t[r.clone()], class, &mut y, ws, Some(&mut tape));
            self.backward_team(tape, vi, &t[r], class, o, ws, None);
        });
        Ok(())
    }

    /// The backward pass over a team's tape for cotangents `v`: the input gradients into `out` (when
    /// not empty) and, with `grads`, every parameter's gradient added into it.
    #[allow(clippy::too_many_arguments)]
    fn backward_team(&self, tape: Tape, v: &[f32], t: &[f32], class: Option<&[u32]>, out: &mut [f32], ws: &mut Work, mut grads: Option<&mut Grads>) {
        let (_, dout) = self.sizes();
        let mut recs = tape.recs;
        let mut pop = || recs.pop().expect("the tape holds one record per forward step");
        let embs = self.embeddings(t, class);
        let mut demb: Vec<Vec<f32>> = embs.iter().map(|e| vec![0.0; e.len()]).collect();
        let mut dh: Vec<Vec<f32>> = v.chunks(dout).zip(t).map(|(vi, &ti)| if self.fourier { vi.iter().map(|&a| a / ti).collect() } else { vi.to_vec() }).collect();
        let Rec::Conv(hh, ww, _) = pop() else { unreachable!("the output convolution's record") };
        let Rec::Out(hs, sts, hw) = pop() else { unreachable!("the output norm's record") };
        if let Some(g) = grads.as_deref_mut() {
            let a: Vec<Vec<f32>> = hs.iter().zip(&sts).map(|(x, st)| self.norm_out.apply_with(x, hw, st, None, None, Some(Act::Silu))).collect();
            self.conv_out.weight_grads(&a, &dh, hh, ww, false, group(hw), &mut ws.col, g, &mut ws.flops);
        }
        let da = self.conv_out.backward_many(&dh, hh, ww, false, group(hw), &mut ws.col, &mut ws.flops);
        dh = hs.iter().zip(&sts).zip(&da).map(|((x, st), d)| self.norm_out.backward_full(x, hw, st, None, None, Some(Act::Silu), d, grads.as_deref_mut()).dx).collect();
        let conv_back = |c: &Conv, up: bool, dh: Vec<Vec<f32>>, ws: &mut Work, grads: &mut Option<&mut Grads>, pop: &mut dyn FnMut() -> Rec| {
            let Rec::Conv(h, w, inputs) = pop() else { unreachable!("a convolution's record") };
            let (oh, ow) = c.out_hw(h, w, up);
            if let Some(g) = grads.as_deref_mut() {
                c.weight_grads(&inputs, &dh, h, w, up, group(oh * ow), &mut ws.col, g, &mut ws.flops);
            }
            c.backward_many(&dh, h, w, up, group(oh * ow), &mut ws.col, &mut ws.flops)
        };
        let through = |r: &Res, a: Option<&SelfAttention>, dh: Vec<Vec<f32>>, ws: &mut Work, grads: &mut Option<&mut Grads>, demb: &mut [Vec<f32>], pop: &mut dyn FnMut() -> Rec| -> (Vec<Vec<f32>>, Option<usize>) {
            let mut dh = dh;
            if let Some(a) = a {
                let Rec::Attn(rs, l) = pop() else { unreachable!("an attention record") };
                dh = rs.iter().zip(&dh).map(|(rec, d)| a.backward(rec, d, l, &mut ws.flops, grads.as_deref_mut())).collect();
            }
            let Rec::Res(rs, h, w, split) = pop() else { unreachable!("a resnet record") };
            let tr = grads.as_deref_mut().map(|g| (g, &embs[..], demb));
            (r.backward(&rs, &dh, h, w, ws, tr), split)
        };
        // Gradients of the skips, in the order they were pushed.
        let mut dskips: Vec<Vec<Vec<f32>>> = Vec::new();
        for blk in self.ups.iter().rev() {
            if let Some(u) = &blk.resample {
                dh = conv_back(u, true, dh, ws, &mut grads, &mut pop);
            }
            for j in (0..blk.resnets.len()).rev() {
                let (dcat, split) = through(&blk.resnets[j], blk.attns.get(j), dh, ws, &mut grads, &mut demb, &mut pop);
                let (a, b) = split_channels(dcat, split.expect("up-block resnets record their split"));
                dh = a;
                dskips.push(b);
            }
        }
        if let Some((first, a, second)) = &self.mid {
            dh = through(second, None, dh, ws, &mut grads, &mut demb, &mut pop).0;
            dh = through(first, a.as_ref(), dh, ws, &mut grads, &mut demb, &mut pop).0;
        }
        let mut i = dskips.len();
        let mut add_skip = |dh: &mut Vec<Vec<f32>>| {
            i -= 1;
            for (a, b) in dh.iter_mut().zip(&dskips[i]) {
                a.iter_mut().zip(b).for_each(|(a, &b)| *a += b);
            }
        };
        for blk in self.downs.iter().rev() {
            if let Some(d) = &blk.resample {
                add_skip(&mut dh);
                dh = conv_back(d, false, dh, ws, &mut grads, &mut pop);
            }
            for j in (0..blk.resnets.len()).rev() {
                add_skip(&mut dh);
                dh = through(&blk.resnets[j], blk.attns.get(j), dh, ws, &mut grads, &mut demb, &mut pop).0;
            }
        }
        add_skip(&mut dh);
        let dx = conv_back(&self.conv_in, false, dh, ws, &mut grads, &mut pop);
        if let Some(g) = grads {
            self.embedding_backward(t, class, &demb, g);
        }
        let c = if self.center { 2.0 } else { 1.0 };
        for (o, d) in out.chunks_mut(self.sizes().0).zip(&dx) {
            o.iter_mut().zip(d).for_each(|(o, &g)| *o = g * c);
        }
    }
}

/// `f` of each item, computed once per run of consecutive items with the same bits (a batch at one
/// timestep shares its time embeddings; the same function of the same bits gives the same bits).
fn per_distinct<K: Bits, T: Clone>(items: &[K], f: impl Fn(&K) -> T) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let y = if i > 0 && it.same_bits(&items[i - 1]) { out[i - 1].clone() } else { f(it) };
        out.push(y);
    }
    out
}

/// Equality of bits (0.0 and −0.0 differ, a NaN equals itself).
trait Bits {
    fn same_bits(&self, other: &Self) -> bool;
}

impl Bits for Vec<f32> {
    fn same_bits(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Bits for (f32, u32) {
    fn same_bits(&self, other: &Self) -> bool {
        (self.0.to_bits(), self.1) == (other.0.to_bits(), other.1)
    }
}

/// Each image's gradient cut after its first `split` values: the part from below and the skip's.
#[allow(clippy::type_complexity)]
fn split_channels(dcat: Vec<Vec<f32>>, split: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    dcat.into_iter()
        .map(|mut d| {
            let s = d.split_off(split);
            (d, s)
        })
        .unzip()
}

/// Images per thread in a VJP (its records stay alive until the backward pass).
const VJP_TEAM: usize = 4;
