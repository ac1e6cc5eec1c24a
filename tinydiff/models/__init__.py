"""Networks: an MLP for 2-D toys, a small UNet for digits, a classifier for metrics, an autoencoder for latents."""

from .embeddings import TimeEmbedding, sinusoidal_embedding
from .mlp import MLP
from .unet import UNet
from .classifier import Classifier
from .autoencoder import Autoencoder

__all__ = ["Autoencoder", "Classifier", "MLP", "TimeEmbedding", "UNet", "sinusoidal_embedding"]
