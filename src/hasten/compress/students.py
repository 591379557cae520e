"""Students for `distill()`: ``layers=N`` keeps N of a transformer's blocks (chosen on training
data, or named: ``layers=0,2,4``), ``width=F`` the most important fraction of the channels, both
starting from the teacher's weights; ``module:function`` is the user's own. torch comes in as an
argument (imported lazily by the caller)."""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from typing import TYPE_CHECKING, Any

from hasten.compress.training import as_tuple
from hasten.core import HastenError

if TYPE_CHECKING:
    from hasten.models import Model

BLOCK_LISTS = ("layer", "layers", "h", "blocks", "block")


def parse_student(text: str) -> tuple[str, Any]:
    """('layers', count or index tuple) | ('width', fraction) | ('module', 'pkg.mod:function')."""
    text = str(text).strip()
    kind, sep, value = text.partition("=")
    if sep and kind == "layers":
        try:
            if "," in value:
                idx = tuple(int(v) for v in value.split(","))
                if len(set(idx)) != len(idx) or min(idx) < 0:
                    raise ValueError
                return "layers", tuple(sorted(idx))
            count = int(value)
            if count < 1:
                raise ValueError
            return "layers", count
        except ValueError:
            raise HastenError(f"--student {text}: want layers=N (N >= 1) or layers=i,j,k (distinct indices)",
                              hint="e.g. layers=3 or layers=0,2,4") from None
    if sep and kind == "width":
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        if not 0 < fraction < 1:
            raise HastenError(f"--student {text}: width is the fraction of channels kept, between 0 and 1",
                              hint="e.g. width=0.5")
        return "width", fraction
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", text):
        return "module", text
    raise HastenError(f"cannot read --student '{text}'",
                      hint="use layers=N, layers=0,2,4, width=0.5 or module:function (a function returning a torch module)")


def block_list(module: Any, torch: Any) -> tuple[str, Any]:
    """The transformer's list of blocks: the longest nn.ModuleList named like one."""
    best = None
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in BLOCK_LISTS and len(sub) >= 2:
            if best is None or len(sub) > len(best[1]):
                best = (name, sub)
    if best is None:
        raise HastenError("layers=N needs a transformer (a ModuleList of blocks named layer/layers/h/blocks); "
                          "this model has none", hint="use --student width=0.5, or module:function for your own student")
    return best


def keep_indices(total: int, want: int | tuple[int, ...]) -> tuple[int, ...]:
    """Evenly spaced blocks, first one included: 3 of 6 -> (0, 2, 4)."""
    if isinstance(want, tuple):
        if max(want) >= total:
            raise HastenError(f"layers={','.join(map(str, want))}: the teacher has only {total} blocks (0..{total - 1})")
        return want
    if want >= total:
        raise HastenError(f"layers={want}: the teacher has {total} blocks; a student needs fewer",
                          hint=f"e.g. layers={max(1, total // 2)}")
    return tuple(sorted({int(i * total / want) for i in range(want)}))


def choose_blocks(teacher: Any, name: str, want: int, probe: list[tuple[Any, ...]], torch: Any) -> tuple[int, ...]:
    """Which ``want`` blocks to keep: drop, one at a time, the block whose removal changes the
    teacher's output least on ``probe`` inputs (training data), by mean cosine similarity."""
    model = copy.deepcopy(teacher).eval()
    blocks = list(model.get_submodule(name))
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    with torch.no_grad():
        reference = [as_tuple(teacher(*feed))[0].flatten(1) for feed in probe]

        def score(keep: list[int]) -> float:
            setattr(parent, attr, torch.nn.ModuleList([blocks[i] for i in keep]))
            got = [as_tuple(model(*feed))[0].flatten(1) for feed in probe]
            return float(torch.cat([torch.nn.functional.cosine_similarity(g, r, dim=1)
                                    for g, r in zip(got, reference)]).mean())

        keep = list(range(len(blocks)))
        while len(keep) > want:
            best = max(keep, key=lambda drop: score([i for i in keep if i != drop]))
            keep.remove(best)
    return tuple(keep)


def derive_student(teacher: Model, spec: str, torch: Any, probe: list[tuple[Any, ...]] | None = None,
                   settled: tuple[int, ...] | None = None) -> tuple[Any, dict[str, Any]]:
    """The student and how it was made. For ``layers=N`` with ``probe`` inputs the blocks are
    chosen by `choose_blocks`; without, evenly spaced; ``settled`` (a ``layers=`` student's teacher
    blocks, decided before) overrides both."""
    kind, value = parse_student(spec)
    if kind == "layers" and settled is not None:
        value = tuple(settled)
    if kind == "layers":
        student = copy.deepcopy(teacher.torch_module())
        name, blocks = block_list(student, torch)
        if isinstance(value, int) and probe:
            keep_indices(len(blocks), value)  # validates the count
            keep, how = choose_blocks(teacher.torch_module(), name, value, probe, torch), "least output change on training data"
        else:
            keep, how = keep_indices(len(blocks), value), "evenly spaced" if isinstance(value, int) else "as given"
        parent_name, _, attr = name.rpartition(".")
        setattr(student.get_submodule(parent_name) if parent_name else student, attr,
                torch.nn.ModuleList([blocks[i] for i in keep]))
        for sub in student.modules():
            cfg = getattr(sub, "config", None)
            if cfg is not None and hasattr(cfg, "num_hidden_layers"):
                cfg.num_hidden_layers = len(keep)
        for new, i in enumerate(keep):  # blocks that know their index (caches, logging) get the new one
            for sub in student.get_submodule(name)[new].modules():
                if isinstance(getattr(sub, "layer_idx", None), int):
                    sub.layer_idx = new
        return student, {"kind": "layers", "kept_blocks": list(keep), "teacher_blocks": len(blocks), "blocks": name,
                         "chosen": how}
    if kind == "width":
        from hasten.compress.prune import PruneConfig, prune

        narrowed = prune(teacher, PruneConfig("channel", amount=round(1 - value, 6), importance="l2"))
        return copy.deepcopy(narrowed.torch_module()), {"kind": "width", "kept_fraction": value,
                                                       "channels": narrowed.info.extra["manifest"]["channels_per_layer"]}
    return _user_student(teacher, value, torch), {"kind": "module", "function": value}


def _user_student(teacher: Model, target: str, torch: Any) -> Any:
    mod_name, fn_name = target.split(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise HastenError(f"cannot load the student function {target}: {exc}",
                          hint="the module must be importable (on PYTHONPATH) and define the function") from exc
    takes_teacher = len(inspect.signature(fn).parameters) >= 1
    student = fn(teacher.torch_module()) if takes_teacher else fn()
    if not isinstance(student, torch.nn.Module):
        raise HastenError(f"{target} returned {type(student).__name__}, not a torch.nn.Module")
    with torch.no_grad():
        want = [tuple(t.shape) for t in as_tuple(teacher.torch_module()(*teacher.example_input()))]
        try:
            got = [tuple(t.shape) for t in as_tuple(student.eval()(*teacher.example_input()))]
        except Exception as exc:  # noqa: BLE001 - the user's module; say what failed
            raise HastenError(f"the student from {target} fails on the teacher's example input: {exc}") from exc
    if got != want:
        raise HastenError(f"the student from {target} returns shapes {got}; the teacher returns {want}",
                          hint="a student must take the same inputs and give outputs of the same shape")
    return student
