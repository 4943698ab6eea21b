"""Every key of the configs other than the E.T., segmentation and medical ones is read (tests/test_configs.py has the
checks and the E.T. configs, tests/test_scam_task.py the segmentation ones, tests/test_medical_tasks.py the medical
ones)."""

import pytest
from test_configs import CONFIG_FILES, PROGRAM_CONFIGS, TRAJECTORY_CONFIGS, unread_keys
from test_laeo_task import LAEO_CONFIGS
from test_medical_tasks import MEDICAL_CONFIGS
from test_scam_task import SEGMENTATION_CONFIGS

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.mark.slow
def test_every_key_of_the_other_configs_is_read(runs_dir, monkeypatch):
  first = ["scene_attributes"]  # the judge the image models' evaluations load
  names = first + [
    name
    for name in CONFIG_FILES
    if name
    not in (*first, *TRAJECTORY_CONFIGS, *SEGMENTATION_CONFIGS, *MEDICAL_CONFIGS, *LAEO_CONFIGS, *PROGRAM_CONFIGS)
  ]
  unread = unread_keys(names, runs_dir, monkeypatch)
  assert unread == {name: [] for name in unread}
