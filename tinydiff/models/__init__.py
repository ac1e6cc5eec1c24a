"""Networks: an MLP for 2-D toys, a small UNet for digits, a classifier for metrics."""

from .embeddings import TimeEmbedding, sinusoidal_embedding

__all__ = ["TimeEmbedding", "sinusoidal_embedding"]
