"""Networks: an MLP for 2-D toys, a small UNet for digits, a classifier for metrics, an autoencoder for latents,
for text-to-image a tiny CLIP and a UNet that reads prompts through cross-attention, and for super-resolution
a UNet that reads a conditioning image as extra channels, and for video the UNet made spatio-temporal."""

from .embeddings import TimeEmbedding, sinusoidal_embedding
from .mlp import MLP
from .unet import UNet
from .classifier import Classifier
from .autoencoder import Autoencoder
from .clip import TextEncoder, TinyCLIP
from .text_unet import TextUNet
from .superres_unet import SuperResUNet
from .video_unet import TemporalConv, VideoUNet, time_fold, time_unfold

__all__ = ["Autoencoder", "Classifier", "MLP", "SuperResUNet", "TextEncoder", "TextUNet", "TemporalConv", "TimeEmbedding", "TinyCLIP", "UNet", "VideoUNet",
           "sinusoidal_embedding", "time_fold", "time_unfold"]
