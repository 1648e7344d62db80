"""Data parallelism for the distillation run: explicit gradient averaging over torch.distributed.

The run calls one UNet many times per step with different peft adapters active (teacher = adapters
off, target, student, the DMD fake score with its own optimizer and backward, the feedback LoRA),
so it does not wrap the UNet in DistributedDataParallel (one forward/backward per step, all
parameters used). Instead every process keeps a full copy, draws its own data and noise, and the
gradients of the parameters an optimizer is about to update are averaged over the processes right
before that optimizer steps (one all-reduce per dtype bucket). All processes start from the same
weights (same seed before the LoRA initialisation) and apply the same averaged update, so their
weights stay identical. With one process every function here does nothing.

Supported: accelerate's NO (one process), MULTI_CPU (gloo) and MULTI_GPU / other MULTI_* types
(one full copy per device). Refused with one line: FSDP, DeepSpeed, Megatron-LM and XLA, which
shard or wrap a model that would have to go through `accelerator.prepare`; the run does not do that.
"""

from __future__ import annotations

import os

import torch

from hypersd.errors import UserError

_BUCKET = 1 << 25  # elements per all-reduce (128 MiB of fp32): bounds the extra memory of a full-UNet stage
_SHARDING_ENV = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
                 "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM"}


def world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def require_supported(accelerator=None) -> None:
    """Refuse distributed set-ups the run would silently mishandle (model sharding, XLA): those that
    `accelerate launch` asks for (checked before the Accelerator exists) and the Accelerator's type."""
    kind = "NO" if accelerator is None else getattr(accelerator.distributed_type, "value",
                                                     str(accelerator.distributed_type))
    asked = [name for var, name in _SHARDING_ENV.items() if os.environ.get(var, "false").lower() == "true"]
    if asked or not (kind == "NO" or kind.startswith("MULTI_")):
        what = asked[0] if asked else kind
        raise UserError(f"distill runs data-parallel with plain processes only (accelerate distributed_type "
                        f"MULTI_CPU/MULTI_GPU, e.g. configs/accelerate/ddp.yaml); {what} is not supported")


@torch.no_grad()
def average_gradients(params) -> None:
    """Replace each parameter's .grad by its mean over all processes (no-op with one process).

    A parameter without a gradient on some processes counts as zero there; one without a gradient
    on every process keeps None (so optimizers skip it, as they would with one process)."""
    n = world_size()
    if n == 1:
        return
    dist = torch.distributed
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has)
    live = [p for p, count in zip(params, has.tolist()) if count > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    buckets: dict[tuple, list[list[torch.Tensor]]] = {}
    sizes: dict[tuple, int] = {}
    for p in live:
        key = (p.grad.dtype, p.grad.device)
        groups = buckets.setdefault(key, [[]])
        if groups[-1] and sizes[key] + p.grad.numel() > _BUCKET:
            groups.append([])
            sizes[key] = 0
        groups[-1].append(p.grad)
        sizes[key] = sizes.get(key, 0) + p.grad.numel()
    for groups in buckets.values():
        for grads in groups:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= n
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()


def average_before_step(optimizer, args, kwargs) -> None:
    """An optimizer step pre-hook (`optimizer.register_step_pre_hook`): average its gradients first."""
    average_gradients([p for group in optimizer.param_groups for p in group["params"]])
