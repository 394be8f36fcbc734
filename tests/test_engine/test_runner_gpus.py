import pytest

from mmdmpt.engine.runner import check_local_gpus


def test_more_processes_than_gpus_is_named():
    env = {'LOCAL_RANK': '1', 'LOCAL_WORLD_SIZE': '2'}
    with pytest.raises(RuntimeError, match='2 processes on this node') as info:
        check_local_gpus(env, device_count=1)
    message = str(info.value)
    assert '1 visible CUDA device(s)' in message
    assert 'tools/dist_train.sh CONFIG 1' in message and 'CUDA_VISIBLE_DEVICES=' in message
    # rank 0 of the same launch fails too (same local world size), not only rank 1
    with pytest.raises(RuntimeError):
        check_local_gpus({'LOCAL_RANK': '0', 'LOCAL_WORLD_SIZE': '2'}, device_count=1)


@pytest.mark.parametrize(
    'env, count',
    [({'LOCAL_RANK': '0', 'LOCAL_WORLD_SIZE': '2'}, 2), ({'LOCAL_RANK': '3'}, 8), ({}, 1)],
)
def test_enough_gpus_pass(env, count):
    check_local_gpus(env, device_count=count)
