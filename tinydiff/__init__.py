"""tinydiff: diffusion models from first principles, small enough to read.

Modules, in the order the course meets them:

- :mod:`tinydiff.schedules`  noise schedules (0-based timesteps!)
- :mod:`tinydiff.diffusion`  the forward process and its closed forms
- :mod:`tinydiff.data`       2-D toys, the Gaussian-mixture oracle, MNIST
- :mod:`tinydiff.oracle`     exact denoisers for Gaussian mixtures
- :mod:`tinydiff.samplers`   DDPM (and later DDIM) sampling
- :mod:`tinydiff.metrics`    energy distance and friends
- :mod:`tinydiff.plot`       figures used by every notebook
"""

__version__ = "0.1.0"
