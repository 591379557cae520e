"""Loading models and data; the built-in examples."""

from hasten.models.dataset import Dataset, synthetic_dataset
from hasten.models.examples import example_names
from hasten.models.loader import default_dataset, load_dataset, load_model, training_dataset
from hasten.models.model import Model

__all__ = ["Dataset", "Model", "default_dataset", "example_names", "load_dataset", "load_model", "synthetic_dataset",
           "training_dataset"]
