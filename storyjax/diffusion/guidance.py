"""Classifier-free guidance in the two sign conventions used by the thesis' models."""

CONVENTIONS = ("director", "cad")


def classifier_free_guidance(cond, uncond, weight, convention: str = "director"):
  """Combines conditional and unconditional predictions of the same shape (B, ...).

  "director": uncond + w·(cond − uncond) (w = 1 is the conditional model alone);
  "cad": cond + w·(cond − uncond) = (1 + w)·cond − w·uncond (thesis eq 3.4; w = 0 is the conditional model).
  """
  if convention == "director":
    return uncond + weight * (cond - uncond)
  if convention == "cad":
    return cond + weight * (cond - uncond)
  raise ValueError(f"Unknown guidance convention {convention!r}; choose one of {CONVENTIONS}.")


def guided_denoiser(denoise_cond_uncond_fn, weight, convention: str = "director"):
  """Wraps fn(x, σ) → (cond, uncond) into fn(x, σ) → guided D, e.g. for `edm.heun_sample`."""
  if convention not in CONVENTIONS:
    raise ValueError(f"Unknown guidance convention {convention!r}; choose one of {CONVENTIONS}.")

  def guided(x, sigma):
    cond, uncond = denoise_cond_uncond_fn(x, sigma)
    return classifier_free_guidance(cond, uncond, weight, convention)

  return guided
