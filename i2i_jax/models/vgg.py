"""Frozen VGG19 feature extractor, truncated at the reference's last return node.

The reference reads torchvision's `vgg19().features` at indices 2, 7, 12, 21 and
30 (conv1_2, conv2_2, conv3_2, conv4_2, conv5_2) through forward hooks while
torchvision's ReLUs run *in place*: the tensors it receives for the first four
nodes were overwritten by the following ReLU (post-ReLU values), whereas
conv5_2 is the last layer run, so it stays pre-ReLU. We return exactly those
values and compute nothing past conv5_2. The image goes in as it is, in
[-1, 1], without ImageNet mean/std normalisation (the paper config sets none).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# (torchvision index, output channels) of every conv up to conv5_2, in order.
CONV_LAYERS: tuple[tuple[int, int], ...] = (
    (0, 64), (2, 64), (5, 128), (7, 128), (10, 256), (12, 256), (14, 256),
    (16, 256), (19, 512), (21, 512), (23, 512), (25, 512), (28, 512), (30, 512))
# Indices after which torchvision's vgg19.features has MaxPool2d(2, 2).
POOL_AFTER: frozenset[int] = frozenset({2, 7, 16, 25})
RETURN_NODES: tuple[int, ...] = (2, 7, 12, 21, 30)
# torchvision's VGG init (kaiming_normal_, fan_out, relu), used for seeded weights.
_torchvision_vgg_init = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class VGG19Features(nn.Module):
  """images [B, H, W, 3] in [-1, 1] -> five feature maps, NHWC.

  Shapes for H = W = 256: [B,256,256,64], [B,128,128,128], [B,64,64,256],
  [B,32,32,512], [B,16,16,512]. Parameters are named `features_<index>` after
  torchvision's indices.

  `random_bias_std` only shapes seeded (random) weights. torchvision's init
  zeroes the biases, which makes every feature map positively homogeneous in
  the image: VGG(a * x) = a * VGG(x) for a > 0, so the cosine hypervectors of
  the LSH cannot see contrast about mid-grey. Biases drawn from N(0, std^2)
  break that symmetry (ImageNet weights have non-zero biases anyway).
  """
  dtype: Any = jnp.float32
  return_nodes: Sequence[int] = RETURN_NODES
  random_bias_std: float = 0.0

  @nn.compact
  def __call__(self, images: jax.Array) -> list[jax.Array]:
    last = max(self.return_nodes)
    bias_init = (jax.nn.initializers.normal(self.random_bias_std) if self.random_bias_std
                 else jax.nn.initializers.zeros)
    x = images.astype(self.dtype)
    outputs = []
    for index, features in CONV_LAYERS:
      if index > last:
        break
      x = nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                  kernel_init=_torchvision_vgg_init, bias_init=bias_init,
                  name=f"features_{index}")(x)
      if index == last:
        outputs.append(x)  # nothing runs after the last node: pre-ReLU
        break
      x = nn.relu(x)  # in place in torchvision: the node's value is post-ReLU
      if index in self.return_nodes:
        outputs.append(x)
      if index in POOL_AFTER:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return outputs
