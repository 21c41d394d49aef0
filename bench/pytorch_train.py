#!/usr/bin/env python3
"""PyTorch reference benchmark for one DINOv2 self-supervised training step (CPU).

Measures training-step throughput (source images/s and crops/s) of a DINOv2
ViT-S/14 student/teacher pair, following the official facebookresearch/dinov2
code path: ``SSLMetaArch.forward_backward`` (dinov2/train/ssl_meta_arch.py) plus
the body of the ``do_train`` loop (dinov2/train/train.py). Everything is built
locally with RANDOM weights -- nothing is downloaded.

Faithful to the official code
-----------------------------
* Backbone: ``transformers.Dinov2Model`` from a ``Dinov2Config`` for ViT-S/14
  (hidden 384, 12 layers, 6 heads, mlp_ratio 4, LayerScale init 1e-5, qkv bias,
  LayerNorm eps 1e-6, image_size 518 so the 37x37 position embeddings are
  bicubically interpolated to 16x16 / 7x7 on every forward, as in DINOv2).
  ``x_norm_clstoken`` / ``x_norm_patchtokens`` are token 0 / tokens 1: of the
  final-LayerNorm output. Stochastic depth: ``--drop-path`` (default 0.0).
* Teacher: a copy of the student (same initial weights), ``requires_grad=False``,
  in eval mode, forward under ``torch.no_grad()`` on the 2 global crops only.
  The backbone is ``copy.deepcopy``-ed; the heads cannot be deep-copied
  (old-style ``weight_norm`` holds a non-leaf ``weight``), so they are built
  again and ``load_state_dict``-ed from the student, which is what the
  official ``prepare_for_distributed_training`` does for every module.
* DINOHead: 3-layer MLP 384->2048->2048->256 (GELU, trunc-normal std 0.02, zero
  bias), L2-normalise, ``nn.utils.weight_norm(nn.Linear(256, K, bias=False))``
  with ``weight_g`` filled with 1; K = ``--prototypes`` (65536). ``weight_g`` is
  frozen here (DINO v1 ``norm_last_layer=True`` semantics; as an extra
  requires_grad=False tensor of K elements it costs nothing measurable). The
  iBOT head shares the DINO head (official default ``ibot.separate_head=False``)
  unless ``--separate-ibot-head``.
* Student head pass as official: local-crop class tokens, global-crop class
  tokens and an ``upperbound``-row zero-padded buffer of masked global patch
  tokens go through the (shared) head in ONE call (the official code
  concatenates them with xformers' ``BlockDiagonalMask``; for a token-wise MLP
  that is exactly a ``torch.cat`` + split). The teacher head runs on
  ``[swapped teacher cls tokens ; upperbound-row masked-patch buffer]``.
* Losses (``DINOLoss``, ``iBOTPatchLoss``, ``KoLeoLoss``):
  - Sinkhorn-Knopp teacher centering, 3 iterations, teacher temperature 0.04
    (the start of the official teacher-temp warm-up), on the teacher class
    tokens and, with B = number of masked patches, on the masked teacher patch
    tokens.
  - DINO cross-entropy, student temperature 0.1. Local loss: 8 local x 2 global
    terms; global loss: student global crops vs. teacher crops swapped (A<->B),
    times ``loss_scales = 2``; both divided by
    ``n_global_crops_loss_terms + n_local_crops_loss_terms`` (2 + 16).
  - iBOT masked-patch loss (``forward_masked``): per-patch cross-entropy times
    ``masks_weight`` (1 / #masked patches of that image), summed, divided by the
    number of global-crop images, times ``loss_scales * 1/n_global_crops``.
  - KoLeo, weight 0.1, on each of the 2 global-crop chunks of the student's
    (pre-head) class tokens.
  All weights 1.0 (dino, ibot), as in ssl_default_config.yaml.
* Train-loop body: per-group lr/wd applied from the schedules, ``zero_grad(
  set_to_none=True)``, ``forward_backward``, ``clip_grad_norm_(3.0)`` separately
  for each student module (backbone, dino_head[, ibot_head]), AdamW step
  (betas 0.9/0.999, ``foreach=True`` per fused param group), EMA teacher update
  with ``torch._foreach_mul_`` / ``torch._foreach_add_`` (momentum 0.992), and the
  ``.item()`` of every logged loss (the official NaN check / metric logger).
* Param groups as ``get_params_groups_with_decay`` + ``fuse_params_groups``:
  layer-wise lr decay 0.9 (embeddings = layer 0, block i = layer i+1, final
  norm and heads = 1.0), patch-embed lr x0.2, no weight decay on biases, norms
  and LayerScale (official: name ends with ".bias" or contains "norm"/"gamma";
  the HF LayerScale parameter is called ``lambda1``), last-layer groups kept
  separate (``is_last_layer``).
* Masks: the official ``collate_data_and_cast`` bookkeeping: of the 2*batch
  global-crop images, int(2*batch*0.5) get a mask whose ratio is drawn in the
  i-th slice of linspace(0.1, 0.5), the rest none; the list is shuffled;
  ``mask_indices_list``, ``masks_weight``, ``n_masked_patches`` and
  ``upperbound`` are computed exactly as there.

Simplified (none of this changes the work per step in a material way)
-----------------------------------------------------------------------
* Masks are uniformly random patch subsets of the drawn size, not the
  block-wise ``MaskingGenerator`` shapes (only the count matters for cost).
* Inputs are random, already "augmented" tensors built once outside the timed
  loop (no data loader, no augmentation, the same batch and masks every step).
* The student runs the global crops (with iBOT masks via ``bool_masked_pos``)
  and the local crops (no masks) as two separate forwards; the official
  backbone runs both in one ``forward_features_list`` call with xformers
  nested/block-diagonal attention. Same math, different batching.
* float32 on CPU, no FSDP, no mixed precision / grad scaler, one process
  (no all-reduces; Sinkhorn-Knopp's world size is 1).
* Schedules are held constant: lr = 0.004*sqrt(batch/1024) (peak of the
  official sqrt-scaled cosine schedule), last-layer lr = lr (official freezes it
  to 0 in the first epoch: same compute), wd = 0.04, momentum = 0.992, teacher
  temperature 0.04.
* Mask-token substitution is HF's blend ``x*(1-m) + mask_token*m`` instead of
  ``torch.where`` (same values).

Output: human-readable summary, or with ``--json`` exactly one JSON line on
stdout: {"impl":"pytorch","model":"vits14","batch":..,"local_crops":..,
"threads":..,"step_s":..,"images_per_s":..,"peak_rss_mib":.., "crops_per_s":..,
...}. images/s counts source images (``--batch`` per step); crops/s counts
batch * (2 + local_crops). First-step loss values go to stderr.

    /work/pyref/bin/python bench/pytorch_train.py --threads 2 --json
"""

