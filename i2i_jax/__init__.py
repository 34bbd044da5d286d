"""i2i_jax: VSAIT unpaired image-to-image translation in JAX/Flax.

Importing the package (or any of its submodules) initialises no JAX backend and
allocates no device memory; that happens on the first computation.
"""

__version__ = "0.1.0"
