"""FID Inception-v3: our Flax port against an independent numpy forward on random weights in pytorch-fid's state-dict
layout, the 299 resize, loader errors, and fid_inception in the RIN/CAD evaluation."""

import flax.linen as nn
from inception_reference import STATE_SHAPES, numpy_features, numpy_resize_bilinear, random_state
import jax
import numpy as np
import pytest
import safetensors.numpy

from configs.cad import get_config as cad_config
from storyjax.errors import ConfigError, DataError
from storyjax.models import inception as inception_lib
from storyjax.tasks import rin as rin_task

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  state = random_state(np.random.default_rng(0))
  path = tmp_path_factory.mktemp("inception") / "fid_inception.safetensors"
  safetensors.numpy.save_file(state, str(path))
  return path, state


def test_network_matches_numpy_and_reads_every_tensor(checkpoint):
  path, state = checkpoint
  read = set()

  class Recording(dict):
    def __getitem__(self, name):
      read.add(name)
      return super().__getitem__(name)

  params = inception_lib.convert_state_dict(Recording(state))
  assert read == {name for name in STATE_SHAPES if not name.startswith("fc.")}  # all but the classifier
  # 139 × 139: the smallest size whose last blocks still see borders (their maps are 3 × 3), so padding is tested
  images = np.random.default_rng(1).uniform(-1, 1, (2, 139, 139, 3)).astype(np.float32)
  ours = np.asarray(inception_lib.FIDInceptionV3().apply({"params": params}, images))
  reference = numpy_features(state, images.transpose(0, 3, 1, 2).astype(np.float64))
  assert ours.shape == (2, inception_lib.FEATURES) and reference.std() > 0.05
  np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
  assert inception_lib.load_fid_inception(str(path)).params.keys() == params.keys()


def test_features_come_in_batches_of_one_shape():
  network = inception_lib.FIDInception({})
  shapes = []

  def first_pixels(params, images):  # stands in for the network: records the shapes it is called with
    shapes.append(images.shape)
    return images.reshape(len(images), -1)[:, :4]

  network._features = first_pixels
  images = np.random.default_rng(3).uniform(-1, 1, (5, 6, 6, 3))
  np.testing.assert_allclose(network.features(images, batch_size=2), images.reshape(5, -1)[:, :4], rtol=1e-6)
  assert shapes == [(2, 6, 6, 3)] * 3  # the last image padded to a batch of 2: one compile


@pytest.mark.parametrize("size", [(32, 32), (400, 333)])
def test_resize_to_299_is_torch_bilinear_without_antialiasing(size):
  images = np.random.default_rng(2).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
  ours = np.asarray(inception_lib.resize_for_inception(images))
  reference = numpy_resize_bilinear(images.transpose(0, 3, 1, 2).astype(np.float64), 299).transpose(0, 2, 3, 1)
  np.testing.assert_allclose(ours, reference, atol=1e-4)  # float32 interpolation weights


def test_loader_errors_name_the_problem(checkpoint, tmp_path):
  _path, state = checkpoint
  with pytest.raises(ConfigError, match=r"no FID Inception weights at .*missing\.safetensors.*pytorch-fid"):
    inception_lib.load_fid_inception(str(tmp_path / "missing.safetensors"))
  corrupt = tmp_path / "corrupt.safetensors"
  corrupt.write_bytes(b"not a safetensors file")
  with pytest.raises(ConfigError, match=r"corrupt\.safetensors is not a readable safetensors file"):
    inception_lib.load_fid_inception(str(corrupt))
  lacking = {name: tensor for name, tensor in state.items() if name != "Mixed_6b.branch7x7_2.conv.weight"}
  with pytest.raises(DataError, match=r"FID Inception checkpoint has no tensor Mixed_6b\.branch7x7_2\.conv\.weight"):
    inception_lib.convert_state_dict(lacking)
  reshaped = {**state, "Mixed_7c.branch_pool.bn.running_var": np.ones(191, np.float32)}
  with pytest.raises(DataError, match=r"tensor Mixed_7c\.branch_pool\.bn\.running_var has shape \(191,\), expected"):
    inception_lib.convert_state_dict(reshaped)
  with pytest.raises(ValueError, match=r"\(B, H, W, 3\) RGB"):
    inception_lib.FIDInception({}).features(np.zeros((2, 8, 8, 4)))


def test_cad_evaluation_reports_fid_inception_without_a_judge(checkpoint, runs_dir):
  path, _state = checkpoint
  config = cad_config("smoke")
  config.eval.update({"inception_path": str(path), "judge_workdir": str(runs_dir / "no_judge")})
  task = rin_task.Task(config)
  source = task.source("test")
  variables = nn.unbox(jax.jit(task.init)(jax.random.PRNGKey(0), task.batch([source[0], source[1]])))
  results = task.evaluate(variables, runs_dir / "cad_inception", quick=True)
  assert set(results) == {"fid_inception", "fid_inception_unguided"}  # the configured ω = 1 and unguided
  assert np.isfinite(results["fid_inception"]) and results["fid_inception"] > 0
  latents = cad_config("smoke")
  latents.data.update({"channels": 4, "source": "webdataset", "path": "unused", "image_size": 4})
  latents.eval.inception_path = str(path)
  with pytest.raises(ConfigError, match=r"needs model\.vae_path"):
    rin_task.Task(latents)
  config.eval.inception_path = str(runs_dir / "typo.safetensors")
  with pytest.raises(ConfigError, match=r"no FID Inception weights at .*typo\.safetensors"):  # before any training
    rin_task.Task(config)
