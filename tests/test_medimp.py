"""MEDIMP pretraining: prompts per volume, the CLIP loss against numpy, the clamped temperature, a smoke run with
BatchNorm state through the trainer and evaluation of the restored run, the features the downstream reads."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import medimp_pretrain as medimp_config
from storyjax.data.medical.kidney import EXAMS
from storyjax.data.medical.prompts import EXAM_WORDS, gfr_word
from storyjax.errors import ConfigError
from storyjax.models.medimp import LOGIT_SCALE_MAX, ImageTextModel
from storyjax.tasks import get_task
from storyjax.tasks.medimp_pretrain import drawn_prompts

pytestmark = pytest.mark.usefixtures("fast_compile")


def smoke_config():
  config = medimp_config.get_config("smoke")
  config.mesh.update({"data": 1})
  return config


@pytest.fixture(scope="module")
def task():
  return get_task(smoke_config())


@pytest.fixture(scope="module")
def batch(task):
  source = task.source("train")
  examples = [task.preprocess(source[index]) for index in range(0, 8 * 5, 5)]
  return {name: np.stack([example[name] for example in examples]) for name in examples[0]}


def numpy_clip_loss(image_embeddings, text_embeddings, logit_scale):
  unit = lambda rows: rows / np.linalg.norm(rows, axis=-1, keepdims=True)
  logits = np.exp(logit_scale) * unit(image_embeddings) @ unit(text_embeddings).T
  cross_entropy = lambda rows: -np.mean(np.diag(rows - np.log(np.exp(rows).sum(-1, keepdims=True))))
  return 0.5 * (cross_entropy(logits) + cross_entropy(logits.T))


def test_preprocess_gives_one_prompt_per_template_line_deterministically(task):
  source = task.source("train")
  tokenizer = task.caption_inputs.tokenizer
  for index in (0, 7, 23):
    example = source[index]
    prompts = task.prompts(example)
    assert len(prompts) == len(task.templates) == 10
    words = (gfr_word(example["gfr"]), EXAM_WORDS[EXAMS[example["exam"]]])
    assert all(word in prompt for prompt in prompts for word in words), (words, prompts)
    features = task.preprocess(example)
    assert features["text"].shape == features["text_mask"].shape == (10, task.config.model.max_length)
    assert features["text"].dtype == np.int32 and features["volume"].shape == (16, 16, 16, 1)
    for row, mask, prompt in zip(features["text"], features["text_mask"], prompts):
      assert tokenizer.decode(row[mask], skip_special_tokens=True) == tokenizer.decode(
        tokenizer(prompt)["input_ids"], skip_special_tokens=True
      )
    np.testing.assert_array_equal(get_task(smoke_config()).preprocess(example)["text"], features["text"])


def test_loss_is_clip_on_the_drawn_prompts_at_the_clamped_scale(task, batch):
  """The loss against numpy on the model's embeddings of the drawn prompts, with a logit scale above the clamp:
  exp(ln 100) is used, and the clamped parameter gets no gradient."""
  variables = nn.unbox(task.init(jax.random.PRNGKey(0), batch))
  variables["params"]["logit_scale"] = np.float32(6.0)
  rng = jax.random.PRNGKey(4)

  def loss_and_embeddings(variables):
    loss, metrics, _ = task.loss(variables, batch, rng)
    image_embeddings, _ = task.model.apply(
      variables, batch["volume"], True, method=ImageTextModel.encode_image, mutable=["batch_stats"]
    )
    text_embeddings = task.model.apply(variables, *drawn_prompts(batch, rng), method=ImageTextModel.encode_text)
    return loss, metrics, image_embeddings, text_embeddings

  loss, metrics, image_embeddings, text_embeddings = jax.jit(loss_and_embeddings)(variables)
  expected = numpy_clip_loss(np.asarray(image_embeddings), np.asarray(text_embeddings), LOGIT_SCALE_MAX)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert float(metrics["logit_scale"]) == pytest.approx(LOGIT_SCALE_MAX)
  clamped = lambda params: task.model.apply({"params": params}, method=ImageTextModel.clamped_logit_scale)
  assert float(jax.grad(clamped)(variables["params"])["logit_scale"]) == 0.0
  text = np.asarray(drawn_prompts(batch, rng)[0])
  drawn = [int(np.flatnonzero((batch["text"][example] == text[example]).all(-1))[0]) for example in range(len(text))]
  assert len(set(drawn)) > 1, drawn


def test_clip_text_features_are_projected_at_the_last_valid_token():
  model = ImageTextModel(width=2, stage_sizes=(1,), embed_dim=4, text_encoder="clip")
  features = np.random.default_rng(0).normal(size=(2, 6, 5)).astype(np.float32)
  mask = np.arange(6) < np.array([[3], [6]])
  encode = lambda variables, text: model.apply(variables, text, mask, method=ImageTextModel.encode_text)
  variables = nn.unbox(model.init(jax.random.PRNGKey(0), features, mask, method=ImageTextModel.encode_text))
  projection = variables["params"]["text_projection"]
  expected = features[[0, 1], [2, 5]] @ projection["kernel"] + projection["bias"]
  np.testing.assert_allclose(encode(variables, features), expected, rtol=1e-5, atol=1e-6)
  others = features.copy()
  others[0, [0, 1, 3, 4, 5]] += 1.0
  others[1, :5] += 1.0
  np.testing.assert_array_equal(encode(variables, others), encode(variables, features))


@pytest.mark.parametrize(
  "templates",
  [("The donor was {age}. ; The GFR was {gfr}. ; Creatinine was {adj}.",), ("no slots at all",)],
)
def test_bad_templates_are_config_errors(templates):
  config = smoke_config()
  config.text.templates = templates
  with pytest.raises(ConfigError, match="template line 1"):
    get_task(config)


def test_a_prompt_longer_than_max_length_is_a_config_error():
  config = smoke_config()
  config.model.max_length = 30
  with pytest.raises(ConfigError, match="max_length=30"):
    get_task(config)
