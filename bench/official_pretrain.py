#!/usr/bin/env python3
"""Reference DINOv2 pre-training with the OFFICIAL training components, on CPU.

Reads the same TOML recipe as ``dinoadapt pretrain --recipe FILE.toml`` and trains a
(small) ViT with facebookresearch/dinov2's own code -- ``SSLMetaArch.forward_backward``
(dinov2/train/ssl_meta_arch.py), the ``do_train`` loop body, ``build_schedulers``,
``build_optimizer`` and ``apply_optim_scheduler`` (dinov2/train/train.py), the official
param groups (dinov2/utils/param_groups.py), ``DataAugmentationDINO``, ``MaskingGenerator``
and ``collate_data_and_cast`` (dinov2/data) -- imported from a checkout given with
``--dinov2`` (tested at commit b8931f7bf91576930313be2c6d6af376033b35f0). Nothing of it is
copied here. The teacher's class token is evaluated with the same weighted kNN as
dinoadapt's monitor (pretrain/src/monitor.rs, core/src/eval/knn.rs) at iteration 0, every
``--eval-every`` iterations and at the end.

What had to change for a single CPU process (everything else is the official code path):

* ``xformers`` is not installed: a stub ``xformers.ops.fmha`` module provides
  ``BlockDiagonalMask.from_tensor_list`` (concatenate along dim 1) and ``.split`` (split
  back). SSLMetaArch uses it only to push [local cls; global cls; masked patches] through
  the row-wise DINO head in one call, so cat + split is exact. Without the other xformers
  names, dinov2.layers falls back to ``torch`` SDPA attention and the iBOT loss to
  ``log_softmax`` (the official fallbacks).
* ``NestedTensorBlock.forward`` on a list (the student's [global, local] crops) runs each
  tensor through ``Block.forward`` separately instead of one block-diagonal xformers
  sequence: attention is per sequence, so the maths is the same (with stochastic depth the
  per-tensor path draws its own random sample subsets).
* ``Tensor.cuda(non_blocking=True)`` is the identity (everything stays on the CPU);
  ``fsdp_synchronize_streams`` (torch.cuda.synchronize + FSDP streams) is a no-op.
* No FSDP: the teacher starts as ``load_state_dict`` of the student (what
  ``prepare_for_distributed_training`` does), ``update_teacher`` zips the student's and the
  teacher's parameters and does the same ``_foreach_mul_`` / ``_foreach_add_``, and the
  per-module gradient clipping is ``torch.nn.utils.clip_grad_norm_(module.parameters())``
  for each of ``model.student.values()`` (FSDP's ``clip_grad_norm_`` on one rank).
* No process group: ``iBOTPatchLoss.sinkhorn_knopp_teacher`` calls ``dist.all_reduce``
  unconditionally; its module sees a ``torch.distributed`` proxy whose ``all_reduce`` is the
  identity when no process group exists (world size 1).
* fp32 everywhere: ``compute_precision.grad_scaler = false``, collate dtype float32.
* Recipe keys the official code does not expose as config are set on the built objects:
  ``loss.student_temp`` / ``loss.center_momentum`` on DINOLoss and iBOTPatchLoss, and
  ``loss.sinkhorn_iterations`` (official: the default 3) by wrapping
  ``DINOLoss.sinkhorn_knopp_teacher`` -- the wrapper also records the teacher targets' mean
  row entropy for the log. ``DataAugmentationDINO``'s Normalize gets ``crops.mean/std``.

Usage::

    python3 bench/official_pretrain.py --recipe recipes/mnist_tiny.toml \\
        --dinov2 /work/dinov2_official --out /tmp/official_run \\
        [--set optim.base_lr=0.02 ...] [--threads 1] [--eval-every 100]

Outputs in ``--out``: ``curve.csv`` (iteration,knn), ``losses.csv`` (one row per iteration:
the official loss_dict terms, their displayed sum ``total``, the teacher-target entropy, the
teacher class-token std, gradient norms and the schedule values), ``config.yaml`` (the
merged official config), ``recipe.json`` (the resolved recipe) and ``summary.json``.
"""

import argparse
import copy
import csv
import json
import math
import os
import sys
import time
import tomllib
import types
import warnings

# ---------------------------------------------------------------------------------------------
# Recipe: the schema of pretrain/src/recipe.rs, with its defaults (the official ones).
# ---------------------------------------------------------------------------------------------

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

