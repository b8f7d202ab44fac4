"""DreamBooth fine-tuning, full or LoRA, with prior preservation, CDL prompts, checkpoints and resume.

The paper's protocol (arXiv 2406.18944 §Fine-tuning, docs/PAPER.md §7): SD 2.1-base, full fine-tuning of
UNet and text encoder, 1000 steps, constant lr 5e-7, AdamW (bitsandbytes 8-bit in the reference), bf16
mixed precision, one instance and one class image per step, prior weight 1.0, 200 class images of "a
photo of person", the VAE posterior of each image encoded once and a fresh latent drawn from it at every
step, data length max(#instance, #class) shuffled per epoch. Every random draw comes from the seed and
the step number, so a run stopped at step k and resumed from its checkpoint ends with the same weights
as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .. import protocol
from ..errors import CheckpointError, InputError
from ..models.bundle import DiffusionModel
from .cdl import CDLPolicy, add_token
from ..fsmode import as_umask

log = logging.getLogger(__name__)

UNET_LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
LATENT_MODES = ("sample", "cached")
PRECISIONS = ("auto", "no", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adamw8bit")


@dataclass
class TrainConfig:
    """DreamBooth settings; defaults are the paper's (full fine-tune, prior preservation, 1000 steps)."""

    instance_prompt: str = protocol.INSTANCE_PROMPT
    class_prompt: str = protocol.CLASS_PROMPT
    steps: int = protocol.DREAMBOOTH_STEPS
    lr: float | None = None  # None: protocol.default_lr(lora), 5e-7 full / 1e-4 LoRA
    train_text_encoder: bool = True
    lora: bool = False
    lora_rank: int = 4
    lora_text_encoder: bool = False
    prior_weight: float = protocol.PRIOR_WEIGHT
    num_class_images: int = protocol.NUM_CLASS_IMAGES
    class_steps: int = protocol.CLASS_IMAGE_STEPS
    class_guidance: float = protocol.GUIDANCE
    resolution: int = 512
    # "sample": the VAE posterior (mean, std) is encoded once per image and a fresh latent drawn from it at
    # every step, as the reference (DiffShortcut train_dreambooth.py:834-839, 1006-1008); "cached": one draw
    # per image for the whole run (cloakbench before issue #17)
    latents: str = "sample"
    # "auto": the reference's bf16 (scripts/sub/train/full.sh:76) on a CUDA device with bf16, "no" (fp32)
    # elsewhere; "bf16" / "fp16": fp32 weights, autocast forward (fp16 with a gradient scaler), as accelerate
    mixed_precision: str = "auto"
    optimizer: str = "adamw"  # adamw (torch) | adamw8bit (bitsandbytes, CUDA only; the reference's, full.sh:74)
    gradient_checkpointing: bool = False
    checkpoint_every: int = 0  # 0: only on interruption
    # also checkpoint once this many seconds of training passed since the last one (0: off): resuming loses at
    # most that much, and short runs (the mini bench's 36 s trainings) write no 85 MB checkpoints they never use
    checkpoint_seconds: float = 0.0
    log_every: int = 10  # losses stay on the device and are written (one sync) every N steps
    compile_unet: bool = False  # opt-in torch.compile of the UNet (in place: saved weights keep their names)
    seed: int = 0
    cdl: CDLPolicy = field(default_factory=CDLPolicy)

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = protocol.default_lr(self.lora)

    def validate(self) -> None:
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be >= 1 (got {self.steps})")
        if self.lora and self.lora_rank < 1:
            problems.append(f"LoRA rank must be >= 1 (got {self.lora_rank})")
        if self.lr <= 0:
            problems.append(f"learning rate must be > 0 (got {self.lr})")
        for key, allowed in (("latents", LATENT_MODES), ("mixed_precision", PRECISIONS), ("optimizer", OPTIMIZERS)):
            if getattr(self, key) not in allowed:
                problems.append(f"{key} must be one of {', '.join(allowed)} (got {getattr(self, key)!r})")
        if self.resolution % 8:
            problems.append(f"resolution must be a multiple of 8 (got {self.resolution})")
        if self.log_every < 1:
            problems.append(f"log_every must be >= 1 (got {self.log_every})")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "the saved config") -> "TrainConfig":
        """The config :meth:`as_dict` saved (``personalized.json``); a key this version does not know (a model
        trained by an older cloakbench, e.g. ``use_8bit_adam`` before 2026-11) is an :class:`InputError` naming
        ``source`` and the key: its training cannot be resumed or described faithfully (retrain it)."""
        d = dict(d)
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"{source}: unknown training setting(s) {', '.join(unknown)} (written by an older "
                             "cloakbench): retrain the model with this version")
        d["cdl"] = CDLPolicy(**d.get("cdl", {}))
        return cls(**d)