import os

# Never touch the network: everything is built from a config with random weights.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

N_GLOBAL_CROPS = 2
GLOBAL_SIZE = 224
LOCAL_SIZE = 98
PATCH = 14

# ssl_default_config.yaml values used here
STUDENT_TEMP = 0.1
TEACHER_TEMP = 0.04  # start of the teacher-temperature warm-up (warmup_teacher_temp)
SK_ITERS = 3
KOLEO_WEIGHT = 0.1
DINO_LOSS_WEIGHT = 1.0
IBOT_LOSS_WEIGHT = 1.0
MASK_RATIO_MIN_MAX = (0.1, 0.5)
MASK_SAMPLE_PROBABILITY = 0.5
LAYERWISE_DECAY = 0.9
PATCH_EMBED_LR_MULT = 0.2
CLIP_GRAD = 3.0
MOMENTUM_TEACHER = 0.992
WEIGHT_DECAY = 0.04
BASE_LR = 0.004  # scaled by sqrt(total batch / 1024) ("sqrt_wrt_1024")
HEAD_HIDDEN = 2048
HEAD_BOTTLENECK = 256
HEAD_NLAYERS = 3


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op (and inter-op) threads")
    p.add_argument("--batch", type=int, default=8, help="source images per step (per-crop batch)")
    p.add_argument("--local-crops", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--prototypes", type=int, default=65536, help="DINO (and iBOT) head prototypes")
    p.add_argument("--separate-ibot-head", action="store_true", help="own iBOT head (default: shared, as official)")
    p.add_argument("--drop-path", type=float, default=0.0, help="student drop_path_rate")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the GPU check runs it on cuda)")
    p.add_argument("--json", action="store_true", help="print one JSON line on stdout")
    p.add_argument("--bf16", action="store_true", help="autocast forward and backward to bfloat16 (f32 weights): mixed precision")
    return p.parse_args(argv)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def peak_rss_mib():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return r / 2**20 if sys.platform == "darwin" else r / 1024.0