DEFAULTS = {
    "name": "",
    "model": {
        "arch": None,
        "checkpoint": None,
        "embed_dim": None,
        "depth": None,
        "num_heads": None,
        "patch_size": None,
        "img_size": None,
        "mlp_ratio": None,
        "num_register_tokens": None,
        "drop_path_rate": 0.0,
        "layerscale": 1e-5,
        "precision": "backend",
    },
    "heads": {
        "prototypes": 65536,
        "hidden_dim": 2048,
        "bottleneck_dim": 256,
        "nlayers": 3,
        "separate_ibot_head": False,
    },
    "data": {
        "images": [],
        "manifest": None,
        "batch_size": None,
        "slides": [],
        "slide_mpp": [],
        "slide_tile_size": None,
        "slide_tiles_per_epoch": None,
        "volumes": [],
        "volume_axis": None,
        "volume_intensity": None,
        "volume_channels": None,
        "volume_size": None,
        "rasters": [],
        "raster_bands": [],
        "raster_chip_size": None,
        "raster_chips_per_epoch": None,
    },
    "crops": {
        "global_size": 224,
        "global_scale": [0.32, 1.0],
        "local_size": 98,
        "local_scale": [0.05, 0.32],
        "local_crops": 8,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "forward": "packed",
    },
    "masking": {"probability": 0.5, "ratio": [0.1, 0.5]},
    "loss": {
        "dino_weight": 1.0,
        "ibot_weight": 1.0,
        "koleo_weight": 0.1,
        "student_temp": 0.1,
        "centering": "sinkhorn_knopp",
        "sinkhorn_iterations": 3,
        "center_momentum": 0.9,
    },
    "optim": {
        "epochs": 100,
        "epoch_length": 1250,
        "warmup_epochs": 10,
        "freeze_last_layer_epochs": 1,
        "base_lr": 0.004,
        "min_lr": 1e-6,
        "weight_decay": 0.04,
        "weight_decay_end": 0.4,
        "scaling_batch_size": None,
        "clip_grad": 3.0,
        "layerwise_decay": 0.9,
        "patch_embed_lr_mult": 0.2,
        "adamw_beta1": 0.9,
        "adamw_beta2": 0.999,
    },
    "teacher": {
        "momentum_teacher": 0.992,
        "final_momentum_teacher": 1.0,
        "warmup_teacher_temp": 0.04,
        "teacher_temp": 0.07,
        "warmup_teacher_temp_epochs": 30,
    },
    "train": {
        "seed": 0,
        "output_dir": "runs/pretrain",
        "device": "cpu",
        "max_steps": None,
        "checkpoint_every": 500,
        "keep_last": 3,
        "head_warmup_iterations": 0,
        "log_every": 20,
    },
    "guard": {
        "enabled": True,
        "min_cls_std": 1e-4,
        "max_entropy_fraction": 0.999,
        "patience": 20,
        "entropy_after": None,
    },
    "monitor": {
        "train": None,
        "val": None,
        "every": 0,
        "k": 20,
        "temperature": 0.07,
        "max_per_class": None,
    },
}

# The dinoadapt presets (core/src/vit/config.rs): embed_dim, depth, heads, patch, native size,
# FFN. `_reg` adds 4 register tokens (and the antialiased interpolation of those models).
PRESETS = {
    "vits14": (384, 12, 6, 14, 518, "mlp"),
    "vitb14": (768, 12, 12, 14, 518, "mlp"),
    "vitl14": (1024, 24, 16, 14, 518, "mlp"),
    "vitg14": (1536, 40, 24, 14, 518, "swiglufused"),
}


