"""A toy model and Runner factory for the reliability tests (fast, in-process)."""

import os

import pytest
import torch
from mmengine.model import BaseModel
from torch.utils.data import DataLoader, Dataset

import mmdmpt.engine  # noqa: F401  (registers ReIDRunner, hooks, optim wrappers)
from mmdmpt.engine import ReIDRunner


class ToyDataset(Dataset):
    """Eight fixed samples; ``metainfo`` as the Runner stores it in checkpoints."""

    metainfo = dict(dataset_name='toy')

    def __len__(self) -> int:
        return 8

    def __getitem__(self, idx: int) -> dict:
        gen = torch.Generator().manual_seed(idx)
        return dict(inputs=torch.randn(4, generator=gen), data_samples=idx)


class ToyModel(BaseModel):
    """A linear model with two loss terms; ``nan_at`` makes ``loss_b`` NaN there."""

    def __init__(self, nan_at=()) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.nan_at = set(nan_at)
        self.calls = 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            self.calls += 1
            loss_b = out.pow(2).mean()
            if self.calls in self.nan_at:
                loss_b = loss_b * float('nan')
            return dict(loss_a=out.abs().mean(), loss_b=loss_b)
        return out


def collate(batch):
    return dict(
        inputs=torch.stack([b['inputs'] for b in batch]),
        data_samples=[b['data_samples'] for b in batch],
    )


def _make_runner(work_dir, *, model=None, max_epochs=2, optim_wrapper=None, **kwargs):
    """A ReIDRunner on the toy model, writing safe checkpoints every epoch."""
    loader = DataLoader(ToyDataset(), batch_size=2, shuffle=False, collate_fn=collate)
    return ReIDRunner(
        model=model if model is not None else ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=loader,
        optim_wrapper=optim_wrapper
        or dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        custom_hooks=[dict(type='SafeCheckpointHook')],
        default_scope='mmdmpt',
        experiment_name=f'toy_{os.path.basename(str(work_dir))}_{id(loader)}',
        **kwargs,
    )


class _Boom:
    """Unpickling this creates the marker file: the code a safe loader must not run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.fixture
def malicious_checkpoint(tmp_path):
    """A checkpoint whose unpickling would create ``marker``; returns (file, marker)."""
    marker = tmp_path / 'PWNED'
    path = tmp_path / 'evil.pth'
    payload = {'state_dict': {'linear.weight': torch.zeros(2, 4)}, 'meta': _Boom(str(marker))}
    torch.save(payload, path)
    assert not marker.exists()
    return path, marker


@pytest.fixture
def make_runner():
    """``make_runner(work_dir, *, model=None, max_epochs=2, optim_wrapper=None, **kw)``."""
    return _make_runner


@pytest.fixture
def toy_model():
    """The toy model class: ``toy_model(nan_at=(k,))`` makes call k's ``loss_b`` NaN."""
    return ToyModel
