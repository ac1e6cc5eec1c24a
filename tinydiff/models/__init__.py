"""Networks: an MLP for 2-D toys, a small UNet for digits, a classifier for metrics."""

from .embeddings import TimeEmbedding, sinusoidal_embedding
from .mlp import MLP
from .unet import UNet

__all__ = ["MLP", "TimeEmbedding", "UNet", "sinusoidal_embedding"]
