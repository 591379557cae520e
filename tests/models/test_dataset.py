from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hasten
from hasten.core import HastenError, TensorSpec
from hasten.models import Dataset, synthetic_dataset


def token_data() -> Dataset:
    ids = np.array([[5, 6, 7, 0, 0, 0], [8, 9, 0, 0, 0, 0], [1, 2, 3, 4, 0, 0]], np.int64)
    return Dataset({"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)}, np.array([0, 1, 2]))


def test_npz_round_trip(tmp_path: Path) -> None:
    data = token_data()
    data.save_npz(tmp_path / "d.npz")
    back = Dataset.from_npz(tmp_path / "d.npz")
    assert len(back) == 3 and back.name == "d"
    np.testing.assert_array_equal(back.inputs["input_ids"], data.inputs["input_ids"])
    np.testing.assert_array_equal(back.labels, [0, 1, 2])


def test_batches_trim_to_the_longest_example_and_wrap_around() -> None:
    b = token_data().batch(1, 3)  # examples 1, 2, 0
    assert b["input_ids"].shape == (3, 4)
    np.testing.assert_array_equal(b["input_ids"][0], [8, 9, 0, 0])
    np.testing.assert_array_equal(b["attention_mask"][2], [1, 1, 1, 0])


def test_fixed_seq_len_pads_and_truncates() -> None:
    data = token_data()
    assert data.batch(0, 2, seq_len=10)["input_ids"].shape == (2, 10)
    assert data.batch(0, 2, seq_len=10)["attention_mask"][:, 6:].sum() == 0
    assert data.batch(0, 2, seq_len=2)["input_ids"].tolist() == [[5, 6], [8, 9]]


def test_getitem_has_batch_dim_one() -> None:
    assert token_data()[2]["input_ids"].shape == (1, 4)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(HastenError, match="disagree on the number of examples"):
        Dataset({"x": np.zeros((3, 2))}, labels=np.zeros(4))


def test_missing_and_corrupt_and_pickled_files(tmp_path: Path) -> None:
    with pytest.raises(HastenError, match="not found"):
        Dataset.from_npz(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(HastenError, match="not a readable .npz"):
        Dataset.from_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(HastenError, match="object arrays are refused"):
        Dataset.from_npz(tmp_path / "obj.npz")


def test_dataset_checked_against_model(linear_onnx, tmp_path: Path) -> None:
    model = hasten.load_model(linear_onnx[0])
    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 4), np.float32))
    assert len(hasten.load_dataset(tmp_path / "ok.npz", model)) == 4
    np.savez(tmp_path / "wrong.npz", inp=np.zeros((4, 4), np.float32))
    with pytest.raises(HastenError, match="does not fit the model: wrong input names: missing x; unknown inp"):
        hasten.load_dataset(tmp_path / "wrong.npz", model)
    np.savez(tmp_path / "dtype.npz", x=np.zeros((4, 4), np.int32))
    with pytest.raises(HastenError, match="expected dtype float32, got int32"):
        hasten.load_dataset(tmp_path / "dtype.npz", model)


def test_synthetic_data_fits_specs() -> None:
    specs = (TensorSpec("input_ids", "int64", (-1, -1)), TensorSpec("attention_mask", "int64", (-1, -1)),
             TensorSpec("pixels", "float32", (-1, 3, 4)))
    data = synthetic_dataset(specs, size=5, dynamic_dim=7)
    b = data.batch(0, 5)
    assert b["input_ids"].shape == (5, 7) and b["pixels"].shape == (5, 3, 4)
    assert b["attention_mask"].min() == 1
    data.check_against(specs)
