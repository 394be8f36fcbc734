import json

import pytest

from mmdmpt.datasets import set_missing_in_pipeline
from mmdmpt.engine.loops import format_table
from mmdmpt.structures import parse_missing
from mmdmpt.testing import load_script

MODS = ('rgb', 'nir', 'tir')


def test_parse_missing_none_and_names():
    assert parse_missing(None, MODS) == [()]
    assert parse_missing('nir,tir', MODS) == [('nir', 'tir')]
    assert parse_missing('tir, rgb', MODS) == [('rgb', 'tir')]
    assert parse_missing(['nir'], MODS) == [('nir',)]


def test_parse_missing_all_lists_every_non_empty_subset_full_set_first():
    settings = parse_missing('all', MODS)
    assert settings[0] == ()
    assert len(settings) == 7
    assert len(set(settings)) == 7
    assert all(len(s) < 3 for s in settings)


@pytest.mark.parametrize(
    'value, match',
    [('depth', r"unknown modality \['depth'\]"), ('rgb,nir,tir', 'would leave no modality')],
)
def test_parse_missing_errors(value, match):
    with pytest.raises(ValueError, match=match):
        parse_missing(value, MODS)


def test_set_missing_in_pipeline_copies_and_sets_the_loader():
    cfg = dict(dataset=dict(pipeline=[dict(type='LoadMultiModalImages'), dict(type='Pack')]))
    new = set_missing_in_pipeline(cfg, ('nir',))
    assert new['dataset']['pipeline'][0]['missing_modalities'] == ('nir',)
    assert 'missing_modalities' not in cfg['dataset']['pipeline'][0]
    with pytest.raises(ValueError, match='needs a LoadMultiModalImages'):
        set_missing_in_pipeline(dict(dataset=dict(pipeline=[])), ('nir',))


def test_format_table_rows_and_columns():
    text = format_table(
        {
            'rgb+nir+tir': {'reid/mAP': 80.0, 'reid/Rank-1': 90.0},
            'rgb': {'reid/mAP': 50.0, 'reid/Rank-1': 60.5},
        }
    )
    lines = text.splitlines()
    assert 'mAP' in lines[1] and 'Rank-1' in lines[1]
    assert lines[3].startswith('rgb+nir+tir') and '80.00' in lines[3]
    assert lines[4].startswith('rgb') and '60.50' in lines[4]


def _common():
    from pathlib import Path

    return load_script(
        Path(__file__).parents[1] / 'test_apis' / 'common.py', 'mmdmpt_tests_apis_common'
    )


def test_two_consecutive_missing_all_runs_start_from_the_full_set(tmp_path):
    """After ``--missing all`` the loop's own dataloader is back: a second run is the same."""
    import torch
    from mmengine.runner import Runner

    torch.set_num_threads(1)
    common = _common()
    tree = common.make_tree(str(tmp_path / 'RGBNT201'))
    cfg = common.tiny_config(
        tree,
        work_dir=str(tmp_path / 'work'),
        log_level='WARNING',
        test_cfg=dict(type='ReIDTestLoop', missing='all', out_file=str(tmp_path / 'm.json')),
    )
    runner = Runner.from_cfg(cfg)
    first = runner.test()
    loop = runner.test_loop
    assert loop.dataloader.dataset.pipeline.transforms[0].missing_modalities == ()
    first_table = json.loads((tmp_path / 'm.json').read_text())
    second = runner.test()
    second_table = json.loads((tmp_path / 'm.json').read_text())
    assert first == second and first_table == second_table
    assert list(second_table)[0] == 'rgb+nir+tir' and len(second_table) == 7
    # the table's rows really differ: the settings left modalities out
    assert len({round(m['reid/mAP'], 6) for m in second_table.values()}) > 1
