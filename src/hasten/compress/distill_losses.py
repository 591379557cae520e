"""What a `distill()` student learns from: the teacher's soft logits (`kd_loss`), its embeddings
(`embedding_loss`) and, through forward hooks on both models, its block outputs (`HiddenMatch`)
and its last block's attention (`AttentionMatch`). torch is imported lazily."""

from __future__ import annotations

from typing import Any

from hasten.core import HastenError


def kd_loss(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """KL(teacher ‖ student) on temperature-softened distributions, × T² so its gradients keep
    their size as T changes (Hinton et al., 2015); averaged over the batch."""
    import torch.nn.functional as F

    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)


def embedding_loss(student: Any, teacher: Any, kind: str) -> Any:
    import torch.nn.functional as F

    parts = []
    if "mse" in kind:
        parts.append(F.mse_loss(student, teacher) * student.shape[-1])  # per-dimension MSE × width: O(1)
    if "cosine" in kind:
        parts.append((1 - F.cosine_similarity(student, teacher, dim=-1)).mean())
    return sum(parts)


class _Hooks:
    """Forward hooks that keep module outputs under a key while teacher and student run
    (``seen[key]``; a tuple output keeps its first element); `close` removes them."""

    def __init__(self) -> None:
        self.seen: dict[Any, Any] = {}
        self.handles: list[Any] = []

    def keep(self, module: Any, key: Any) -> None:
        def hook(module: Any, args: Any, out: Any) -> None:
            self.seen[key] = out[0] if isinstance(out, (tuple, list)) else out
        self.handles.append(module.register_forward_hook(hook))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


class HiddenMatch(_Hooks):
    """Forward hooks that keep each block's output, and the MSE (over real tokens) between each
    student block and the teacher block it replaces: student block j, started from teacher block
    keep[j], learns to output what teacher block keep[j+1] - 1 outputs (the last: the last one)."""

    def __init__(self, teacher: Any, student: Any, how: dict[str, Any], torch: Any) -> None:
        keep, total = how["kept_blocks"], how["teacher_blocks"]
        self.pairs = [(j, keep[j + 1] - 1 if j + 1 < len(keep) else total - 1) for j in range(len(keep))]
        super().__init__()
        for who, module in (("t", teacher), ("s", student)):
            for i, block in enumerate(module.get_submodule(how["blocks"])):
                self.keep(block, (who, i))

    def loss(self, mask: Any) -> Any:
        total = 0
        for j, t in self.pairs:
            s, ref = self.seen["s", j], self.seen["t", t].detach()
            err = (s - ref).pow(2).mean(-1)
            if mask is not None and err.shape == mask.shape:
                total = total + (err * mask).sum() / mask.sum().clamp(min=1)
            else:
                total = total + err.mean()
        return total


class AttentionMatch(_Hooks):
    """MiniLM's self-attention transfer (Wang et al., 2020) for the last block: KL divergence from
    the teacher's attention distributions (softmax(QKᵀ/√d) per head) and value relations
    (softmax(VVᵀ/√d)) in its last block to the student's in its last block, over real tokens."""

    def __init__(self, teacher: Any, student: Any, how: dict[str, Any], torch: Any) -> None:
        from hasten.compress.prune import attention_modules

        super().__init__()
        self.torch, self.heads = torch, {}
        for who, module in (("t", teacher), ("s", student)):
            found = attention_modules(module.get_submodule(how["blocks"])[-1], torch)
            if not found:
                raise HastenError("attention_weight needs self-attention blocks with query/key/value projections "
                                  "(the BERT family's layout); this model's last block has none",
                                  hint="leave --attention-weight at 0")
            attn = found[0]
            for name in ("query", "key", "value"):
                self.keep(getattr(attn, name), who + name)
            self.heads[who] = attn.num_attention_heads

    def _relation(self, who: str, a: str, b: str, bias: Any) -> Any:
        x, y, heads = self.seen[who + a], self.seen[who + b], self.heads[who]
        n, length, width = x.shape
        x = x.view(n, length, heads, width // heads).transpose(1, 2)
        y = y.view(n, length, heads, width // heads).transpose(1, 2)
        scores = x @ y.transpose(-1, -2) / (width // heads) ** 0.5
        return self.torch.log_softmax(scores + bias, dim=-1)

    def loss(self, mask: Any) -> Any:
        query = self.seen["squery"]
        n, length = query.shape[:2]
        real = mask if mask is not None and tuple(mask.shape) == (n, length) else query.new_ones(n, length)
        real = real.to(query.dtype)
        bias = ((1 - real) * -1e4)[:, None, None, :]  # padded keys get no attention
        total = 0
        for a, b in (("query", "key"), ("value", "value")):
            t = self._relation("t", a, b, bias).detach()
            s = self._relation("s", a, b, bias)
            kl = (t.exp() * (t - s)).sum(-1).mean(1)  # per query token, averaged over heads
            total = total + (kl * real).sum() / real.sum().clamp(min=1)
        return total
