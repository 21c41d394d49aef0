#!/usr/bin/env python3
"""PyTorch reference benchmark for DINOv2 embedding (forward pass only).

Builds `transformers.Dinov2Model` (or `Dinov2WithRegistersModel` for the `_reg`
archs) from a `Dinov2Config` with RANDOM weights -- nothing is downloaded --
and times the inference-mode forward pass on random input images.

Prints exactly one JSON line on stdout, e.g.

  {"impl": "pytorch-transformers", "torch": "2.15.0+cu132", ..., "images_per_s": 12.3, ...}

Used as the reference for `dinoadapt-dev bench embed` (see bench/README.md).
"""

import os

# Never touch the network: everything is built from a config with random weights.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

# (hidden_size, depth, heads, use_swiglu_ffn); mlp_ratio is 4 for all.
ARCHS = {
    "vits14": (384, 12, 6, False),
    "vitb14": (768, 12, 12, False),
    "vitl14": (1024, 24, 16, False),
    "vitg14": (1536, 40, 24, True),
}
ALL_ARCHS = sorted(list(ARCHS) + [a + "_reg" for a in ARCHS])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="vits14", choices=ALL_ARCHS)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--res", type=int, default=224, help="input H=W in pixels (multiple of 14)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op and inter-op threads")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--iters",
        type=int,
        default=0,
        help="timed batches; 0 (default) = auto: enough batches for ~--target-seconds, "
        "estimated from the last warmup batch",
    )
    p.add_argument("--target-seconds", type=float, default=25.0, help="run length aimed for by --iters 0")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--attn", default="sdpa", choices=["eager", "sdpa"])
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_model(arch, attn, transformers):
    reg = arch.endswith("_reg")
    hidden, depth, heads, swiglu = ARCHS[arch[:-4] if reg else arch]
    common = dict(
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        mlp_ratio=4,
        use_swiglu_ffn=swiglu,
        image_size=518,
        patch_size=14,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        qkv_bias=True,
        layerscale_value=1.0,
    )
    if reg:
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **common)
        cls = transformers.Dinov2WithRegistersModel
    else:
        config = transformers.Dinov2Config(**common)
        cls = transformers.Dinov2Model
    # Select the attention kernel. `_from_config` accepts attn_implementation in
    # transformers 4.4x and 5.x; fall back to setting it on the config.
    try:
        model = cls._from_config(config, attn_implementation=attn)
    except TypeError:
        config._attn_implementation = attn
        model = cls(config)
    return model


def peak_rss_mb():
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kib = r / 1024.0 if sys.platform == "darwin" else float(r)
    mb = kib / 1024.0
    try:
        import psutil

        mi = psutil.Process().memory_info()
        mb = max(mb, getattr(mi, "peak_wset", 0) / 2**20)
    except Exception:
        pass
    return mb


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None):
    args = parse_args(argv)
    if args.res % 14 != 0:
        sys.exit(f"--res must be a multiple of 14 (patch size), got {args.res}")

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:
        pass  # already set (only possible once per process)
    torch.manual_seed(args.seed)

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda requested but torch.cuda.is_available() is False")
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]

    model = build_model(args.arch, args.attn, transformers)
    model = model.to(device=device, dtype=dtype).eval()
    attn_used = getattr(model.config, "_attn_implementation", args.attn)
    n_params = sum(p.numel() for p in model.parameters())

    x = torch.randn(args.batch, 3, args.res, args.res, generator=torch.Generator().manual_seed(args.seed))
    x = x.to(device=device, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step():
        out = model(pixel_values=x)
        # Touch the outputs a DINOv2 embedder would return (CLS + patch tokens).
        return out.pooler_output, out.last_hidden_state

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    with torch.inference_mode():
        last_warm = None
        for _ in range(max(args.warmup, 0)):
            t0 = time.perf_counter()
            step()
            sync()
            last_warm = time.perf_counter() - t0

        iters = args.iters
        if iters <= 0:
            if last_warm is None:  # no warmup: time one batch to estimate
                t0 = time.perf_counter()
                step()
                sync()
                last_warm = time.perf_counter() - t0
            iters = int(max(3, min(10_000, round(args.target_seconds / max(last_warm, 1e-6)))))

        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            pooled, tokens = step()
        sync()
        elapsed = time.perf_counter() - t0

    result = {
        "impl": "pytorch-transformers",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "arch": args.arch,
        "batch": args.batch,
        "res": args.res,
        "threads": args.threads,
        "device": args.device,
        "dtype": args.dtype,
        "attn": attn_used,
        "iters": iters,
        "warmup": args.warmup,
        "seconds_total": round(elapsed, 4),
        "images_per_s": round(args.batch * iters / elapsed, 4),
        "seconds_per_batch": round(elapsed / iters, 6),
        "params_m": round(n_params / 1e6, 3),
        "tokens": int(tokens.shape[1]),
    }
    if device.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["gpu"] = torch.cuda.get_device_name()
    else:
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)
        result["cpu"] = cpu_model()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
