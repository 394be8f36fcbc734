import io
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from mmdmpt.engine.hooks import SafeCheckpointHook, from_safe, to_safe


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_to_safe_loads_with_weights_only_and_restores_history_buffers():
    buffer = HistoryBuffer([1.0, 2.5, 3.0], [1, 1, 2], max_length=10)
    checkpoint = {
        'meta': {
            'epoch': 3,
            'seed': np.int64(7),
            'lr': np.float64(0.5),
            'modalities': ('rgb', 'nir'),
            'mean': np.array([0.5, 0.5]),
        },
        'message_hub': {'log_scalars': OrderedDict(loss=buffer), 'runtime_info': {'iter': 12}},
        'state_dict': OrderedDict(w=torch.ones(2)),
    }
    # The raw checkpoint is refused by the safe loader ...
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        _roundtrip(checkpoint)
    # ... the converted one loads and comes back equal.
    safe = {k: to_safe(v, k) for k, v in checkpoint.items()}
    loaded = _roundtrip(safe)
    assert loaded['meta']['seed'] == 7 and isinstance(loaded['meta']['seed'], int)
    assert type(loaded['meta']['lr']) is float
    assert loaded['meta']['modalities'] == ('rgb', 'nir')
    torch.testing.assert_close(
        loaded['meta']['mean'], torch.tensor([0.5, 0.5], dtype=torch.float64)
    )
    hub = from_safe(loaded['message_hub'])
    restored = hub['log_scalars']['loss']
    assert isinstance(restored, HistoryBuffer)
    assert restored.max_length == 10
    np.testing.assert_allclose(restored.data[0], [1.0, 2.5, 3.0])
    np.testing.assert_allclose(restored.data[1], [1, 1, 2])
    assert restored.mean() == pytest.approx(buffer.mean())


def test_to_safe_names_the_path_of_an_unsupported_object():
    with pytest.raises(TypeError, match=r'meta\.hook\[1\] holds a .*object'):
        to_safe({'hook': [1, object()]}, 'meta')


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = torch.nn.Linear(2, 2)
        self.head = torch.nn.BatchNorm1d(2)
        self.frozen.requires_grad_(False)

    def trainable_state_dict(self):
        return OrderedDict((k, v) for k, v in self.state_dict().items() if k.startswith('head.'))


class _Runner:
    def __init__(self, model):
        self.model = model


def test_trainable_only_keeps_just_the_model_trainable_state():
    model = _Model()
    checkpoint = {'meta': {}, 'state_dict': model.state_dict()}
    SafeCheckpointHook(trainable_only=True).before_save_checkpoint(_Runner(model), checkpoint)
    assert set(checkpoint['state_dict']) == set(model.trainable_state_dict())
    assert checkpoint['meta']['trainable_only'] is True
    _roundtrip(checkpoint)


def test_trainable_only_needs_the_model_api():
    checkpoint = {'meta': {}, 'state_dict': OrderedDict()}
    with pytest.raises(TypeError, match='trainable_state_dict'):
        SafeCheckpointHook(trainable_only=True).before_save_checkpoint(
            _Runner(torch.nn.Linear(1, 1)), checkpoint
        )
