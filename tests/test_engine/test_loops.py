import pytest

from mmdmpt.engine.loops import format_table, parse_missing, set_missing_in_pipeline

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
