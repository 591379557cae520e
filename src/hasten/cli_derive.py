"""`hasten prune` and `hasten distill`: train a smaller model, then gate it like `quantize`.
Registered on the app in cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from hasten.cli_common import DEFAULT_TEXT_SEQ_LEN, _batch_sizes, _load, _requirements
from hasten.core import HastenError
from hasten.core.console import stderr_console


# The gate's options, the same for prune and distill (declared once, used by both commands)
METRIC = typer.Option(None, "--metric", help="accuracy | cosine | nn_agreement | … \\[default: accuracy with labels, else cosine].")
MIN_EXAMPLE = typer.Option(None, "--min-example", help="Also require every example's score ≥ this.")
REQUIRE = typer.Option([], "--require", help="More bars, repeatable: METRIC>=VALUE.")
BACKEND = typer.Option("ort-cpu", "--backend", "-b", help="Where to measure speed.")
BATCH_SIZES = typer.Option("1,8", "--batch-sizes", help="Batch sizes for the speed check.")
SEQ_LEN = typer.Option(None, "--seq-len", help="Token length for the speed check (default 128 for text models).")
THREADS = typer.Option(None, "--threads", help="Intra-op threads for both models.")
KEEP_IF_SLOWER = typer.Option(False, "--keep-if-slower", help="Write the result even if it is not faster.")
TIME_BUDGET = typer.Option(2.0, "--time-budget-s", help="Timed seconds per batch size and model in the speed check.")
JSON_OUT = typer.Option(None, "--json", help="Write the whole result as JSON.")


def prune(
    model: str = typer.Argument(..., help="A model that came from torch: a built-in example or a sentence-transformers folder."),
    method: str = typer.Option("channel", "--method", "-m", help="unstructured | channel | 2:4"),
    amount: float = typer.Option(0.5, "--amount", help="Fraction removed: of weights (unstructured), of channels/heads (channel); 2:4 is always 0.5."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the pruned .onnx (a .manifest.json goes beside it)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training data for fine-tuning: .npz, .txt (one text per line), or for text models built-in text: everyday | pydoc | markov-wiki, or several joined with + \\[default: the example's training split]."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Held-out data for the quality gate \\[default: the example's test data, else the last 20% of --data]."),
    finetune_steps: int = typer.Option(0, "--finetune-steps", help="Fine-tuning steps after pruning (stops early once the budget holds)."),
    importance: str = typer.Option("l1", "--importance", help="channel: l1 | l2 | taylor."),
    scope: str = typer.Option("global", "--scope", help="unstructured: global | layer."),
    round_to: int = typer.Option(8, "--round-to", help="channel: keep channel counts a multiple of this."),
    iterative_steps: int = typer.Option(1, "--iterative-steps", help="channel: prune in this many steps, fine-tuning between them."),
    lr: float = typer.Option(1e-3, "--lr", help="Fine-tuning learning rate (Adam)."),
    ignore: list[str] = typer.Option([], "--ignore", help="Module name to leave alone, repeatable (the output head always is)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Folder for fine-tuning checkpoints; a stopped run resumes from it."),
    no_early_stop: bool = typer.Option(False, "--no-early-stop", help="Fine-tune all steps even after the budget holds."),
    budget: str = typer.Option("1%", "--budget", help="Allowed quality drop: '1%' (relative), '1pt' / '0.01' (absolute)."),
    metric: Optional[str] = METRIC,
    min_example: Optional[float] = MIN_EXAMPLE,
    require: list[str] = REQUIRE,
    backend: str = BACKEND,
    batch_sizes: str = BATCH_SIZES,
    seq_len: Optional[int] = SEQ_LEN,
    threads: Optional[int] = THREADS,
    keep_if_slower: bool = KEEP_IF_SLOWER,
    time_budget_s: float = TIME_BUDGET,
    json_out: Optional[Path] = JSON_OUT,
) -> None:
    """Prune (unstructured, channel, 2:4), fine-tune, then gate: quality with its CI and measured speed."""
    from hasten.compress.prune import PruneConfig
    from hasten.plan.derive import prune_under_budget

    config = PruneConfig(method=method, amount=amount, scope=scope, importance=importance, round_to=round_to,
                         iterative_steps=iterative_steps, finetune_steps=finetune_steps, lr=lr, ignore=tuple(ignore))
    m = _load(model)
    _need_torch(m, "prune")
    train, evaluation, seq_len = _train_eval(m, data, eval_data, seq_len, needed=finetune_steps > 0 or importance == "taylor")
    gate = _gate(budget, metric, min_example, require, backend, threads, batch_sizes, m, seq_len, time_budget_s,
                 keep_if_slower)
    with stderr_console().status(f"pruning ({method} {amount:g}), fine-tuning, evaluating, timing…"):
        result = prune_under_budget(m, config, train, evaluation, gate, out, checkpoint=checkpoint,
                                    early_stop=not no_early_stop)
    _finish(result, out, json_out, keep_if_slower)


def distill(
    teacher: str = typer.Argument(..., help="The teacher: a built-in example or a sentence-transformers folder (a model that came from torch)."),
    student: str = typer.Option("layers=3", "--student", help="layers=N | layers=0,2,4 | width=0.5 | module:function."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the student .onnx (a .manifest.json goes beside it)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training data: .npz, .txt (one text per line), or for text models built-in text: everyday | pydoc | markov-wiki, or several joined with + \\[default: the example's training data]."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Held-out data for the quality gate \\[default: the example's evaluation data, else the last 20% of --data]."),
    steps: int = typer.Option(1000, "--steps", help="Training steps."),
    temperature: float = typer.Option(4.0, "--temperature", "-T", help="Classifiers: softmax temperature of the soft targets."),
    alpha: float = typer.Option(0.7, "--alpha", help="Classifiers: weight of the soft-target loss (1 - alpha on the labels)."),
    loss: str = typer.Option("auto", "--loss", help="auto | kl | mse | cosine | mse+cosine (auto: kl for classifiers, mse+cosine for embeddings)."),
    lr: float = typer.Option(5e-4, "--lr", help="Peak learning rate (AdamW, cosine decay); minilm, 3 blocks, 400 steps: 5e-4 beat 2e-4 and 1e-3."),
    batch_size: int = typer.Option(32, "--batch-size", help="Training batch size."),
    max_length: int = typer.Option(64, "--max-length", help="Text: tokens per training example, at most."),
    hidden_weight: float = typer.Option(10.0, "--hidden-weight", help="layers=N students: weight of the loss that matches each student block's output to the teacher block it stands in for (0: off)."),
    device: str = typer.Option("auto", "--device", help="Where the student trains: auto (a CUDA GPU when torch sees one, else the CPU) | cpu | cuda | cuda:N. Export and checks run on the CPU."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Stop training after this many seconds; the student so far is exported and checked (its learning-rate schedule cut short)."),
    freeze_embeddings: Optional[bool] = typer.Option(None, "--freeze-embeddings/--train-embeddings", help="Keep the student's embedding tables as the teacher's, so tokens absent from the training text stay consistent \\[default: frozen for embedding students, trained for classifiers]."),
    augment_spans: Optional[int] = typer.Option(None, "--augment-spans", help="Add this many random word spans of each training text (short inputs), labelled by the teacher \\[default: 2 for unlabeled text, else 0]."),
    augment_swaps: int = typer.Option(0, "--augment-swaps", help="Add this many copies of each training text with about a quarter of the words replaced by words that follow the previous word elsewhere in the text, labelled by the teacher."),
    attention_weight: float = typer.Option(0.0, "--attention-weight", help="layers=N students of BERT-like teachers: weight of MiniLM's attention transfer (the last block's attention maps and value relations, KL divergence; 0: off)."),
    dropout: Optional[bool] = typer.Option(None, "--dropout/--no-dropout", help="Keep the student's dropout layers active while it trains \\[default: off for embedding students, which imitate a deterministic teacher; on for classifiers]."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Folder for checkpoints; a stopped run resumes from it."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start the student from an earlier run's --checkpoint folder (same teacher and --student) instead of the teacher's weights, with a fresh learning-rate schedule: train a finished student further."),
    seed: int = typer.Option(0, "--seed", help="Seed of the shuffle, the augmentation and the initialisation (another seed: other spans and swapped copies)."),
    early_stop: bool = typer.Option(False, "--early-stop", help="Stop as soon as the budget holds on the held-out data."),
    budget: str = typer.Option("5%", "--budget", help="Allowed quality drop vs the teacher: '5%' (relative), '1pt' / '0.05' (absolute)."),
    metric: Optional[str] = METRIC,
    min_example: Optional[float] = MIN_EXAMPLE,
    require: list[str] = REQUIRE,
    backend: str = BACKEND,
    batch_sizes: str = BATCH_SIZES,
    seq_len: Optional[int] = SEQ_LEN,
    threads: Optional[int] = THREADS,
    keep_if_slower: bool = KEEP_IF_SLOWER,
    time_budget_s: float = TIME_BUDGET,
    json_out: Optional[Path] = JSON_OUT,
) -> None:
    """Distil a teacher into a smaller student, then gate it: quality vs the teacher and measured speed."""
    from hasten.compress.distill import DistillConfig
    from hasten.plan.derive import distill_under_budget

    config = DistillConfig(student=student, steps=steps, temperature=temperature, alpha=alpha, loss=loss, lr=lr,
                           batch_size=batch_size, max_length=max_length, dropout=dropout, hidden_weight=hidden_weight,
                           device=device, time_limit_s=time_limit, freeze_embeddings=freeze_embeddings,
                           augment_spans=augment_spans, augment_swaps=augment_swaps, attention_weight=attention_weight,
                           init=None if init is None else str(init), seed=seed)
    m = _load(teacher)
    _need_torch(m, "distill")
    train, evaluation, seq_len = _train_eval(m, data, eval_data, seq_len, needed=True)
    gate = _gate(budget, metric, min_example, require, backend, threads, batch_sizes, m, seq_len, time_budget_s,
                 keep_if_slower)
    with stderr_console().status(f"distilling into {student}, evaluating, timing…"):
        result = distill_under_budget(m, config, train, evaluation, gate, out, checkpoint=checkpoint,
                                      early_stop=early_stop)
    _finish(result, out, json_out, keep_if_slower)


def _need_torch(m: Any, verb: str) -> None:
    if not m.has_torch:
        raise HastenError(f"{verb} trains the model, so it needs the PyTorch module; '{m.name}' was loaded from "
                          f"{m.info.source}",
                          hint="pass a built-in example or a sentence-transformers folder; for an ONNX file use "
                               "`hasten quantize`")


def _train_eval(m: Any, data: Path | None, eval_data: Path | None, seq_len: int | None,
                needed: bool) -> tuple[Any, Any, int | None]:
    """(training data or None, held-out evaluation data, speed-check token length)."""
    from hasten.models import default_dataset, load_dataset, training_dataset

    if seq_len is None and m.text_encoder is not None:
        seq_len = DEFAULT_TEXT_SEQ_LEN
    if data is not None:
        train = load_dataset(str(data), m)
    else:  # the example's training data only when training happens (minilm's takes ~5 s to read)
        train = training_dataset(m) if needed else None
    if train is None and needed:
        raise HastenError(f"'{m.name}' is not a built-in example, so there is no default training data",
                          hint="pass --data file.npz (or .txt / pydoc / pydoc+markov-wiki for text models)")
    if eval_data is not None:
        return train, load_dataset(str(eval_data), m), seq_len
    evaluation = default_dataset(m)
    if evaluation is not None:
        return train, evaluation, seq_len
    if train is None:
        raise HastenError("no data to check quality on", hint="pass --eval-data file.npz (or --data to split)")
    if len(train) < 5:
        raise HastenError(f"{len(train)} examples are too few to hold some out for evaluation",
                          hint="pass --eval-data, or more data")
    cut = len(train) - max(1, len(train) // 5)
    stderr_console().print(f"note: holding out the last {len(train) - cut} of {len(train)} examples of --data for "
                           "the quality gate (pass --eval-data to choose)", highlight=False)
    return train.select(slice(0, cut)), train.select(slice(cut, None), train.name + "-heldout"), seq_len


def _gate(budget: str, metric: str | None, min_example: float | None, require: list[str], backend: str,
          threads: int | None, batch_sizes: str, m: Any, seq_len: int | None, time_budget_s: float,
          keep_if_slower: bool) -> Any:
    from hasten.plan import GateConfig

    return GateConfig(budget=budget, metric=metric, min_example=min_example, require=_requirements(require),
                      backend=backend, threads=threads, batch_sizes=_batch_sizes(batch_sizes, m), seq_len=seq_len,
                      time_budget_s=time_budget_s, keep_if_slower=keep_if_slower)


def _finish(result: Any, out: Path, json_out: Path | None, keep_if_slower: bool) -> None:
    from hasten.plan.report import print_derived

    print_derived(result)
    if json_out is not None:
        import json

        json_out.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    if not result.accepted:
        result.discard_candidate()  # 'nothing was written': not even in /tmp
        stderr_console().print(f"[bold red]refused:[/] {result.refused}", highlight=False, soft_wrap=True)
        speed_only = result.refused.startswith("speed")
        stderr_console().print("  nothing was written" + (
            "; --keep-if-slower keeps a result that is only refused for speed" if speed_only else
            "; fine-tune longer (--finetune-steps / --steps), prune less, or allow a larger --budget"),
            highlight=False, soft_wrap=True)
        raise typer.Exit(3)
    stderr_console().print(f"wrote {out} and {out.with_suffix('.manifest.json')}", highlight=False)
