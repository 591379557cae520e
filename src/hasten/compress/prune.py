"""`prune()`: unstructured magnitude pruning, structured channel / head / MLP-width pruning that
physically shrinks the model (Torch-Pruning's dependency graph keeps coupled layers consistent),
and 2:4 semi-structured sparsity; each optionally fine-tuned, then exported back to ONNX.

Works on models that came from torch. torch and torch-pruning are imported lazily.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hasten.compress.training import (Checkpoint, Monitor, fidelity_targets, fingerprint, fit, shuffled_batches,
                                      watching)
from hasten.core import HastenError, MissingDependencyError

if TYPE_CHECKING:
    from hasten.models import Dataset, Model

__all__ = ["Monitor", "PruneConfig", "prune"]  # Monitor lives in compress.training; kept importable here

PRUNE_METHODS = ("unstructured", "channel", "2:4")
IMPORTANCES = ("l1", "l2", "taylor")
SCOPES = ("global", "layer")
NOT_ACCELERATED = {
    "unstructured": "zeroed weights are still multiplied by dense kernels: expect the same latency, only a "
                    "model that compresses better",
    "2:4": "no CPU backend here runs 2:4 sparse kernels: on CPU this is the same dense model; sparse tensor "
           "cores (NVIDIA Ampere or newer, with TensorRT or torch's semi-structured sparse tensors) accelerate it",
}


@dataclass(frozen=True)
class PruneConfig:
    """How to prune.

    ``amount`` is the fraction of weights (unstructured), of channels / heads / MLP width (channel)
    to remove; 2:4 always removes half. ``scope`` is global (one threshold over all layers) or per
    layer, for unstructured. ``round_to`` rounds kept channel counts to a multiple that the
    backend's kernels like. ``iterative_steps`` prunes in that many equal steps with fine-tuning
    between them. ``ignore`` names modules never pruned (the classifier head always is kept).
    """

    method: str = "channel"
    amount: float = 0.5
    scope: str = "global"
    importance: str = "l1"
    round_to: int = 8
    iterative_steps: int = 1
    finetune_steps: int = 0
    lr: float = 1e-3
    batch_size: int = 32
    ignore: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in PRUNE_METHODS:
            raise HastenError(f"unknown pruning method '{self.method}'", hint="use one of: " + ", ".join(PRUNE_METHODS))
        if not isinstance(self.amount, (int, float)) or not 0 < self.amount < 1:
            raise HastenError(f"--amount must be a fraction between 0 and 1 (exclusive), got {self.amount!r}",
                              hint="e.g. --amount 0.5 removes half")
        if self.method == "2:4" and self.amount != 0.5:
            raise HastenError(f"2:4 sparsity always removes exactly half of the weights; --amount {self.amount} "
                              "does not apply", hint="drop --amount, or use --method unstructured for other amounts")
        if self.importance not in IMPORTANCES:
            raise HastenError(f"unknown importance '{self.importance}'", hint="use one of: " + ", ".join(IMPORTANCES))
        if self.scope not in SCOPES:
            raise HastenError(f"unknown scope '{self.scope}'", hint="use one of: " + ", ".join(SCOPES))
        for name, value, low in (("round_to", self.round_to, 1), ("iterative_steps", self.iterative_steps, 1),
                                 ("finetune_steps", self.finetune_steps, 0), ("batch_size", self.batch_size, 1)):
            if not isinstance(value, int) or value < low:
                raise HastenError(f"{name} must be an integer >= {low}, got {value!r}")
        if not self.lr > 0:
            raise HastenError(f"lr must be > 0, got {self.lr!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def prune(model: Model, config: PruneConfig, data: Dataset | None = None, out: str | Path | None = None, *,
          monitor: Monitor | None = None, checkpoint: str | Path | None = None) -> Model:
    """Prune a copy of ``model``'s torch module as ``config`` says, fine-tune it on ``data`` (labels,
    or the unpruned model's outputs as targets), export it to ``out`` and return the new `Model`
    (the input is untouched); ``info.extra["manifest"]`` says what was done."""
    import tempfile

    from hasten.models.torch_export import import_torch

    if not model.has_torch:
        raise HastenError(f"pruning needs the PyTorch module of '{model.name}', which was loaded from {model.info.source}",
                          hint="load it from torch (load_model(module, example_input=...)), a sentence-transformers "
                               "folder or a built-in example; an ONNX file cannot be pruned here")
    if config.finetune_steps and data is None:
        raise HastenError("fine-tuning needs data", hint="pass --data file.npz, or --finetune-steps 0")
    torch = import_torch()
    started = time.perf_counter()
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="hasten-prune-")) / f"{model.name}.pruned.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    source = model.torch_module().eval()
    module = copy.deepcopy(source)
    _check_ignored(module, config.ignore)
    names = [s.name for s in model.inputs]
    steps = config.finetune_steps
    batches = shuffled_batches(names, data, config.batch_size, max(steps, 1), torch, config.seed) if data is not None else []
    targets: list[Any] = []
    loss_fn: Any = None
    loss_name = None
    if batches:
        targets, loss_name, loss_fn = fidelity_targets(source, batches, torch)
    run = fingerprint("prune", model.name, str(model.path), config.to_dict(), len(data) if data is not None else 0)
    ckpt = Checkpoint(checkpoint, run) if checkpoint else None

    def step_loss(step: int) -> Any:
        from hasten.compress.training import as_tuple

        feed, _ = batches[step % len(batches)]
        return loss_fn(as_tuple(module(*feed)), targets[step % len(batches)])

    def tune(first: int, last: int, stage: str) -> Any:
        if last <= first or not batches:
            return None
        optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=config.lr)
        return fit(module, step_loss, last, optimizer, torch, label=f"fine-tuning ({config.method})",
                   checkpoint=ckpt.at(stage) if ckpt else None, start=first,
                   checkpoint_every=max(10, config.finetune_steps // 10),
                   **watching(monitor, module))

    if config.method == "channel":
        facts, fits = _channel(module, model, config, batches, loss_fn, targets, tune, ckpt, torch)
    else:
        facts, fits = _masked(module, config, tune, torch)
    fitted = [f for f in fits if f is not None]
    facts["finetune"] = {
        "steps": sum(f.steps - f.started_at for f in fitted), "planned_steps": steps, "loss": loss_name,
        "optimizer": "Adam", "lr": config.lr, "batch_size": config.batch_size,
        "resumed_from": max((f.resumed_from for f in fitted), default=0),
        "stopped_early": any(f.stopped_early for f in fitted),
        "final_loss": round(fitted[-1].final_loss, 6) if fitted else None,
        "evaluations": [e for f in fitted for e in f.evaluations],
        "data": {"name": data.name, "examples": len(data)} if data is not None else None,
    }
    if config.method in NOT_ACCELERATED:
        facts["speed_note"] = NOT_ACCELERATED[config.method]
    from hasten.compress.derived import export_derived

    suffix = {"unstructured": "sparse", "channel": "pruned", "2:4": "2to4"}[config.method]
    return export_derived(model, module, out, "prune", config.to_dict(), facts, started, suffix)


def _check_ignored(module: Any, ignore: tuple[str, ...]) -> None:
    known = {n for n, _ in module.named_modules()}
    missing = [n for n in ignore if n not in known]
    if missing:
        sample = ", ".join(sorted(n for n in known if n)[:12])
        raise HastenError(f"--ignore names modules the model does not have: {', '.join(missing)}",
                          hint=f"module names look like: {sample}")


def prunable_layers(module: Any, torch: Any) -> list[tuple[str, Any]]:
    """(name, module) of every nn.Linear and nn.Conv1d/2d/3d, in registration order."""
    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    return [(n, m) for n, m in module.named_modules() if isinstance(m, kinds)]


def head_layer(module: Any, torch: Any) -> str:
    """The output head: the last prunable layer registered (its outputs are the model's classes
    or features, which pruning must not change)."""
    layers = prunable_layers(module, torch)
    if not layers:
        raise HastenError("the model has no nn.Linear or nn.Conv layer to prune")
    return layers[-1][0]


# ---------------------------------------------------------------------------- unstructured / 2:4

def two_four_mask(weight: Any) -> Any:
    """Keep the two largest-magnitude weights in every group of four consecutive inputs."""
    w = weight.detach().reshape(weight.shape[0], -1)
    groups = w.abs().reshape(w.shape[0], -1, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = groups.new_zeros(groups.shape).scatter_(-1, keep, 1.0)
    return mask.reshape(weight.shape)


def is_two_four(weight: Any) -> bool:
    """Exactly two non-zeros in every group of four consecutive inputs (per output row)."""
    w = np.asarray(weight).reshape(weight.shape[0], -1)
    if w.shape[1] % 4:
        return False
    return bool(((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) == 2).all())


def _masked(module: Any, config: PruneConfig, tune: Callable[..., Any], torch: Any) -> tuple[dict[str, Any], list[Any]]:
    from torch.nn.utils import prune as tprune

    layers = [(n, m) for n, m in prunable_layers(module, torch) if n not in config.ignore]
    skipped: dict[str, str] = {}
    if config.method == "2:4":
        for name, layer in layers:
            if layer.weight[0].numel() % 4:
                skipped[name] = f"{layer.weight[0].numel()} inputs per output, not a multiple of 4"
                continue
            tprune.custom_from_mask(layer, "weight", two_four_mask(layer.weight))
    elif config.scope == "global":
        tprune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=tprune.L1Unstructured,
                                   amount=config.amount)
    else:
        for _, layer in layers:
            tprune.l1_unstructured(layer, "weight", amount=config.amount)
    fits = [tune(0, config.finetune_steps, "masked")]  # the masks hold during fine-tuning
    for name, layer in layers:
        if name not in skipped:
            tprune.remove(layer, "weight")  # permanent: the zeros are in the weight itself
    sparsity = {name: round(float((layer.weight == 0).float().mean()), 4) for name, layer in layers}
    facts: dict[str, Any] = {"sparsity_per_layer": sparsity}
    total = sum(m.weight.numel() for _, m in layers)
    facts["sparsity_overall"] = round(sum(s * m.weight.numel() for (_, m), s in zip(layers, sparsity.values())) / total, 4)
    if config.method == "2:4":
        facts["two_four_layers"] = {n: is_two_four(m.weight.detach().numpy()) for n, m in layers if n not in skipped}
        facts["skipped_layers"] = skipped
        if torch.cuda.is_available():
            facts["gpu_speed_check"] = semi_structured_speed(
                [m.weight for n, m in layers if n not in skipped and isinstance(m, torch.nn.Linear)], torch)
    return facts, fits


def semi_structured_speed(weights: list[Any], torch: Any, tokens: int = 2048, repeats: int = 50,
                          rounds: int = 5) -> dict[str, Any]:
    """On an NVIDIA GPU: each 2:4-pruned Linear weight as a dense FP16 matmul and as torch's
    semi-structured sparse tensor (sparse tensor cores) through each sparse kernel torch has
    (cuSPARSELt, CUTLASS), timed with CUDA events in interleaved rounds (median per variant); the
    best kernel's ratio is the speed-up 2:4 can give there. `launch_ms` is the host time to issue
    one call: when it is close to the measured time the GPU waited for Python, not for the matmul.
    Layers the sparse kernels cannot take are reported so."""
    import statistics
    import time

    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    def timed(weight: Any, x: Any) -> tuple[float, float]:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        start.record()
        for _ in range(repeats):
            torch.nn.functional.linear(x, weight)
        end.record()
        host = (time.perf_counter() - t0) * 1e3 / repeats
        torch.cuda.synchronize()
        return start.elapsed_time(end) / repeats, host

    rows = []
    for w in weights:
        dense = w.detach().to("cuda", torch.float16)
        x = torch.randn(tokens, dense.shape[1], device="cuda", dtype=torch.float16)
        variants: dict[str, Any] = {"dense": dense}
        why = {}
        for kernel, force_cutlass in (("cusparselt", False), ("cutlass", True)):
            previous = SparseSemiStructuredTensor._FORCE_CUTLASS
            SparseSemiStructuredTensor._FORCE_CUTLASS = force_cutlass
            try:
                variants[kernel] = to_sparse_semi_structured(dense)
                torch.nn.functional.linear(x, variants[kernel])  # a kernel that cannot run says so here
            except (RuntimeError, ValueError) as exc:  # shape, dtype or kernel the build does not support
                variants.pop(kernel, None)
                why[kernel] = str(exc).splitlines()[0][:200]
            finally:
                SparseSemiStructuredTensor._FORCE_CUTLASS = previous
        if len(variants) == 1:
            rows.append({"shape": list(dense.shape), "supported": False, "why": "; ".join(f"{k}: {v}" for k, v in why.items())})
            continue
        for weight in variants.values():  # warm-up: kernel selection, caches
            for _ in range(5):
                torch.nn.functional.linear(x, weight)
        gpu: dict[str, list[float]] = {k: [] for k in variants}
        host: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for name, weight in variants.items():
                g, h = timed(weight, x)
                gpu[name].append(g)
                host[name].append(h)
        graph = {k: _graph_replay_ms(torch, weight, x, repeats) for k, weight in variants.items()}
        ms = {k: statistics.median(v) for k, v in gpu.items()}
        sparse = {k: v for k, v in ms.items() if k != "dense"}
        best = min(sparse, key=sparse.get)
        rows.append({"shape": list(dense.shape), "supported": True, "dense_ms": ms["dense"], "sparse_ms": ms[best],
                     "kernel": best, "speedup": ms["dense"] / ms[best],
                     "kernels": {k: {"ms": v, "launch_ms": statistics.median(host[k]), "graph_ms": graph[k]}
                                 for k, v in ms.items()},
                     "graph_speedup": _ratio(graph["dense"], graph[best]), "unavailable": why})
    return {"device": torch.cuda.get_device_name(0), "tokens": tokens, "torch": torch.__version__, "layers": rows}


def _ratio(a: float | str, b: float | str) -> float | None:
    return a / b if isinstance(a, float) and isinstance(b, float) and b > 0 else None


def _graph_replay_ms(torch: Any, weight: Any, x: Any, repeats: int) -> float | str:
    """Per-call time of the matmul replayed from a CUDA graph (no host work per call: what the
    kernel alone costs, as under TensorRT or a captured server), or why it could not be captured."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            torch.nn.functional.linear(x, weight)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(repeats):
                torch.nn.functional.linear(x, weight)
        g.replay()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(3):
            g.replay()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / (3 * repeats)
    except Exception as exc:  # noqa: BLE001 - a kernel that cannot be captured is a finding, not a failure
        return f"not capturable: {str(exc).splitlines()[0][:160]}"


