"""Networks: an MLP for 2-D toys, a small UNet for digits, a classifier for metrics."""

from .embeddings import TimeEmbedding, sinusoidal_embedding
from .mlp import MLP
from .unet import UNet
from .classifier import Classifier

__all__ = ["Classifier", "MLP", "TimeEmbedding", "UNet", "sinusoidal_embedding"]