def resolve_precision(setting: str, device: torch.device) -> str:
    """The mixed precision a run uses: ``"auto"`` is the reference's ``"bf16"`` on a CUDA device that has
    it and ``"no"`` (fp32) elsewhere (CPU autocast in bf16 is legal but slower than fp32); others as given."""
    if setting != "auto":
        return setting
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"


def _adamw8bit(device: torch.device) -> type[torch.optim.Optimizer]:
    """bitsandbytes' ``AdamW8bit``, or an :class:`InputError` naming the package (missing, or not on CUDA)."""
    try:
        from bitsandbytes.optim import AdamW8bit
    except ImportError as exc:
        raise InputError("optimizer 'adamw8bit' needs the bitsandbytes package, which is not installed "
                         "(pip install bitsandbytes); or use optimizer 'adamw'") from exc
    if device.type != "cuda":
        raise InputError(f"optimizer 'adamw8bit' (bitsandbytes) runs on CUDA only, the model is on {device.type}; "
                         "use optimizer 'adamw'")
    return AdamW8bit


def optimizer_to_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer ``state_dict`` as safetensors-ready tensors (``"<param index>.<name>"``) and JSON: the
    param groups and each non-tensor per-parameter value. Nothing is pickled."""
    tensors, scalars = {}, {}
    for idx, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().contiguous().cpu()
            elif isinstance(value, (int, float, bool)) or value is None:
                scalars[f"{idx}.{name}"] = value
            else:
                raise TypeError(f"optimizer state {idx}.{name} is a {type(value).__name__}, not a tensor or number")
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`optimizer_to_tensors`: a ``state_dict`` for ``Optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _order(seed: int, epoch: int, length: int) -> torch.Tensor:
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))


def _draw(rows: list[tuple[torch.Tensor, torch.Tensor | None, int]], gen: torch.Generator) -> torch.Tensor:
    """A step's latents, one per ``(mean, std, index)`` row: the cached draw (``std`` None: ``gen`` is not
    used) or ``mean + std * N(0, I)`` with the noise from ``gen`` (CPU, fp32), before the step's diffusion
    noise and timesteps are drawn from it."""
    mean = torch.stack([m[i] for m, _, i in rows])
    if rows[0][1] is None:
        return mean
    std = torch.stack([s[i] for _, s, i in rows])
    return mean + std * torch.randn(mean.shape, generator=gen, dtype=torch.float32).to(mean.device, mean.dtype)


class DreamBoothTrainer:
    """Trains ``model`` in place. ``fit`` runs (or resumes) to ``cfg.steps`` and saves the result."""

    def __init__(self, model: DiffusionModel, cfg: TrainConfig, out_dir: str | os.PathLike[str]) -> None:
        cfg.validate()
        self.model, self.cfg, self.out = model, cfg, Path(out_dir)
        self.token_id: int | None = None
        if cfg.cdl.enabled and cfg.cdl.new_token:
            self.token_id = add_token(model, cfg.cdl.new_token, cfg.cdl.init_from)
        if cfg.lora:
            self._add_lora()
        if cfg.compile_unet:
            model.unet.compile()
        if cfg.gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
            if cfg.train_text_encoder:
                model.text_encoder.gradient_checkpointing_enable()
        self.params = self._trainable()
        self.precision = resolve_precision(cfg.mixed_precision, model.device)
        if self.precision != "no" and any(p.dtype != torch.float32 for p in self.params.values()):
            # as the reference (DiffShortcut train_dreambooth.py:713-727): trainable weights stay fp32 masters
            raise InputError(f"mixed precision {self.precision} trains fp32 weights; load the model in fp32")
        self.opt = self._optimizer()
        self.scaler = torch.amp.GradScaler(model.device.type, enabled=self.precision == "fp16")
        self.instance_prompt = cfg.cdl.instance_prompt(cfg.instance_prompt)
        self.class_prompt = cfg.cdl.class_prompt(cfg.class_prompt)

    @property
    def text_encoder_trained(self) -> bool:
        """Whether any text-encoder weight learns (full fine-tune, LoRA on it, or a new CDL token)."""
        if self.cfg.lora:
            return self.cfg.lora_text_encoder or self.token_id is not None
        return self.cfg.train_text_encoder

    # ------------------------------------------------------------------ setup
    def _add_lora(self) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            inject_lora(self.model, self.cfg.lora_rank, self.cfg.lora_text_encoder, init="gaussian")

    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        m, cfg = self.model, self.cfg
        named: dict[str, torch.nn.Parameter] = {}
        if cfg.lora:
            named.update({f"unet.{n}": p for n, p in m.unet.named_parameters() if "lora_" in n})
            if cfg.lora_text_encoder:
                named.update({f"text_encoder.{n}": p for n, p in m.text_encoder.named_parameters() if "lora_" in n})
            if self.token_id is not None:  # only the new row learns: gradients of other rows are zeroed
                emb = m.text_encoder.get_input_embeddings().weight
                emb.requires_grad_(True)
                named["text_encoder.token_embedding"] = emb
                keep = torch.zeros(emb.shape[0], 1, dtype=emb.dtype, device=emb.device)
                keep[self.token_id] = 1
                emb.register_hook(lambda g: g * keep)
        else:
            named.update({f"unet.{n}": p for n, p in m.unet.named_parameters()})
            if cfg.train_text_encoder:
                named.update({f"text_encoder.{n}": p for n, p in m.text_encoder.named_parameters()})
        for p in named.values():
            p.requires_grad_(True)
        return named

    def _optimizer(self) -> torch.optim.Optimizer:
        params: list = list(self.params.values())
        # the reference's defaults (DiffShortcut generic/share_args.py:333-349): betas, weight decay, eps
        kw: dict[str, Any] = dict(lr=self.cfg.lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        if self.token_id is not None and self.cfg.lora:
            emb = self.params["text_encoder.token_embedding"]
            params = [{"params": [p for p in params if p is not emb]}, {"params": [emb], "weight_decay": 0.0}]
        if self.cfg.optimizer == "adamw8bit":
            return _adamw8bit(self.model.device)(params, **kw)
        if self.model.device.type == "cuda":
            kw["fused"] = True  # one kernel for all parameters (CPU keeps the reference foreach path)
        return torch.optim.AdamW(params, **kw)

    # ------------------------------------------------------------------ checkpoints
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().cpu().contiguous().clone() for k, p in self.params.items()}

    def save_checkpoint(self, step: int) -> Path:
        """Atomically write ``checkpoints/step-<step>`` (weights, optimizer, step); keep the last two."""
        root = self.out / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".ckpt-", dir=root))
        as_umask(tmp, directory=True)
        save_file(self._trainable_state(), tmp / "trainable.safetensors")
        tensors, groups = optimizer_to_tensors(self.opt.state_dict())
        save_file(tensors, tmp / "optimizer.safetensors")
        (tmp / "state.json").write_text(json.dumps({"step": step, "config": json.loads(json.dumps(self.cfg.as_dict(), default=str)),
                                                    "optimizer": groups,  # optimizer values must be plain JSON
                                                    "scaler": self.scaler.state_dict()}))  # {} unless fp16
        final = root / f"step-{step:06d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(root.glob("step-*"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint. One without ``optimizer.safetensors`` (an older cloakbench's, or a
        planted one: a pickled ``optimizer.pt`` could run code and is never loaded) is skipped with a warning."""
        done = sorted(p for p in (self.out / "checkpoints").glob("step-*") if (p / "state.json").is_file())
        safe = [p for p in done if (p / "optimizer.safetensors").is_file()]
        for p in sorted(set(done) - set(safe)):
            log.warning("checkpoint %s ignored: it holds no optimizer.safetensors (a pickled optimizer state is never "
                        "loaded); training goes on from an earlier checkpoint or from the start", p)
        return safe[-1] if safe else None

    def load_checkpoint(self, path: Path) -> int:
        state = load_file(path / "trainable.safetensors")
        missing = set(self.params) - set(state)
        if missing:
            raise CheckpointError(f"checkpoint {path} does not match this configuration (missing {sorted(missing)[:3]})")
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(state[k].to(p))
        meta = json.loads((path / "state.json").read_text())
        if not (path / "optimizer.safetensors").is_file() or "optimizer" not in meta:
            raise CheckpointError(f"checkpoint {path} has no optimizer.safetensors: cloakbench checkpoints hold tensors "
                                  "only (a pickled optimizer.pt is never loaded: it could run code); delete "
                                  f"{path} to train that part again")
        self.opt.load_state_dict(optimizer_from_tensors(load_file(path / "optimizer.safetensors"), meta["optimizer"]))
        if meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        return int(meta["step"])

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def _cache_latents(self, images: torch.Tensor, salt: int) -> torch.Tensor:
        """One posterior draw per image (``B x 4 x h x w``, scaled latent units), fixed for the run."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 31 + salt)
        return torch.cat([self.model.encode(images[i : i + 1].to(self.model.device), generator=gen)
                          for i in range(images.shape[0])]).detach()

    @torch.no_grad()
    def _posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of each image's VAE posterior (``B x 4 x h x w`` each) in the scaled
        latent units of :meth:`DiffusionModel.encode` (VAE shift removed, times its scaling factor), so a
        draw is ``mean + std * N(0, I)``. One image at a time, in the VAE's dtype as loaded (the reference
        encodes with its bf16 VAE under mixed precision, train_dreambooth.py:813-834; once per run, fp32
        costs nothing here)."""
        parts = [self.model.posterior(images[i : i + 1]) for i in range(images.shape[0])]
        return torch.cat([m for m, _ in parts]), torch.cat([s for _, s in parts])

    def _latent_set(self, images: torch.Tensor, salt: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mean, std)`` to draw from at every step (``latents="sample"``), or ``(fixed draw, None)``."""
        if self.cfg.latents == "cached":
            return self._cache_latents(images, salt), None
        return self._posterior(images)

    def fit(
        self,
        instance_images: torch.Tensor,
        class_images: torch.Tensor | None = None,
        *,
        resume: bool = False,
        stop_after: int | None = None,
        progress: Callable[[int, int, float], None] | None = None,
    ) -> dict[str, Any]:
        """Train to ``cfg.steps`` (from the latest checkpoint with ``resume``); save; return a summary.

        ``stop_after`` ends the run after that step with a checkpoint (as an interruption would).
        Ctrl-C saves a checkpoint at the current step before re-raising.
        """
        cfg = self.cfg
        if instance_images.shape[0] == 0:
            raise ValueError("no instance images")
        use_prior = class_images is not None and cfg.prior_weight > 0
        self.out.mkdir(parents=True, exist_ok=True)
        start = 0
        if resume and (ckpt := self.latest_checkpoint()) is not None:
            start = self.load_checkpoint(ckpt)
            log.info("resumed from %s at step %d", ckpt, start)
        sets = [self._latent_set(instance_images, 1)] + ([self._latent_set(class_images, 2)] if use_prior else [])
        length = max(mean.shape[0] for mean, _ in sets)
        prompts = [self.instance_prompt] + ([self.class_prompt] if use_prior else [])
        log_path = self.out / "train_log.jsonl"
        if start == 0:
            log_path.write_text(json.dumps({"instance_prompt": self.instance_prompt,
                                            "class_prompt": self.class_prompt if use_prior else None}) + "\n")
        self.model.unet.train()
        self.model.text_encoder.train(self.text_encoder_trained)
        half = torch.bfloat16 if self.precision == "bf16" else torch.float16
        autocast = torch.autocast(self.model.device.type, dtype=half) if self.precision != "no" else contextlib.nullcontext()
        scaler = self.scaler
        params = list(self.params.values())
        t0, step, losses, pending = time.perf_counter(), start, [], []
        saved_at = t0
        order, epoch = None, None

        def flush() -> None:
            """One device sync and one log write for the losses since the last flush (kept on device)."""
            if not pending:
                return
            values = torch.stack(pending).float().cpu().tolist()
            with log_path.open("a") as fh:
                fh.writelines(json.dumps({"step": step - len(values) + i + 1, "loss": v}) + "\n"
                              for i, v in enumerate(values))
            losses.extend(values)
            pending.clear()
            if progress is not None:
                progress(step, cfg.steps, values[-1])

        try:
            with autocast:  # prompts encoded once when the text encoder does not learn
                text = None if self.text_encoder_trained else self.model.encode_prompt(prompts).detach()
            while step < cfg.steps:
                if epoch != step // length:
                    epoch = step // length
                    order = _order(cfg.seed, epoch, length).tolist()
                k = order[step % length]
                gen = _step_generator(cfg.seed, step)
                batch = _draw([(mean, std, k % mean.shape[0]) for mean, std in sets], gen)
                with autocast:
                    loss = self._loss(batch, prompts if text is None else text, gen)
                self.opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
                scaler.step(self.opt)
                scaler.update()
                step += 1
                pending.append(loss.detach())
                if step % cfg.log_every == 0:
                    flush()
                due = bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0
                due = due or (cfg.checkpoint_seconds > 0 and time.perf_counter() - saved_at >= cfg.checkpoint_seconds)
                if due and step < cfg.steps:
                    flush()
                    self.save_checkpoint(step)
                    saved_at = time.perf_counter()
                if stop_after is not None and step >= stop_after and step < cfg.steps:
                    flush()
                    self.save_checkpoint(step)
                    return {"stopped_at": step, "losses": losses}
            flush()
        except KeyboardInterrupt:
            flush()
            self.save_checkpoint(step)
            log.warning("interrupted at step %d; checkpoint saved, rerun with --resume", step)
            raise
        finally:
            self.model.unet.eval()
            self.model.text_encoder.eval()
        seconds = time.perf_counter() - t0
        self.save()
        shutil.rmtree(self.out / "checkpoints", ignore_errors=True)  # the finished model replaces them
        return {"steps": cfg.steps, "resumed_from": start, "seconds": seconds, "losses": losses,
                "mixed_precision": self.precision, "instance_prompt": self.instance_prompt,
                "class_prompt": self.class_prompt if use_prior else None}

    def _loss(self, latents: torch.Tensor, prompts: list[str], gen: torch.Generator) -> torch.Tensor:
        per = self.model.loss(None, prompts, generator=gen, latents=latents, reduction="none")
        return per[0] + (self.cfg.prior_weight * per[1] if per.shape[0] > 1 else 0.0)

    # ------------------------------------------------------------------ saving
    def save(self) -> Path:
        """Write the result: a diffusers folder (full) or LoRA safetensors (+ token embeddings), with config."""
        meta = {"kind": "lora" if self.cfg.lora else "full", "base": self.model.source,
                "config": self.cfg.as_dict(), "instance_prompt": self.instance_prompt,
                "class_prompt": self.class_prompt,
                "resolved": {"mixed_precision": self.precision, "device": self.model.device.type}}
        if self.cfg.lora:
            tmp = Path(tempfile.mkdtemp(prefix=".lora-", dir=self.out))
            as_umask(tmp, directory=True)
            save_file(lora_state(self.model.unet), tmp / "unet_lora.safetensors")
            if self.cfg.lora_text_encoder:
                save_file(lora_state(self.model.text_encoder), tmp / "text_encoder_lora.safetensors")
            if self.token_id is not None:
                emb = self.model.text_encoder.get_input_embeddings().weight[self.token_id].detach().cpu()
                save_file({self.cfg.cdl.new_token: emb.contiguous()}, tmp / "token_embeddings.safetensors")
            (tmp / "personalized.json").write_text(json.dumps(meta, indent=2, default=str))
            final = self.out / "lora"
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        else:
            self.model.save(self.out / "model", extra={"personalized": meta})
            final = self.out / "model"
        (self.out / "personalized.json").write_text(json.dumps({**meta, "path": final.name}, indent=2, default=str))
        return final


def inject_lora(model: DiffusionModel, rank: int, text_encoder: bool, init: str | bool = True) -> None:
    """Add rank-``rank`` LoRA adapters (peft) to the UNet attention and optionally the text encoder."""
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=init,
                                       target_modules=UNET_LORA_TARGETS), model.unet)
    if text_encoder:
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=init,
                                           target_modules=TEXT_LORA_TARGETS), model.text_encoder)


def lora_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA parameters of ``module`` by name (CPU, contiguous)."""
    return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if "lora_" in n}


