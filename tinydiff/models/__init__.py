"""Networks: an MLP for 2-D toys, a small UNet for digits, a classifier for metrics, an autoencoder for latents,
and for text-to-image a tiny CLIP and a UNet that reads prompts through cross-attention."""

from .embeddings import TimeEmbedding, sinusoidal_embedding
from .mlp import MLP
from .unet import UNet
from .classifier import Classifier
from .autoencoder import Autoencoder
from .clip import TextEncoder, TinyCLIP
from .text_unet import TextUNet

__all__ = ["Autoencoder", "Classifier", "MLP", "TextEncoder", "TextUNet", "TimeEmbedding", "TinyCLIP", "UNet",
           "sinusoidal_embedding"]