# ---------------------------------------------------------------------------- structured (channels)

def _importance(config: PruneConfig) -> Any:
    import torch_pruning as tp

    if config.importance == "taylor":
        return tp.importance.TaylorImportance()
    return tp.importance.MagnitudeImportance(p=1 if config.importance == "l1" else 2)


def attention_modules(module: Any, torch: Any) -> list[Any]:
    """Self-attention blocks with separate query/key/value projections and a head count (the
    Hugging Face BERT family's layout: ``query``, ``key``, ``value``, ``num_attention_heads``)."""
    found = []
    for sub in module.modules():
        heads = getattr(sub, "num_attention_heads", None)
        if isinstance(heads, int) and all(isinstance(getattr(sub, p, None), torch.nn.Linear)
                                          for p in ("query", "key", "value")):
            found.append(sub)
    return found


def _channel(module: Any, model: Model, config: PruneConfig, batches: list[Any], loss_fn: Any, targets: list[Any],
             tune: Callable[..., Any], ckpt: Checkpoint | None, torch: Any) -> tuple[dict[str, Any], list[Any]]:
    try:
        import torch_pruning as tp
    except ImportError as exc:
        raise MissingDependencyError("torch-pruning", "torch", "structured (channel) pruning") from exc
    example = tuple(model.example_input())
    before = {n: _shape(m) for n, m in prunable_layers(module, torch)}
    ignored_names = set(config.ignore) | {head_layer(module, torch)}
    attn = attention_modules(module, torch)
    heads_before = [a.num_attention_heads for a in attn]
    num_heads, qkv = {}, set()
    for a in attn:
        for proj in (a.query, a.key, a.value):
            num_heads[proj] = a.num_attention_heads
            qkv.add(proj)
    if attn:
        # transformers keep their width (embeddings, residual stream, LayerNorm): prune heads and
        # MLP width; the projections back into the residual stream keep their outputs
        width = attn[0].query.in_features
        ignored_names |= {n for n, m in prunable_layers(module, torch)
                          if getattr(m, "out_features", None) == width and m not in qkv}
    ignored = [module.get_submodule(n) for n in sorted(ignored_names)]
    pruner = tp.pruner.MetaPruner(
        module, example, importance=_importance(config), pruning_ratio=config.amount,
        iterative_steps=config.iterative_steps, round_to=config.round_to, ignored_layers=ignored,
        num_heads=num_heads, prune_num_heads=bool(attn), prune_head_dims=False,
        head_pruning_ratio=config.amount if attn else 0.0)
    per_phase = config.finetune_steps // config.iterative_steps
    meta = ckpt.meta(any_stage=True) if ckpt else None
    resume_phase = int(meta["stage"].removeprefix("phase")) if meta and meta.get("stage", "").startswith("phase") else -1
    if resume_phase >= 0:  # redo the recorded pruning (Torch-Pruning's own history), then load the weights
        # a pass at ratio 0 first: the pruner takes each scope's channel count on its first pass,
        # and later phases' targets are fractions of that (unpruned) count
        importance, pruner.importance = pruner.importance, tp.importance.MagnitudeImportance(p=1)
        assert not list(pruner._prune()), "a pruning pass at step 0 removes nothing"
        pruner.importance = importance
        pruner.DG.load_pruning_history([(n, bool(out), list(idxs)) for n, out, idxs in meta["pruning_history"]])
        pruner.current_step = resume_phase + 1
        _sync_heads(attn, pruner)
    fits = []
    for phase in range(config.iterative_steps):
        if phase > resume_phase:
            if config.importance == "taylor":
                _taylor_gradients(module, batches, loss_fn, targets, torch)
            pruner.step()
            _sync_heads(attn, pruner)
        if ckpt is not None:
            ckpt.extra = {"pruning_history": [[n, bool(out), [int(i) for i in idxs]]
                                              for n, out, idxs in pruner.pruning_history()]}
        if phase < resume_phase:
            continue  # its fine-tuning is done; the checkpoint of a later phase holds the weights
        fits.append(tune(phase * per_phase, (phase + 1) * per_phase, f"phase{phase}"))
    after = {n: _shape(m) for n, m in prunable_layers(module, torch)}
    channels = {n: {"out": [before[n][0], after[n][0]], "in": [before[n][1], after[n][1]]}
                for n in before if n in after and before[n] != after[n]}
    facts: dict[str, Any] = {"channels_per_layer": channels, "ignored_layers": sorted(ignored_names),
                             "importance": config.importance, "round_to": config.round_to}
    if attn:
        facts["heads_per_layer"] = [[h, a.num_attention_heads] for h, a in zip(heads_before, attn)]
    return facts, fits


def _shape(layer: Any) -> tuple[int, int]:
    """(outputs, inputs) of a Linear / Conv."""
    w = layer.weight
    return int(w.shape[0]), int(w.shape[1])


def _sync_heads(attn: list[Any], pruner: Any) -> None:
    """After head pruning, each attention block's bookkeeping follows its (smaller) projections."""
    for a in attn:
        head = a.attention_head_size
        a.num_attention_heads = a.query.out_features // head
        a.all_head_size = a.query.out_features
        config = getattr(a, "config", None)
        if config is not None and hasattr(config, "num_attention_heads"):
            config.num_attention_heads = a.num_attention_heads
        for proj in (a.query, a.key, a.value):
            pruner.num_heads[proj] = a.num_attention_heads


def _taylor_gradients(module: Any, batches: list[Any], loss_fn: Any, targets: list[Any], torch: Any) -> None:
    """Taylor importance is |weight × gradient|: accumulate gradients over a few batches first."""
    if not batches:
        raise HastenError("Taylor importance needs data to take gradients on", hint="pass --data, or --importance l1")
    from hasten.compress.training import as_tuple

    module.zero_grad()
    for i in range(min(4, len(batches))):
        loss_fn(as_tuple(module(*batches[i][0])), targets[i]).backward()