def _load_lora(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    result = module.load_state_dict(state, strict=False)
    lora_missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or lora_missing:
        raise ValueError(f"{what} LoRA weights do not match the adapters: unexpected {result.unexpected_keys[:3]}, "
                         f"missing {lora_missing[:3]}")


def trained_cdl(path: str | os.PathLike[str]) -> CDLPolicy:
    """The CDL policy a training output folder was trained with (``personalized.json``); the default
    (CDL off) for anything else (a diffusers folder, a hub id)."""
    meta_file = Path(path) / "personalized.json"
    if not meta_file.is_file():
        return CDLPolicy()
    return CDLPolicy(**json.loads(meta_file.read_text()).get("config", {}).get("cdl", {}))


def load_personalized(path: str | os.PathLike[str], *, device: str | None = None, dtype: str | torch.dtype = "fp32",
                      base: str | None = None) -> DiffusionModel:
    """Load a training output folder (full or LoRA) as a :class:`DiffusionModel` ready for sampling."""
    from ..models.loading import ModelLoadError, load_model

    path = Path(path)
    meta_file = path / "personalized.json"
    if not meta_file.is_file():
        if (path / "model_index.json").is_file():
            return load_model(path, device=device, dtype=dtype)
        raise ModelLoadError(f"{path} is not a cloakbench training output (no personalized.json) nor a diffusers folder")
    meta = json.loads(meta_file.read_text())
    if meta["kind"] == "full":
        return load_model(path / meta.get("path", "model"), device=device, dtype=dtype)
    src = base or meta["base"]
    model = load_model("tiny" if src.startswith("tiny") else src, device=device, dtype=dtype)
    cfg = TrainConfig.from_dict(meta["config"], source=str(meta_file))
    lora_dir = path / "lora"
    emb_file = lora_dir / "token_embeddings.safetensors"
    if emb_file.is_file():
        for token, vec in load_file(emb_file).items():
            tid = add_token(model, token)
            with torch.no_grad():
                model.text_encoder.get_input_embeddings().weight[tid] = vec.to(model.text_encoder.dtype)
    te_file = lora_dir / "text_encoder_lora.safetensors"
    inject_lora(model, cfg.lora_rank, te_file.is_file())
    _load_lora(model.unet, load_file(lora_dir / "unet_lora.safetensors"), "unet")
    if te_file.is_file():
        _load_lora(model.text_encoder, load_file(te_file), "text encoder")
    model.unet.eval()
    model.text_encoder.eval()
    return model
