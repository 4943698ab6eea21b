"""MEDIMP downstream (`exam_sequence` task): CosEmb's k-fold masked transformer on the features of MEDIMP's
image–text pretrained encoder.

  python -m storyjax.train --config=configs/medimp_pretrain.py          # image–text InfoNCE → runs/medimp_pretrain
  python -m storyjax.train --config=configs/medimp.py                   # downstream → runs/medimp
  python -m storyjax.evaluate --config=configs/medimp.py --workdir=runs/medimp

Keys as configs/cosemb.py.
"""

from configs import cosemb


def get_config(variant: str | None = None):
  return cosemb.get_config(variant, name="medimp", encoder="runs/medimp_pretrain")
