"""LAEO-Net++'s training augmentation on device (facts laeo-scam A.4), one random transform per example.

The transform is shared by all T frames and both head tracks: horizontal flip (p = ½), a shift of {−s, 0, +s} pixels
in x and y, a zoom in [1 − z, 1 + z] about the centre, brightness × [b₀, b₁] and one intensity offset in [−c, c]
pixel levels (of 255) added to every channel (Keras' channel_shift_range, which acts on the 0–255 values of the
loaded images: 0.35 is a fraction of one level, not 35 % of the range — read as 35 % it wipes the eyes out), clipped
to [0, 1]. A flip mirrors the whole scene: both crops
are mirrored and exchanged (the mirrored right head is now on the left, so it becomes the first input) and the head
map is mirrored with channels 0 ↔ 1 exchanged, so channel 0 still marks the first input's head — what flipping the
authors' stored [left | right] pair image and map does. (Mirroring the crops without exchanging them, as facts A.4
reads, would pair each crop with the other head's map channel: the position–orientation relation LAEO depends on
would flip sign in half the examples, and in our runs nothing was learnt, val AP 0.45–0.50 after 300 steps.) The
map is not shifted, zoomed or recoloured (A.4's jitter is the crops'; the map only follows the flip).
"""

import jax
import jax.numpy as jnp


def _geometric(tracks, shift, zoom):
  """(B, N, T, S, S, C) crops → each example's crops zoomed about the centre by `zoom` (B,) then shifted by `shift`
  (B, 2) pixels (x, y), bilinear, zero outside."""
  size = tracks.shape[-2]
  scale = jnp.stack([zoom, zoom], -1)  # (B, 2): rows, columns
  translation = (1.0 - scale) * size / 2 + shift[:, ::-1]

  def one(crops, scale, translation):
    return jax.image.scale_and_translate(
      crops, crops.shape, (2, 3), scale, translation, method="linear", antialias=False
    )  # fmt: skip

  return jax.vmap(one)(tracks, scale, translation)


def augment_pair(rng, head_left, head_right, head_map, shift: int, zoom: float, brightness, channel_shift: float):
  """Augmented (head_left, head_right, head_map), each (B, T, 64, 64, 3) float in [0, 1] (module docstring)."""
  batch = head_left.shape[0]
  flip_rng, shift_rng, zoom_rng, brightness_rng, channel_rng = jax.random.split(rng, 5)
  flip = jax.random.bernoulli(flip_rng, 0.5, (batch,))
  tracks = jnp.stack([head_left, head_right], 1).astype(jnp.float32)  # (B, 2, T, S, S, C)
  tracks = jnp.where(flip[:, None, None, None, None, None], tracks[:, ::-1, ..., ::-1, :], tracks)
  head_map = jnp.where(flip[:, None, None, None, None], head_map[..., ::-1, :][..., (1, 0, 2)], head_map)
  pixels = jax.random.randint(shift_rng, (batch, 2), -1, 2).astype(jnp.float32) * shift
  scales = jax.random.uniform(zoom_rng, (batch,), minval=1.0 - zoom, maxval=1.0 + zoom)
  tracks = _geometric(tracks, pixels, scales)
  factor = jax.random.uniform(brightness_rng, (batch,), minval=brightness[0], maxval=brightness[1])
  offset = jax.random.uniform(channel_rng, (batch,), minval=-channel_shift, maxval=channel_shift) / 255.0
  tracks = jnp.clip(tracks * factor[:, None, None, None, None, None] + offset[:, None, None, None, None, None], 0, 1)
  return tracks[:, 0].astype(head_left.dtype), tracks[:, 1].astype(head_right.dtype), head_map
