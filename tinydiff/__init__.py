"""tinydiff: diffusion models from first principles, small enough to read.

Modules, in the order the course meets them:

- :mod:`tinydiff.schedules`  noise schedules (0-based timesteps!)
- :mod:`tinydiff.diffusion`  the forward process and its closed forms
- :mod:`tinydiff.data`       2-D toys, the Gaussian-mixture oracle, MNIST
- :mod:`tinydiff.oracle`     exact denoisers for Gaussian mixtures
- :mod:`tinydiff.langevin`   Langevin and annealed Langevin dynamics
- :mod:`tinydiff.losses`     L_simple = denoising score matching
- :mod:`tinydiff.models`     MLP (2-D), UNet (digits), classifier (metrics), autoencoder (latents), TinyCLIP, TextUNet,
                             SuperResUNet
- :mod:`tinydiff.train`      the training loop, as a generator
- :mod:`tinydiff.distributed` several processes with torchrun + DistributedDataParallel
- :mod:`tinydiff.checkpoint` safetensors checkpoints with a JSON config
- :mod:`tinydiff.pretrained` a shipped model: network, schedule, prediction [, autoencoder, tokenizer]
- :mod:`tinydiff.samplers`   DDPM and DDIM sampling, DDIM inversion, slerp
- :mod:`tinydiff.solvers`    fast samplers: Heun, DPM-Solver++(2M), PLMS, reverse SDE, predictor-corrector
- :mod:`tinydiff.likelihood` exact log-likelihoods from the probability-flow ODE
- :mod:`tinydiff.guidance`   classifier-free, classifier and CLIP guidance
- :mod:`tinydiff.latent`     latent diffusion: images <-> unit-variance latents of an autoencoder
- :mod:`tinydiff.flow`       flow matching and reflow
- :mod:`tinydiff.distill`    progressive distillation
- :mod:`tinydiff.registry`   every sampler by name (``ddim:50``, ``dpm:20``), for scripts and benchmarks
- :mod:`tinydiff.adapt`      LoRA, merging, a new label, adapter files
- :mod:`tinydiff.tokenizer`  a word-level tokenizer for the digit captions
- :mod:`tinydiff.text_to_image` zero-shot CLIP and sampling digits from prompts
- :mod:`tinydiff.superres`   super-resolution: degradations, SR3 and regression objectives, upscaling, cascades
- :mod:`tinydiff.evaluation` seeded, cached sampling of digits and their FD / accuracy / diversity
- :mod:`tinydiff.metrics`    energy distance, Frechet distance on classifier features
- :mod:`tinydiff.plot`       figures used by every notebook
- :mod:`tinydiff.animation`  trajectory animations
- :mod:`tinydiff.demos`      the widgets' pictures: sampled here, drawn by plot
- :mod:`tinydiff.widgets`    ipywidgets demos with static fallbacks
- :mod:`tinydiff.tensors`    device/dtype helpers and timestep checks used everywhere
"""

__version__ = "0.1.0"
