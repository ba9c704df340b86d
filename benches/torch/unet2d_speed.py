"""Torch's side of the UNet2DModel speed comparison (run by hand, never by CI; torch and diffusers in a
virtual environment outside the repository):

    /path/to/venv/bin/python benches/torch/unet2d_speed.py mnist|cifar OUTDIR [BATCH] [REPS]
    /path/to/venv/bin/python benches/torch/unet2d_speed.py CHECKPOINT_DIR - [BATCH] [REPS]

Builds the diffusers course's MNIST model or DDPM-CIFAR-10's architecture with torch's seeded random
init, saves it to OUTDIR with save_pretrained (so that `cargo run --release --example unet2d_speed --
OUTDIR` times wfrmix on the same weights), and prints torch's forward time per batch and the time of a
forward pass plus the gradient with respect to the input (Σ ε̂·v backpropagated, what a Hutchinson VJP
needs), each the fastest of REPS; with a checkpoint directory (e.g. weights/fmnist_unet_a) it times that
network instead and saves nothing, on torch.get_num_threads() threads (set OMP_NUM_THREADS / torch.set_num_threads to compare).
"""
import sys
import time

import torch
from diffusers import UNet2DModel

CONFIGS = {
    "mnist": dict(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2,
                  block_out_channels=(32, 64, 64),
                  down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
    "cifar": dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                  block_out_channels=(128, 256, 256, 256),
                  down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                  attention_head_dim=None, norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False,
                  freq_shift=1),
}


def main():
    which, out = sys.argv[1], sys.argv[2]
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    torch.manual_seed(0)
    if which in CONFIGS:
        model = UNet2DModel(**CONFIGS[which]).eval()
        model.save_pretrained(out)
    else:
        model = UNet2DModel.from_pretrained(which).eval()
    c, s = model.config.in_channels, model.config.sample_size
    x = torch.randn(batch, c, s, s)
    t = torch.tensor([(i * 997) % 1000 for i in range(batch)])
    params = sum(p.numel() for p in model.parameters())
    def fastest(f):
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            best = min(best, time.perf_counter() - t0)
        return best

    with torch.no_grad():
        model(x, t)
        fwd = fastest(lambda: model(x, t))
    for p in model.parameters():
        p.requires_grad_(False)
    v = torch.randn_like(x)
    xg = x.clone().requires_grad_(True)
    (model(xg, t).sample * v).sum().backward()

    def vjp_once():
        xg.grad = None
        (model(xg, t).sample * v).sum().backward()

    vjp = fastest(vjp_once)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {which}: {params} parameters, batch {batch}: "
          f"forward {fwd:.3f} s, forward + input gradient {vjp:.3f} s ({vjp / fwd:.2f} forwards)")


if __name__ == "__main__":
    main()
