"""One config string for a named function and its parameters: "name" or "name:key=value,key=value".

Used where one config key selects a family and its parameters, e.g. `diffusion.guidance_schedule="clamp:c=4,
base=linear"` or `diffusion.train_schedule="sigmoid:start=-3,end=3,tau=0.9"`.
"""

from collections.abc import Mapping


def parse_spec(spec: str, families: Mapping[str, Mapping[str, object]], what: str) -> tuple[str, dict]:
  """'name:key=value,…' → (name, parameters with the family's defaults filled in).

  `families` maps each name to its parameters' defaults; a value is converted to its default's type (a str
  default keeps the text). Raises ValueError naming `what`, the bad part and the choices.
  """
  name, _, arguments = str(spec).partition(":")
  name = name.strip()
  if name not in families:
    raise ValueError(f"{what} {spec!r}: unknown name {name!r}; choose one of {tuple(families)}")
  parameters = dict(families[name])
  for argument in filter(None, (part.strip() for part in arguments.split(","))):
    key, equals, value = argument.partition("=")
    key = key.strip()
    if not equals or key not in parameters:
      raise ValueError(
        f"{what} {spec!r}: bad parameter {argument!r}; {name!r} takes "
        + (", ".join(f"{k}=<{type(v).__name__}>" for k, v in parameters.items()) or "no parameters")
        + " (form: name:key=value,key=value)"
      )
    try:
      parameters[key] = type(families[name][key])(value.strip())
    except ValueError as error:
      raise ValueError(f"{what} {spec!r}: {key}={value.strip()!r} is not a {type(parameters[key]).__name__}") from error
  return name, parameters
