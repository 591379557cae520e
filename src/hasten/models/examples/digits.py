"""`digits-cnn`: a small CNN trained deterministically on scikit-learn's 8x8 digits.

Trained once (about 10 s on one core) and cached as plain arrays — never pickles.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from hasten.core import ModelInfo, MissingDependencyError
from hasten.models.cache import build_once, cache_root
from hasten.models.dataset import Dataset
from hasten.models.model import Model
from hasten.models.onnx_file import read_specs

log = logging.getLogger(__name__)

VERSION = "v1"  # bump when the architecture or training recipe changes
SEED = 0
EPOCHS = 30
TEST_FRACTION = 0.2


def folder() -> Path:
    return cache_root() / "examples" / f"digits-cnn-{VERSION}"


def load() -> Model:
    target = build_once(folder(), "facts.json", _train_and_export)
    path = target / "model.onnx"
    inputs, outputs, facts = read_specs(path)
    facts.update(json.loads((target / "facts.json").read_text()))
    info = ModelInfo("digits-cnn", "example:digits-cnn", str(path), inputs, outputs, facts)
    return Model(info=info, torch_factory=lambda: _module_from_weights(target / "weights.npz"))


def dataset(model: Model | None = None) -> Dataset:
    """The fixed test split (360 images), as ``input`` float32 [N, 1, 8, 8] plus labels."""
    target = build_once(folder(), "facts.json", _train_and_export)
    data = Dataset.from_npz(target / "test.npz")
    data.name = "digits-test"
    return data


def train_dataset() -> Dataset:
    """The training split (1,437 images) the example was trained on, with labels: for fine-tuning
    and distillation, so that the test split stays held out for evaluation."""
    x_tr, y_tr, _, _ = split()
    return Dataset({"input": x_tr}, y_tr, name="digits-train")


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic stratified train/test split of scikit-learn's digits, scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise MissingDependencyError("scikit-learn", "examples", "the 'digits-cnn' example") from exc
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SEED, stratify=y)
    return x_tr, y_tr, x_te, y_te


def build_module(torch: Any) -> Any:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, 10),
    )


def _module_from_weights(weights: Path) -> tuple[Any, tuple[Any, ...]]:
    from hasten.models.torch_export import import_torch

    torch = import_torch()
    module = build_module(torch)
    with np.load(weights, allow_pickle=False) as arrays:
        module.load_state_dict({k: torch.from_numpy(arrays[k].copy()) for k in arrays.files})
    return module.eval(), (torch.zeros(1, 1, 8, 8),)


def _train_and_export(tmp: Path) -> None:
    from hasten.models.torch_export import ExportConfig, export_module, import_torch

    torch = import_torch()
    x_tr, y_tr, x_te, y_te = split()
    module = _train(torch, x_tr, y_tr)
    np.savez(tmp / "weights.npz", **{k: v.detach().numpy() for k, v in module.state_dict().items()})
    np.savez(tmp / "test.npz", input=x_te, labels=y_te)
    with torch.inference_mode():
        accuracy = float((module(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())
    facts = export_module(module, (torch.from_numpy(x_te[:2]),), tmp / "model.onnx",
                          ExportConfig(input_names=("input",), output_names=("logits",)))
    params = sum(p.numel() for p in module.parameters())
    facts.update(test_accuracy=accuracy, parameters=params, epochs=EPOCHS, seed=SEED, test_size=len(y_te))
    log.info("digits-cnn trained: test accuracy %.2f%% (%d parameters)", 100 * accuracy, params)
    (tmp / "facts.json").write_text(json.dumps(facts, indent=1))


def _train(torch: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """Adam, fixed seed, one thread, deterministic kernels: the same weights on every run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    module = build_module(torch)
    opt = torch.optim.Adam(module.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    try:
        with torch.random.fork_rng(devices=[]):
            module.train()
            for _ in _progress(range(EPOCHS), "training digits-cnn (first use only)"):
                for idx in torch.randperm(len(xs), generator=gen).split(32):
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(module(xs[idx]), ys[idx]).backward()
                    opt.step()
                sched.step()
    finally:
        torch.set_num_threads(threads)
    return module.eval()


def _progress(items: range, label: str):  # noqa: ANN202
    from rich.progress import track

    from hasten.core.console import stderr_console

    return track(items, description=label, console=stderr_console(), transient=True)