def parse_value(text):
    """A TOML literal if it parses as one, else a string (dinoadapt's `--set`)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_path(table, key, value):
    parts = key.split(".")
    t = table
    for p in parts[:-1]:
        t = t.setdefault(p, {})
        if not isinstance(t, dict):
            raise SystemExit(f"override `{key}`: `{p}` is not a table")
    t[parts[-1]] = value


def load_recipe(path, overrides):
    with open(path, "rb") as f:
        table = tomllib.load(f)
    for o in overrides:
        if "=" not in o:
            raise SystemExit(f"override `{o}`: expected KEY=VALUE such as optim.base_lr=0.001")
        k, v = o.split("=", 1)
        set_path(table, k.strip(), parse_value(v.strip()))
    recipe = copy.deepcopy(DEFAULTS)
    for key, value in table.items():
        if key not in recipe:
            raise SystemExit(f"{path}: unknown recipe section `{key}`")
        if not isinstance(recipe[key], dict):
            recipe[key] = value
            continue
        if not isinstance(value, dict):
            raise SystemExit(f"{path}: `{key}` must be a table")
        for k, v in value.items():
            if k not in recipe[key]:
                raise SystemExit(f"{path}: unknown key `{key}.{k}`")
            recipe[key][k] = v
    if "monitor" not in table:
        recipe["monitor"] = None
    base = os.path.dirname(os.path.abspath(path))

    def anchor(p):
        return p if p is None or os.path.isabs(p) else os.path.normpath(os.path.join(base, p))

    recipe["data"]["images"] = [anchor(p) for p in recipe["data"]["images"]]
    recipe["data"]["manifest"] = anchor(recipe["data"]["manifest"])
    recipe["model"]["checkpoint"] = anchor(recipe["model"]["checkpoint"])
    recipe["train"]["output_dir"] = anchor(recipe["train"]["output_dir"])
    if recipe["monitor"] is not None:
        recipe["monitor"]["train"] = anchor(recipe["monitor"]["train"])
        recipe["monitor"]["val"] = anchor(recipe["monitor"]["val"])
    if recipe["model"]["checkpoint"]:
        raise SystemExit("model.checkpoint (continued pre-training) is not supported by this script")
    if recipe["model"]["arch"] is None:
        raise SystemExit("[model] needs `arch` (a preset)")
    if recipe["data"]["batch_size"] is None or recipe["data"]["batch_size"] < 1:
        raise SystemExit("data.batch_size must be at least 1")
    d = recipe["data"]
    if d["manifest"] or d["slides"] or d["volumes"] or d["rasters"]:
        raise SystemExit("only data.images (files, folders, list files) is supported by this script")
    if not d["images"]:
        raise SystemExit("[data] needs `images`")
    return recipe


# ---------------------------------------------------------------------------------------------
# Images, in dinoadapt's order (datasets/src/images.rs: sorted recursive walk).
# ---------------------------------------------------------------------------------------------

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


def is_image(p):
    return os.path.splitext(p)[1].lower() in IMAGE_EXTS


def walk(d, out):
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if os.path.isdir(p):
            walk(p, out)
        elif is_image(p):
            out.append(p)


def collect_images(inputs):
    out = []
    for inp in inputs:
        if os.path.isdir(inp):
            walk(inp, out)
        elif os.path.isfile(inp) and is_image(inp):
            out.append(inp)
        elif os.path.isfile(inp):
            base = os.path.dirname(inp)
            with open(inp) as f:
                for line in f:
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    first = line.split(",")[0].strip().strip('"')
                    if first == "path":
                        continue
                    out.append(os.path.join(base, first))
        else:
            raise SystemExit(f"{inp}: no such image, folder or list")
    if not out:
        raise SystemExit(f"no images in {inputs}")
    return out


def labelled_images(root, max_per_class):
    classes = sorted(p for p in os.listdir(root) if os.path.isdir(os.path.join(root, p)))
    paths, labels = [], []
    for label, c in enumerate(classes):
        imgs = collect_images([os.path.join(root, c)])
        if max_per_class is not None:
            imgs = imgs[:max_per_class]
        paths += imgs
        labels += [label] * len(imgs)
    return paths, labels, classes


# ---------------------------------------------------------------------------------------------
# Official DINOv2 import, with the CPU patches listed in the module docstring.
# ---------------------------------------------------------------------------------------------


def install_xformers_stub():
    import torch

    class BlockDiagonalMask:
        def __init__(self, lengths):
            self.lengths = lengths

        @classmethod
        def from_tensor_list(cls, tensors):
            lengths = [t.shape[1] for t in tensors]
            return cls(lengths), torch.cat(tensors, dim=1)

        def split(self, x):
            return list(torch.split(x, self.lengths, dim=1))

    xformers = types.ModuleType("xformers")
    ops = types.ModuleType("xformers.ops")
    fmha = types.ModuleType("xformers.ops.fmha")
    fmha.BlockDiagonalMask = BlockDiagonalMask
    ops.fmha = fmha
    xformers.ops = ops
    sys.modules.update({"xformers": xformers, "xformers.ops": ops, "xformers.ops.fmha": fmha})


def import_official(dinov2_path):
    import torch
    import torch.distributed as dist

    install_xformers_stub()
    sys.path.insert(0, dinov2_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import dinov2.layers.block as block_mod
        import dinov2.loss.ibot_patch_loss as ibot_mod
        import dinov2.models.vision_transformer as vits
        import dinov2.train.ssl_meta_arch as sma
        import dinov2.train.train as train_mod
        from dinov2.configs import dinov2_default_config
        from dinov2.data import DataAugmentationDINO, MaskingGenerator, collate_data_and_cast
        from dinov2.utils.config import apply_scaling_rules_to_cfg
        from dinov2.utils.utils import fix_random_seeds

    # CPU: `.cuda(non_blocking=True)` in forward_backward keeps the tensors where they are.
    torch.Tensor.cuda = lambda self, *args, **kwargs: self

    # The student's [global, local] list: each tensor through the plain block (no xformers).
    Block = block_mod.Block

    def nested_forward(self, x_or_x_list):
        if isinstance(x_or_x_list, torch.Tensor):
            return Block.forward(self, x_or_x_list)
        if isinstance(x_or_x_list, list):
            return [Block.forward(self, x) for x in x_or_x_list]
        raise AssertionError

    block_mod.NestedTensorBlock.forward = nested_forward

    # No CUDA streams / FSDP.
    sma.SSLMetaArch.fsdp_synchronize_streams = lambda self: None

    def update_teacher(self, m):
        student_param_list = []
        teacher_param_list = []
        with torch.no_grad():
            for k in self.student.keys():
                student_param_list += list(self.student[k].parameters())
                teacher_param_list += list(self.teacher[k].parameters())
            torch._foreach_mul_(teacher_param_list, m)
            torch._foreach_add_(teacher_param_list, student_param_list, alpha=1 - m)

    sma.SSLMetaArch.update_teacher = update_teacher

    # iBOT's SK all-reduces unconditionally: the identity without a process group.
    class DistProxy:
        def __getattr__(self, name):
            return getattr(dist, name)

        @staticmethod
        def all_reduce(tensor, *args, **kwargs):
            if dist.is_available() and dist.is_initialized():
                return dist.all_reduce(tensor, *args, **kwargs)
            return None

    ibot_mod.dist = DistProxy()

    return types.SimpleNamespace(
        torch=torch,
        vits=vits,
        sma=sma,
        train=train_mod,
        default_config=dinov2_default_config,
        DataAugmentationDINO=DataAugmentationDINO,
        MaskingGenerator=MaskingGenerator,
        collate_data_and_cast=collate_data_and_cast,
        apply_scaling_rules_to_cfg=apply_scaling_rules_to_cfg,
        fix_random_seeds=fix_random_seeds,
    )


def model_shape(recipe):
    m = recipe["model"]
    arch = m["arch"]
    reg = arch.endswith("_reg")
    base = arch[: -len("_reg")] if reg else arch
    if base not in PRESETS:
        raise SystemExit(f"model.arch: unknown preset `{arch}`")
    embed_dim, depth, heads, patch, img_size, ffn = PRESETS[base]
    mlp_ratio = 4.0
    if m["embed_dim"] is not None:
        embed_dim = m["embed_dim"]
        ffn = "mlp"  # dinoadapt: an embed_dim override builds an MLP FFN
    if m["mlp_ratio"] is not None:
        mlp_ratio = float(m["mlp_ratio"])
        if m["embed_dim"] is None:
            ffn = "mlp"
    depth = m["depth"] if m["depth"] is not None else depth
    heads = m["num_heads"] if m["num_heads"] is not None else heads
    patch = m["patch_size"] if m["patch_size"] is not None else patch
    regs = m["num_register_tokens"] if m["num_register_tokens"] is not None else (4 if reg else 0)
    if m["img_size"] is not None:
        img_size = m["img_size"]
    else:
        img_size = (img_size // 14) * patch  # the preset's grid (37) at the recipe's patch size
    return dict(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=heads,
        patch_size=patch,
        img_size=img_size,
        mlp_ratio=mlp_ratio,
        ffn_layer=ffn,
        num_register_tokens=regs,
        interpolate_antialias=reg,
        interpolate_offset=0.0 if reg else 0.1,
    )


def official_config(off, recipe, shape):
    from omegaconf import OmegaConf

    r = recipe
    heads = dict(
        head_n_prototypes=r["heads"]["prototypes"],
        head_bottleneck_dim=r["heads"]["bottleneck_dim"],
        head_nlayers=r["heads"]["nlayers"],
        head_hidden_dim=r["heads"]["hidden_dim"],
    )
    centering = {"sinkhorn_knopp": "sinkhorn_knopp", "softmax": "centering"}.get(r["loss"]["centering"])
    if centering is None:
        raise SystemExit(f"loss.centering: `{r['loss']['centering']}` (sinkhorn_knopp or softmax)")
    o = r["optim"]
    t = r["teacher"]
    c = r["crops"]
    over = {
        "compute_precision": {"grad_scaler": False},
        "dino": dict(loss_weight=r["loss"]["dino_weight"], koleo_loss_weight=r["loss"]["koleo_weight"], **heads),
        "ibot": dict(
            loss_weight=r["loss"]["ibot_weight"],
            mask_sample_probability=r["masking"]["probability"],
            mask_ratio_min_max=list(r["masking"]["ratio"]),
            separate_head=r["heads"]["separate_ibot_head"],
            **heads,
        ),
        "train": dict(
            batch_size_per_gpu=r["data"]["batch_size"],
            seed=r["train"]["seed"],
            OFFICIAL_EPOCH_LENGTH=o["epoch_length"],
            centering=centering,
            num_workers=0,
        ),
        "student": dict(
            arch="vit_recipe",
            patch_size=shape["patch_size"],
            drop_path_rate=r["model"]["drop_path_rate"],
            layerscale=r["model"]["layerscale"],
            ffn_layer=shape["ffn_layer"],
            block_chunks=0,
            num_register_tokens=shape["num_register_tokens"],
            interpolate_antialias=shape["interpolate_antialias"],
            interpolate_offset=shape["interpolate_offset"],
        ),
        "teacher": dict(
            momentum_teacher=t["momentum_teacher"],
            final_momentum_teacher=t["final_momentum_teacher"],
            warmup_teacher_temp=t["warmup_teacher_temp"],
            teacher_temp=t["teacher_temp"],
            warmup_teacher_temp_epochs=t["warmup_teacher_temp_epochs"],
        ),
        "optim": dict(
            epochs=o["epochs"],
            weight_decay=o["weight_decay"],
            weight_decay_end=o["weight_decay_end"],
            base_lr=o["base_lr"],
            warmup_epochs=o["warmup_epochs"],
            min_lr=o["min_lr"],
            clip_grad=o["clip_grad"],
            freeze_last_layer_epochs=o["freeze_last_layer_epochs"],
            patch_embed_lr_mult=o["patch_embed_lr_mult"],
            layerwise_decay=o["layerwise_decay"],
            adamw_beta1=o["adamw_beta1"],
            adamw_beta2=o["adamw_beta2"],
        ),
        "crops": dict(
            global_crops_scale=list(c["global_scale"]),
            local_crops_number=c["local_crops"],
            local_crops_scale=list(c["local_scale"]),
            global_crops_size=c["global_size"],
            local_crops_size=c["local_size"],
        ),
    }
    cfg = OmegaConf.merge(OmegaConf.create(off.default_config), OmegaConf.create(over))
    # sqrt_wrt_1024 on the data batch size, or on optim.scaling_batch_size when set.
    scaling = copy.deepcopy(cfg)
    if o["scaling_batch_size"] is not None:
        scaling.train.batch_size_per_gpu = o["scaling_batch_size"]
    off.apply_scaling_rules_to_cfg(scaling)
    cfg.optim.lr = scaling.optim.lr
    return cfg


def register_arch(off, shape):
    """`vit_recipe`: the official DinoVisionTransformer at the recipe's shape, built the way
    vit_small/vit_base are (MemEffAttention blocks), for build_model_from_cfg."""
    from functools import partial

    vits = off.vits

    def vit_recipe(patch_size=16, num_register_tokens=0, img_size=224, **kwargs):
        return vits.DinoVisionTransformer(
            img_size=shape["img_size"],
            patch_size=patch_size,
            embed_dim=shape["embed_dim"],
            depth=shape["depth"],
            num_heads=shape["num_heads"],
            mlp_ratio=shape["mlp_ratio"],
            block_fn=partial(vits.Block, attn_class=vits.MemEffAttention),
            num_register_tokens=num_register_tokens,
            **kwargs,
        )

    vits.vit_recipe = vit_recipe


# ---------------------------------------------------------------------------------------------
# kNN monitor (dinoadapt's): teacher backbone, x_norm_clstoken, cosine, top-k exp(sim / T).
# ---------------------------------------------------------------------------------------------


def knn_pixels(paths, size, mean, std):
    import numpy as np
    from PIL import Image

    out = np.empty((len(paths), 3, size, size), dtype=np.float32)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        for ch in range(3):
            # Bicubic (Catmull-Rom, a = -0.5) on float pixels, unclamped, like image-rs'
            # FilterType::CatmullRom on the to_rgb32f image.
            plane = Image.fromarray(rgb[:, :, ch], mode="F").resize((size, size), Image.BICUBIC)
            out[i, ch] = (np.asarray(plane, dtype=np.float32) - mean[ch]) / std[ch]
    return out


class KnnMonitor:
    def __init__(self, torch, recipe):
        m = recipe["monitor"]
        c = recipe["crops"]
        self.torch = torch
        self.k = m["k"]
        self.temperature = m["temperature"]
        tp, tl, classes = labelled_images(m["train"], m["max_per_class"])
        vp, vl, _ = labelled_images(m["val"], m["max_per_class"])
        self.classes = len(classes)
        self.train_x = torch.from_numpy(knn_pixels(tp, c["global_size"], c["mean"], c["std"]))
        self.val_x = torch.from_numpy(knn_pixels(vp, c["global_size"], c["mean"], c["std"]))
        self.train_y = torch.tensor(tl)
        self.val_y = torch.tensor(vl)

    def features(self, backbone, x, batch=250):
        torch = self.torch
        out = []
        for i in range(0, len(x), batch):
            out.append(backbone.forward_features(x[i : i + batch])["x_norm_clstoken"].float())
        return torch.cat(out)

    def accuracy(self, backbone):
        torch = self.torch
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            tr = torch.nn.functional.normalize(self.features(backbone, self.train_x), dim=1, eps=1e-12)
            va = torch.nn.functional.normalize(self.features(backbone, self.val_x), dim=1, eps=1e-12)
            k = max(1, min(self.k, len(tr)))
            sims, idx = (va @ tr.T).topk(k, dim=1)
            w = torch.exp(sims.double() / self.temperature)
            votes = torch.zeros(len(va), self.classes, dtype=torch.float64)
            votes.scatter_add_(1, self.train_y[idx], w)
            pred = votes.argmax(dim=1)  # first maximum: ties go to the lower class id
            acc = (pred == self.val_y).double().mean().item()
        backbone.train(was_training)
        return acc


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--dinov2", required=True, help="path of the official dinov2 checkout")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=None, help="default: monitor.every or 100")
    ap.add_argument("--log-every", type=int, default=1, help="losses.csv row every N iterations")
    ap.add_argument("--save-teacher", action="store_true", help="write teacher.pth at the end")
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)

    recipe = load_recipe(args.recipe, args.set)
    if recipe["train"]["head_warmup_iterations"]:
        print("note: train.head_warmup_iterations is dinoadapt-only, ignored here", file=sys.stderr)
    off = import_official(os.path.abspath(args.dinov2))
    shape = model_shape(recipe)
    register_arch(off, shape)
    cfg = official_config(off, recipe, shape)
    os.makedirs(args.out, exist_ok=True)

    seed = recipe["train"]["seed"]
    off.fix_random_seeds(seed)  # as default_setup: torch, numpy, random (rank 0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = off.sma.SSLMetaArch(cfg)
    lossc = recipe["loss"]
    for loss in [getattr(model, "dino_loss", None), getattr(model, "ibot_patch_loss", None)]:
        if loss is not None:
            loss.student_temp = lossc["student_temp"]
            loss.center_momentum = lossc["center_momentum"]
    # The teacher starts as the student (prepare_for_distributed_training, without FSDP).
    for k in model.student.keys():
        model.teacher[k].load_state_dict(model.student[k].state_dict())

    # Record the teacher's DINO targets (and use loss.sinkhorn_iterations).
    probe = {"entropy": float("nan"), "cls_std": float("nan")}

    def entropy_of(q):
        q = q.float()
        return (-(q * torch.log(q.clamp_min(1e-30))).sum(-1)).mean().item()

    if hasattr(model, "dino_loss"):
        sk = model.dino_loss.sinkhorn_knopp_teacher
        sc = model.dino_loss.softmax_center_teacher
        iters = lossc["sinkhorn_iterations"]

        def sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_iterations=3):
            q = sk(teacher_output, teacher_temp, n_iterations=iters)
            probe["entropy"] = entropy_of(q)
            return q

        def softmax_center_teacher(teacher_output, teacher_temp):
            q = sc(teacher_output, teacher_temp)
            probe["entropy"] = entropy_of(q)
            return q

        model.dino_loss.sinkhorn_knopp_teacher = sinkhorn_knopp_teacher
        model.dino_loss.softmax_center_teacher = softmax_center_teacher

    def teacher_hook(module, inputs, output):
        if isinstance(output, dict) and module.training is False and torch.is_grad_enabled() is False:
            probe["cls_std"] = output["x_norm_clstoken"].float().std(dim=0).mean().item()

    model.teacher.backbone.register_forward_hook(teacher_hook)

    model.train()  # student train, teacher eval
    optimizer = off.train.build_optimizer(cfg, model.get_params_groups())
    lr_s, wd_s, mom_s, temp_s, last_lr_s = off.train.build_schedulers(cfg)

    # Data: official augmentation with the recipe's normalisation, official masking + collate.
    c = recipe["crops"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aug = off.DataAugmentationDINO(
            cfg.crops.global_crops_scale,
            cfg.crops.local_crops_scale,
            cfg.crops.local_crops_number,
            global_crops_size=cfg.crops.global_crops_size,
            local_crops_size=cfg.crops.local_crops_size,
        )
    from torchvision import transforms

    # aug.normalize is the one Compose([ToTensor, Normalize]) all three pipelines hold.
    aug.normalize.transforms[-1] = transforms.Normalize(mean=list(c["mean"]), std=list(c["std"]))
    img_size = cfg.crops.global_crops_size
    patch_size = cfg.student.patch_size
    n_tokens = (img_size // patch_size) ** 2
    mask_generator = off.MaskingGenerator(
        input_size=(img_size // patch_size, img_size // patch_size),
        max_num_patches=0.5 * img_size // patch_size * img_size // patch_size,
    )

    def collate(samples):
        return off.collate_data_and_cast(
            samples,
            mask_ratio_tuple=cfg.ibot.mask_ratio_min_max,
            mask_probability=cfg.ibot.mask_sample_probability,
            n_tokens=n_tokens,
            mask_generator=mask_generator,
            dtype=torch.float32,
        )

    from PIL import Image

    paths = collect_images(recipe["data"]["images"])
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    batch_size = recipe["data"]["batch_size"]
    if batch_size > len(images):
        raise SystemExit(f"data.batch_size {batch_size} > {len(images)} images")
    rng = np.random.default_rng(seed)
    order, pos = [], 0

    def next_batch():
        nonlocal order, pos
        if pos + batch_size > len(order):  # shuffled epochs, drop_last
            order, pos = rng.permutation(len(images)), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        return collate([(aug(images[i]), ()) for i in idx])

    monitor = KnnMonitor(torch, recipe) if recipe["monitor"] is not None else None
    every = args.eval_every
    if every is None:
        every = (recipe["monitor"] or {}).get("every") or 100
    total = recipe["optim"]["epochs"] * recipe["optim"]["epoch_length"]
    if recipe["train"]["max_steps"] is not None:
        total = min(total, recipe["train"]["max_steps"])

    K = recipe["heads"]["prototypes"]
    L = recipe["crops"]["local_crops"]
    lnk = math.log(K)
    share_local = lnk * 2 * L / (2 * L + 2) if L > 0 else 0.0
    share_global = lnk * 2 / (2 * L + 2)

    with open(os.path.join(args.out, "recipe.json"), "w") as f:
        json.dump(recipe, f, indent=2)
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, os.path.join(args.out, "config.yaml"))
    nparams = sum(p.numel() for p in model.student.backbone.parameters())
    print(
        f"official DINOv2 ({args.dinov2}) on CPU, {args.threads} thread(s): backbone {shape} "
        f"({nparams / 1e6:.3f} M params), K={K}, L={L}, batch {batch_size}, {total} iterations, "
        f"lr {cfg.optim.lr:.3e} (base {cfg.optim.base_lr}), {len(images)} images; "
        f"uniform DINO terms: local {share_local:.4f} global {share_global:.4f}",
        flush=True,
    )

    curve_f = open(os.path.join(args.out, "curve.csv"), "w", newline="")
    curve = csv.writer(curve_f)
    curve.writerow(["iteration", "knn"])
    loss_cols = [
        "iteration",
        "total",
        "dino_local_crops_loss",
        "dino_global_crops_loss",
        "koleo_loss",
        "ibot_loss",
        "teacher_entropy",
        "teacher_cls_std",
        "grad_norm_backbone",
        "grad_norm_dino_head",
        "head_weight_g",
        "lr",
        "wd",
        "momentum",
        "teacher_temp",
        "seconds",
        "data_seconds",
    ]
    losses_f = open(os.path.join(args.out, "losses.csv"), "w", newline="")
    losses = csv.writer(losses_f)
    losses.writerow(loss_cols)

    def head_g():
        """Mean weight-norm gain of the student DINO head's prototypes (logit scale)."""
        head = model.student["dino_head"] if "dino_head" in model.student else None
        g = getattr(getattr(head, "last_layer", None), "weight_g", None)
        return g.detach().float().mean().item() if g is not None else float("nan")

    t_start = time.time()
    train_secs = 0.0
    knn_points = []
    last = {}

    def evaluate(done):
        if monitor is None:
            return
        t0 = time.time()
        acc = monitor.accuracy(model.teacher.backbone)
        knn_points.append((done, acc))
        curve.writerow([done, f"{acc:.6f}"])
        curve_f.flush()
        msg = f"iter {done:5d}/{total}  knn {acc:.4f}  ({time.time() - t0:.1f}s eval, {time.time() - t_start:.0f}s wall)"
        if last:
            msg += (
                f"  | dino local {last['dino_local_crops_loss']:.4f} (uniform {share_local:.4f})"
                f" global {last['dino_global_crops_loss']:.4f} (uniform {share_global:.4f})"
                f" ibot {last['ibot_loss']:.4f} koleo {last['koleo_loss']:.4f}"
                f" H_t {last['teacher_entropy']:.3f}/{lnk:.3f} cls_std {last['teacher_cls_std']:.2e}"
                f" g {last['head_weight_g']:.3f} lr {last['lr']:.2e} T_t {last['teacher_temp']:.3f}"
            )
        print(msg, flush=True)

    evaluate(0)
    for iteration in range(total):
        t0 = time.time()
        data = next_batch()
        data_secs = time.time() - t0
        lr = lr_s[iteration]
        wd = wd_s[iteration]
        mom = mom_s[iteration]
        teacher_temp = temp_s[iteration]
        last_layer_lr = last_lr_s[iteration]
        off.train.apply_optim_scheduler(optimizer, lr, wd, last_layer_lr)

        optimizer.zero_grad(set_to_none=True)
        loss_dict = model.forward_backward(data, teacher_temp=teacher_temp)

        norms = {}
        if cfg.optim.clip_grad:
            for name, v in model.student.items():
                norms[name] = torch.nn.utils.clip_grad_norm_(v.parameters(), cfg.optim.clip_grad).item()
        optimizer.step()
        model.update_teacher(mom)
        train_secs += time.time() - t0

        vals = {k: v.item() for k, v in loss_dict.items()}
        if math.isnan(sum(vals.values())):
            print(f"NaN detected at iteration {iteration}", flush=True)
            raise SystemExit(1)
        last = dict(
            iteration=iteration + 1,
            total=sum(vals.values()),
            dino_local_crops_loss=vals.get("dino_local_crops_loss", float("nan")),
            dino_global_crops_loss=vals.get("dino_global_crops_loss", float("nan")),
            koleo_loss=vals.get("koleo_loss", float("nan")),
            ibot_loss=vals.get("ibot_loss", float("nan")),
            teacher_entropy=probe["entropy"],
            teacher_cls_std=probe["cls_std"],
            grad_norm_backbone=norms.get("backbone", float("nan")),
            grad_norm_dino_head=norms.get("dino_head", float("nan")),
            head_weight_g=head_g(),
            lr=float(lr),
            wd=float(wd),
            momentum=float(mom),
            teacher_temp=float(teacher_temp),
            seconds=time.time() - t0,
            data_seconds=data_secs,
        )
        done = iteration + 1
        if done % args.log_every == 0 or done == total:
            losses.writerow([last[c] if c == "iteration" else f"{last[c]:.6g}" for c in loss_cols])
            losses_f.flush()
        if done == total or done % every == 0:
            evaluate(done)

    wall = time.time() - t_start
    curve_f.close()
    losses_f.close()
    summary = dict(
        recipe=os.path.abspath(args.recipe),
        overrides=args.set,
        iterations=total,
        wall_seconds=wall,
        train_seconds=train_secs,
        seconds_per_iteration=train_secs / max(total, 1),
        knn=[{"iteration": i, "knn": a} for i, a in knn_points],
        final=last,
        uniform_dino_local=share_local,
        uniform_dino_global=share_global,
        ln_prototypes=lnk,
        lr=cfg.optim.lr,
    )
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if args.save_teacher:
        torch.save({"teacher": model.teacher.state_dict()}, os.path.join(args.out, "teacher.pth"))
    print(f"done: {total} iterations in {wall:.0f}s ({train_secs / max(total, 1):.3f} s/iteration)", flush=True)


if __name__ == "__main__":
    main()
