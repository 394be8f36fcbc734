"""Guarantee 2: checkpoints appear whole or not at all; auto-resume finds a whole one."""

import pytest
import torch
from mmengine.fileio.backends import LocalBackend

from mmdmpt.engine.runner import find_latest_complete_checkpoint, is_complete_checkpoint


def _crash_on_epoch(monkeypatch, epoch):
    """Make the writer of ``epoch`` write half its bytes, then die."""
    real_put = LocalBackend.put
    calls = {'n': 0}

    def put(self, obj, filepath):
        calls['n'] += 1
        if calls['n'] == epoch:
            with open(filepath, 'wb') as f:
                f.write(obj[: len(obj) // 2])
            raise KeyboardInterrupt('killed mid-write')
        return real_put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', put)


def test_crash_mid_write_leaves_no_checkpoint_and_resume_picks_previous(
    tmp_path, monkeypatch, make_runner
):
    _crash_on_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        make_runner(tmp_path, max_epochs=3).train()
    assert (tmp_path / 'epoch_1.pth').is_file()
    assert not (tmp_path / 'epoch_2.pth').exists()
    assert not list(tmp_path.glob('.epoch_2.pth.tmp*'))
    assert torch.load(tmp_path / 'epoch_1.pth', weights_only=True)['meta']['epoch'] == 1
    assert (tmp_path / 'last_checkpoint').read_text().strip() == str(tmp_path / 'epoch_1.pth')
    monkeypatch.undo()
    runner = make_runner(tmp_path, max_epochs=3, resume=True)
    runner.train()
    assert runner.epoch == 3
    assert torch.load(tmp_path / 'epoch_3.pth', weights_only=True)['meta']['epoch'] == 3


def test_resume_skips_a_pointer_to_a_truncated_or_missing_file(tmp_path, make_runner):
    make_runner(tmp_path, max_epochs=2).train()
    whole = (tmp_path / 'epoch_2.pth').read_bytes()
    # A truncated epoch_3 (as an older writer, killed, would leave) and a pointer to it.
    (tmp_path / 'epoch_3.pth').write_bytes(whole[: len(whole) // 3])
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_3.pth'))
    assert not is_complete_checkpoint(str(tmp_path / 'epoch_3.pth'))
    assert find_latest_complete_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_9.pth'))
    assert find_latest_complete_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
    (tmp_path / 'last_checkpoint').write_text('')  # a pointer cut mid-write
    runner = make_runner(tmp_path, max_epochs=3, resume=True)
    runner.train()
    assert runner.epoch == 3
    assert torch.load(tmp_path / 'epoch_3.pth', weights_only=True)['meta']['epoch'] == 3


def test_no_checkpoint_at_all_starts_from_scratch(tmp_path):
    assert find_latest_complete_checkpoint(str(tmp_path)) is None
    (tmp_path / 'epoch_1.pth').write_bytes(b'junk')
    assert find_latest_complete_checkpoint(str(tmp_path)) is None
