"""The f32 ceiling of a host: PyTorch's sgemm (MKL / oneDNN) rate on the ViT's own product shapes,
and the images per second (embedding) and seconds per step (training) that rate would give if
every FLOP of the model ran at it — the most any f32 implementation can reach on the host.

    python bench/sgemm_ceiling.py --threads 2 [--pytorch-img-s 14.57] [--pytorch-step-s 7.2]

With PyTorch's own measured figures (`pytorch_embed.py`, `pytorch_train.py`, same threads), it
prints the largest ratio over PyTorch that the ceiling allows. FLOPs are counted as 2 per
multiply-add of the products (linear layers, attention, patch embedding; the element-wise work
is not counted, so the ceiling is optimistic). Dependencies: torch.
"""
import argparse
import time

import torch

ARCHS = {
    # name: (embed dim, depth, mlp hidden, patch)
    "vits14": (384, 12, 1536, 14),
    "vitb14": (768, 12, 3072, 14),
}


def vit_flops(arch, size):
    """FLOPs of one forward of one image of size² pixels."""
    d, depth, hidden, p = ARCHS[arch]
    n = (size // p) ** 2
    t = n + 1
    per_block = t * (4 * d * d + 2 * d * hidden) + 2 * t * t * d
    return 2 * (depth * per_block + n * 3 * p * p * d)


def train_step_flops(batch, local_crops, prototypes=65536, masked_share=0.15):
    """FLOPs of one DINOv2 step of `bench train` (ViT-S/14, 2 global 224² and `local_crops` 98²
    crops per image): the student's forward and backward (3 forwards' worth), the teacher's
    forward on the global crops, the heads' last layer on the class tokens and the masked
    patches (a DINOv2 mask draws ~15% of the patches on average)."""
    global_f = vit_flops("vits14", 224)
    local_f = vit_flops("vits14", 98)
    student = 3 * batch * (2 * global_f + local_crops * local_f)
    teacher = batch * 2 * global_f
    rows = batch * (2 + local_crops) + 2 * batch * masked_share * 256
    head = 2 * rows * (384 * 2048 + 2048 * 2048 + 2048 * 256 + 256 * prototypes)
    return student + teacher + 3 * head + head


def rate(m, k, n, repeat=10):
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * m * k * n * repeat / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pytorch-img-s", type=float, help="PyTorch's ViT-S/14 embed img/s")
    ap.add_argument("--pytorch-img-s-b", type=float, help="PyTorch's ViT-B/14 embed img/s")
    ap.add_argument("--pytorch-step-s", type=float, help="PyTorch's train step s")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = args.batch * 257
    shapes = [(rows, 384, 1152), (rows, 384, 1536), (rows, 1536, 384),
              (rows, 768, 2304), (rows, 768, 3072), (rows, 3072, 768)]
    rates = []
    for m, k, n in shapes:
        r = rate(m, k, n)
        rates.append(r)
        print(f"sgemm {m}x{k} @ {k}x{n}: {r / 1e9:.1f} GFLOP/s")
    best = max(rates)
    print(f"sgemm best: {best / 1e9:.1f} GFLOP/s on {args.threads} threads")
    for arch, measured in (("vits14", args.pytorch_img_s), ("vitb14", args.pytorch_img_s_b)):
        ceiling = best / vit_flops(arch, 224)
        line = f"{arch} embed ceiling: {ceiling:.2f} img/s"
        if measured:
            line += f" = {ceiling / measured:.2f}x PyTorch's {measured} img/s"
        print(line)
    step = train_step_flops(args.batch, 8) / best
    line = f"vits14 train step ceiling: {step:.2f} s"
    if args.pytorch_step_s:
        line += f" = {args.pytorch_step_s / step:.2f}x PyTorch's {args.pytorch_step_s} s"
    print(line)


if __name__ == "__main__":
    main()