def main(argv=None):
    args = parse_args(argv)
    if args.batch < 1 or args.local_crops < 0 or args.steps < 1 or args.warmup < 0:
        sys.exit("need --batch >= 1, --local-crops >= 0, --steps >= 1, --warmup >= 0")

    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import transformers

    warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated.*")

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:
        pass
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    # ------------------------------------------------------------------ model
    class DINOHead(nn.Module):
        """dinov2/layers/dino_head.py (use_bn=False, mlp_bias=True)."""

        def __init__(self, in_dim, out_dim, nlayers=HEAD_NLAYERS, hidden_dim=HEAD_HIDDEN, bottleneck_dim=HEAD_BOTTLENECK):
            super().__init__()
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
            self.apply(self._init_weights)
            self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
            self.last_layer.weight_g.data.fill_(1)
            self.last_layer.weight_g.requires_grad = False

        @staticmethod
        def _init_weights(m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

        def forward(self, x):
            x = self.mlp(x)
            eps = 1e-6 if x.dtype == torch.float16 else 1e-12
            x = F.normalize(x, dim=-1, p=2, eps=eps)
            return self.last_layer(x)

    def build_backbone(drop_path):
        config = transformers.Dinov2Config(
            hidden_size=384,
            num_hidden_layers=12,
            num_attention_heads=6,
            mlp_ratio=4,
            image_size=518,
            patch_size=PATCH,
            layerscale_value=1e-5,
            drop_path_rate=drop_path,
            layer_norm_eps=1e-6,
            hidden_act="gelu",
            qkv_bias=True,
            use_mask_token=True,
            use_swiglu_ffn=False,
        )
        try:
            return transformers.Dinov2Model._from_config(config, attn_implementation=args.attn)
        except TypeError:
            config._attn_implementation = args.attn
            return transformers.Dinov2Model(config)

    def backbone_tokens(backbone, x, masks=None):
        out = backbone(pixel_values=x, bool_masked_pos=masks).last_hidden_state  # after final LayerNorm
        return {"x_norm_clstoken": out[:, 0], "x_norm_patchtokens": out[:, 1:]}

    # ------------------------------------------------------------------ losses
    def dino_sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_iterations=SK_ITERS):
        teacher_output = teacher_output.float()
        Q = torch.exp(teacher_output / teacher_temp).t()  # K x B
        B = Q.shape[1]
        K = Q.shape[0]
        Q /= torch.sum(Q)
        for _ in range(n_iterations):
            Q /= torch.sum(Q, dim=1, keepdim=True)
            Q /= K
            Q /= torch.sum(Q, dim=0, keepdim=True)
            Q /= B
        Q *= B
        return Q.t()

    def ibot_sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_masked_patches_tensor, n_iterations=SK_ITERS):
        teacher_output = teacher_output.float()
        Q = torch.exp(teacher_output / teacher_temp).t()
        B = n_masked_patches_tensor
        K = Q.shape[0]
        Q /= torch.sum(Q)
        for _ in range(n_iterations):
            Q /= torch.sum(Q, dim=1, keepdim=True)
            Q /= K
            Q /= torch.sum(Q, dim=0, keepdim=True)
            Q /= B
        Q *= B
        return Q.t()

    def dino_loss(student_output_list, teacher_out_softmaxed_centered_list):
        total_loss = 0
        for s in student_output_list:
            lsm = F.log_softmax(s / STUDENT_TEMP, dim=-1)
            for t in teacher_out_softmaxed_centered_list:
                total_loss -= torch.sum(t * lsm, dim=-1).mean()
        return total_loss

    def ibot_forward_masked(s, t, student_masks_flat, n_masked_patches, masks_weight):
        # xformers' fused cross_entropy is not available here: official fallback lossfunc
        loss = torch.sum(t * F.log_softmax(s / STUDENT_TEMP, dim=-1), dim=-1)
        loss = loss[:n_masked_patches]
        loss = loss * masks_weight
        return -loss.sum() / student_masks_flat.shape[0]

    pdist = nn.PairwiseDistance(2, eps=1e-8)

    def koleo_loss(student_output, eps=1e-8):
        student_output = F.normalize(student_output, eps=eps, p=2, dim=-1)
        dots = torch.mm(student_output, student_output.t())  # pairwise_NNs_inner, as official
        n = student_output.shape[0]
        dots.view(-1)[:: (n + 1)].fill_(-1)  # diagonal -> -1
        _, I = torch.max(dots, dim=1)  # noqa: E741
        distances = pdist(student_output, student_output[I])
        return -torch.log(distances + eps).mean()

    # ------------------------------------------------------------------ meta arch
    class SSLMetaArch(nn.Module):
        def __init__(self):
            super().__init__()
            student_backbone = build_backbone(args.drop_path)
            embed_dim = student_backbone.config.hidden_size
            self.n_blocks = student_backbone.config.num_hidden_layers
            self.ibot_separate_head = args.separate_ibot_head
            student = {"backbone": student_backbone, "dino_head": DINOHead(embed_dim, args.prototypes)}
            if self.ibot_separate_head:
                student["ibot_head"] = DINOHead(embed_dim, args.prototypes)
            teacher = {"backbone": copy.deepcopy(student_backbone)}
            for k in ("dino_head", "ibot_head"):
                if k in student:
                    teacher[k] = DINOHead(embed_dim, args.prototypes)
                    teacher[k].load_state_dict(student[k].state_dict())
            self.student = nn.ModuleDict(student)
            self.teacher = nn.ModuleDict(teacher)
            for p in self.teacher.parameters():
                p.requires_grad = False

        def train(self, mode=True):
            super().train(mode)
            self.teacher.eval()
            return self

        def forward_backward(self, images, teacher_temp):
            n_global_crops = N_GLOBAL_CROPS
            n_local_crops = args.local_crops

            global_crops = images["collated_global_crops"]
            local_crops = images["collated_local_crops"]
            masks = images["collated_masks"]
            mask_indices_list = images["mask_indices_list"]
            n_masked_patches_tensor = images["n_masked_patches"]
            n_masked_patches = mask_indices_list.shape[0]
            upperbound = images["upperbound"]
            masks_weight = images["masks_weight"]

            n_local_crops_loss_terms = max(n_local_crops * n_global_crops, 1)
            n_global_crops_loss_terms = (n_global_crops - 1) * n_global_crops
            ibot_loss_scale = 1.0 / n_global_crops

            @torch.no_grad()
            def get_teacher_output():
                out = backbone_tokens(self.teacher.backbone, global_crops)
                teacher_cls_tokens = out["x_norm_clstoken"].chunk(n_global_crops)
                # reversed so that crop A is matched to crop B in the global-crops DINO loss
                teacher_cls_tokens = torch.cat((teacher_cls_tokens[1], teacher_cls_tokens[0]))
                ibot_teacher_patch_tokens = out["x_norm_patchtokens"]
                _dim = ibot_teacher_patch_tokens.shape[-1]
                n_cls_tokens = teacher_cls_tokens.shape[0]
                if not self.ibot_separate_head:
                    buf = ibot_teacher_patch_tokens.new_zeros(upperbound + n_cls_tokens, _dim)
                    buf[:n_cls_tokens].copy_(teacher_cls_tokens)
                    torch.index_select(
                        ibot_teacher_patch_tokens.flatten(0, 1),
                        dim=0,
                        index=mask_indices_list,
                        out=buf[n_cls_tokens : n_cls_tokens + n_masked_patches],
                    )
                    tokens_after_head = self.teacher.dino_head(buf)
                    teacher_cls_after_head = tokens_after_head[:n_cls_tokens]
                    masked_teacher_patch_after_head = tokens_after_head[n_cls_tokens : n_cls_tokens + n_masked_patches]
                else:
                    buf = ibot_teacher_patch_tokens.new_zeros(upperbound, _dim)
                    torch.index_select(
                        ibot_teacher_patch_tokens.flatten(0, 1),
                        dim=0,
                        index=mask_indices_list,
                        out=buf[:n_masked_patches],
                    )
                    teacher_cls_after_head = self.teacher.dino_head(teacher_cls_tokens)
                    masked_teacher_patch_after_head = self.teacher.ibot_head(buf)[:n_masked_patches]

                teacher_dino_list = dino_sinkhorn_knopp_teacher(teacher_cls_after_head, teacher_temp=teacher_temp).view(
                    n_global_crops, -1, *teacher_cls_after_head.shape[1:]
                )
                masked_teacher_ibot = ibot_sinkhorn_knopp_teacher(
                    masked_teacher_patch_after_head,
                    teacher_temp=teacher_temp,
                    n_masked_patches_tensor=n_masked_patches_tensor,
                )
                return teacher_dino_list, masked_teacher_ibot

            teacher_dino_softmaxed_centered_list, masked_teacher_ibot_softmaxed_centered = get_teacher_output()

            loss_dict = {}
            loss_accumulator = 0

            # official: one forward_features_list([global, local], masks=[masks, None]) call
            student_global = backbone_tokens(self.student.backbone, global_crops, masks)
            student_local = backbone_tokens(self.student.backbone, local_crops) if n_local_crops > 0 else None

            inputs_for_student_head_list = []
            if n_local_crops > 0:
                inputs_for_student_head_list.append(student_local["x_norm_clstoken"])
            student_global_cls_tokens = student_global["x_norm_clstoken"]
            inputs_for_student_head_list.append(student_global_cls_tokens)

            _dim = student_global_cls_tokens.shape[-1]
            ibot_student_patch_tokens = student_global["x_norm_patchtokens"]
            buffer_tensor_patch_tokens = ibot_student_patch_tokens.new_zeros(upperbound, _dim)
            buffer_tensor_patch_tokens[:n_masked_patches].copy_(
                torch.index_select(ibot_student_patch_tokens.flatten(0, 1), dim=0, index=mask_indices_list)
            )
            if not self.ibot_separate_head:
                inputs_for_student_head_list.append(buffer_tensor_patch_tokens)
            else:
                student_global_masked_patch_after_head = self.student.ibot_head(buffer_tensor_patch_tokens)[
                    :n_masked_patches
                ]

            # official: fmha.BlockDiagonalMask.from_tensor_list + split around one head call
            sizes = [t.shape[0] for t in inputs_for_student_head_list]
            outputs_list = list(self.student.dino_head(torch.cat(inputs_for_student_head_list)).split(sizes))

            student_local_cls_after_head = outputs_list.pop(0) if n_local_crops > 0 else None
            student_global_cls_after_head = outputs_list.pop(0)
            if not self.ibot_separate_head:
                student_global_masked_patch_after_head = outputs_list.pop(0)[:n_masked_patches]

            if n_local_crops > 0:
                dino_local_crops_loss = dino_loss(
                    student_output_list=student_local_cls_after_head.chunk(n_local_crops),
                    teacher_out_softmaxed_centered_list=teacher_dino_softmaxed_centered_list,
                ) / (n_global_crops_loss_terms + n_local_crops_loss_terms)
                loss_dict["dino_local_crops_loss"] = dino_local_crops_loss
                loss_accumulator += DINO_LOSS_WEIGHT * dino_local_crops_loss

            loss_scales = 2  # global crops are processed together

            dino_global_crops_loss = (
                dino_loss(
                    student_output_list=[student_global_cls_after_head],
                    teacher_out_softmaxed_centered_list=[teacher_dino_softmaxed_centered_list.flatten(0, 1)],
                )
                * loss_scales
                / (n_global_crops_loss_terms + n_local_crops_loss_terms)
            )
            loss_dict["dino_global_crops_loss"] = dino_global_crops_loss
            loss_accumulator += DINO_LOSS_WEIGHT * dino_global_crops_loss

            koleo = KOLEO_WEIGHT * sum(koleo_loss(p) for p in student_global_cls_tokens.chunk(2))
            loss_accumulator += koleo
            loss_dict["koleo_loss"] = koleo / loss_scales

            ibot_patch_loss = (
                ibot_forward_masked(
                    student_global_masked_patch_after_head,
                    masked_teacher_ibot_softmaxed_centered,
                    student_masks_flat=masks,
                    n_masked_patches=n_masked_patches,
                    masks_weight=masks_weight,
                )
                * loss_scales
                * ibot_loss_scale
            )
            loss_dict["ibot_loss"] = ibot_patch_loss / 2
            loss_accumulator += IBOT_LOSS_WEIGHT * ibot_patch_loss

            loss_accumulator.backward()
            loss_dict["total_backprop_loss"] = loss_accumulator.detach()
            return loss_dict

        @torch.no_grad()
        def update_teacher(self, m):
            student_param_list = []
            teacher_param_list = []
            for k in self.student.keys():
                student_param_list += list(self.student[k].parameters())
                teacher_param_list += list(self.teacher[k].parameters())
            torch._foreach_mul_(teacher_param_list, m)
            torch._foreach_add_(teacher_param_list, student_param_list, alpha=1 - m)

        def get_params_groups(self):
            groups = []
            for k, m in self.student.items():
                n_blocks = self.n_blocks if k == "backbone" else 0
                fused = {}
                for name, param in m.named_parameters():
                    if not param.requires_grad:
                        continue
                    layer_id = n_blocks + 1
                    if n_blocks > 0:
                        if name.startswith("embeddings."):  # cls/mask token, pos embed, patch embed
                            layer_id = 0
                        elif name.startswith("encoder.layer."):
                            layer_id = int(name.split(".")[2]) + 1
                    lr_mult = LAYERWISE_DECAY ** (n_blocks + 1 - layer_id)
                    wd_mult = 1.0
                    is_last = "last_layer" in name
                    if name.endswith(".bias") or "norm" in name or "gamma" in name or "lambda1" in name:
                        wd_mult = 0.0
                    if "patch_embed" in name:  # HF: embeddings.patch_embeddings.projection.*
                        lr_mult *= PATCH_EMBED_LR_MULT
                    key = (lr_mult, wd_mult, is_last)
                    g = fused.setdefault(
                        key,
                        {"params": [], "lr_multiplier": lr_mult, "wd_multiplier": wd_mult, "is_last_layer": is_last},
                    )
                    g["params"].append(param)
                for g in fused.values():
                    g["foreach"] = True
                groups += list(fused.values())
            return groups

    # ------------------------------------------------------------------ data
    def make_batch():
        g = torch.Generator().manual_seed(args.seed + 1)
        B = args.batch
        # collated like collate_data_and_cast: crop-major, then sample
        global_crops = torch.randn(N_GLOBAL_CROPS * B, 3, GLOBAL_SIZE, GLOBAL_SIZE, generator=g)
        local_crops = torch.randn(max(args.local_crops, 0) * B, 3, LOCAL_SIZE, LOCAL_SIZE, generator=g)
        n_tokens = (GLOBAL_SIZE // PATCH) ** 2
        n_imgs = len(global_crops)
        n_samples_masked = int(n_imgs * MASK_SAMPLE_PROBABILITY)
        probs = torch.linspace(*MASK_RATIO_MIN_MAX, n_samples_masked + 1)
        upperbound = 0
        masks_list = []
        for i in range(n_samples_masked):
            prob_min, prob_max = float(probs[i]), float(probs[i + 1])
            n_mask = int(n_tokens * random.uniform(prob_min, prob_max))
            m = torch.zeros(n_tokens, dtype=torch.bool)
            m[torch.randperm(n_tokens, generator=g)[:n_mask]] = True  # random, not block-wise
            masks_list.append(m)
            upperbound += int(n_tokens * prob_max)
        for _ in range(n_samples_masked, n_imgs):
            masks_list.append(torch.zeros(n_tokens, dtype=torch.bool))
        random.shuffle(masks_list)
        collated_masks = torch.stack(masks_list).flatten(1)
        mask_indices_list = collated_masks.flatten().nonzero().flatten()
        masks_weight = (1 / collated_masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(collated_masks)[collated_masks]
        return {
            "collated_global_crops": global_crops,
            "collated_local_crops": local_crops,
            "collated_masks": collated_masks,
            "mask_indices_list": mask_indices_list,
            "masks_weight": masks_weight,
            "upperbound": upperbound,
            "n_masked_patches": torch.full((1,), fill_value=mask_indices_list.shape[0], dtype=torch.long),
        }

    # ------------------------------------------------------------------ setup
    t_build = time.perf_counter()
    model = SSLMetaArch().to(args.device)
    model.train()
    optimizer = torch.optim.AdamW(model.get_params_groups(), betas=(0.9, 0.999))
    data = {k: v.to(args.device) if torch.is_tensor(v) else v for k, v in make_batch().items()}
    n_student = sum(p.numel() for p in model.student.parameters() if p.requires_grad)
    log(
        f"built in {time.perf_counter() - t_build:.1f}s: student trainable params {n_student / 1e6:.2f}M, "
        f"{len(optimizer.param_groups)} param groups, masked patches {int(data['n_masked_patches'])} "
        f"(upperbound {data['upperbound']}), attn {getattr(model.student.backbone.config, '_attn_implementation', args.attn)}"
    )

    lr = BASE_LR * math.sqrt(args.batch / 1024)
    wd = WEIGHT_DECAY
    last_layer_lr = lr
    mom = MOMENTUM_TEACHER
    teacher_temp = TEACHER_TEMP

    def apply_optim_scheduler():
        for pg in optimizer.param_groups:
            pg["weight_decay"] = wd * pg["wd_multiplier"]
            pg["lr"] = (last_layer_lr if pg["is_last_layer"] else lr) * pg["lr_multiplier"]

    def train_step():
        apply_optim_scheduler()
        optimizer.zero_grad(set_to_none=True)
        if args.bf16:
            kind = "cuda" if args.device.startswith("cuda") else "cpu"
            with torch.autocast(device_type=kind, dtype=torch.bfloat16):
                loss_dict = model.forward_backward(data, teacher_temp=teacher_temp)
        else:
            loss_dict = model.forward_backward(data, teacher_temp=teacher_temp)
        norms = [nn.utils.clip_grad_norm_(v.parameters(), CLIP_GRAD) for v in model.student.values()]
        optimizer.step()
        model.update_teacher(mom)
        reduced = {k: v.item() for k, v in loss_dict.items()}
        if math.isnan(sum(reduced.values())):
            raise AssertionError("NaN detected")
        return reduced, norms

    # ------------------------------------------------------------------ run
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        losses, norms = train_step()
        dt = time.perf_counter() - t0
        if i == 0:
            shown = " ".join(f"{k}={v:.6f}" for k, v in losses.items())
            gn = " ".join(f"{k}={float(n):.4g}" for k, n in zip(model.student.keys(), norms))
            log(f"step 0 losses: {shown}")
            log(f"step 0 grad norms (pre-clip): {gn}")
            bad = [k for k, v in losses.items() if not math.isfinite(v)]
            bad += [k for k, n in zip(model.student.keys(), norms) if not math.isfinite(float(n))]
            if bad:
                sys.exit(f"non-finite values at step 0: {bad}")
        phase = "warmup" if i < args.warmup else "timed"
        log(f"step {i} ({phase}): {dt:.3f}s")
        if i >= args.warmup:
            times.append(dt)

    step_s = statistics.mean(times)
    n_crops = args.batch * (N_GLOBAL_CROPS + args.local_crops)
    result = {
        "impl": "pytorch",
        "model": "vits14",
        "batch": args.batch,
        "local_crops": args.local_crops,
        "threads": args.threads,
        "step_s": round(step_s, 4),
        "images_per_s": round(args.batch / step_s, 4),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "crops_per_s": round(n_crops / step_s, 4),
        "step_s_min": round(min(times), 4),
        "step_s_median": round(statistics.median(times), 4),
        "steps": args.steps,
        "warmup": args.warmup,
        "prototypes": args.prototypes,
        "separate_ibot_head": args.separate_ibot_head,
        "drop_path": args.drop_path,
        "attn": args.attn,
        "dtype": "bfloat16 autocast" if args.bf16 else "float32",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(
            f"DINOv2 ViT-S/14 train step (PyTorch, CPU, {args.threads} threads): batch {args.batch}, "
            f"2x{GLOBAL_SIZE} + {args.local_crops}x{LOCAL_SIZE} crops, {args.prototypes} prototypes\n"
            f"  step {step_s:.3f}s (min {min(times):.3f}, median {statistics.median(times):.3f}, n={args.steps})\n"
            f"  {args.batch / step_s:.3f} images/s, {n_crops / step_s:.2f} crops/s, peak RSS {peak_rss_mib():.0f} MiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
