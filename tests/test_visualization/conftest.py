from pathlib import Path

import pytest
import torch

from mmdmpt.testing import load_script


def load_common():
    return load_script(
        Path(__file__).parents[1] / 'test_apis' / 'common.py', 'mmdmpt_tests_apis_common'
    )


@pytest.fixture(scope='session')
def common():
    return load_common()


@pytest.fixture(scope='session')
def tree(tmp_path_factory, common):
    return common.make_tree(str(tmp_path_factory.mktemp('vis_tree') / 'RGBNT201'))


@pytest.fixture(scope='package', autouse=True)
def _single_thread():
    """Tiny models run fastest on one thread, above all on shared, busy cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
