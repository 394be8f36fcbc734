"""Guarantee 4: fuzzed file names and rank evaluation: documented errors or right results."""

import os.path as osp

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mmdmpt.datasets.msvr310 import parse_msvr310_name
from mmdmpt.datasets.rgbnt100 import parse_rgbnt100_name
from mmdmpt.datasets.rgbnt201 import parse_rgbnt201_name
from mmdmpt.datasets.transforms.loading import decode_bgr
from mmdmpt.datasets.wmveid863 import parse_wmveid863_name
from mmdmpt.evaluation.functional.rank import evaluate_rank

FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
EXT = r'(\.jpg|\.JPG|\.png|\.jpeg|\.txt|\.|)'
VALID = st.one_of(
    st.from_regex(r'\A[0-9]{6}_cam[1-4]_[0-9]_[0-9]{2}\.jpg\Z'),
    st.from_regex(r'\A[0-9]{4}_c[0-9]{4}_[0-9]{3}\.jpg\Z'),
    st.from_regex(r'\A[0-9]{4}_s[0-9]{3}_v[0-7]_[0-9]{3}\.jpg\Z'),
    st.from_regex(r'\A[0-9]{4}_v[0-9]_n[01]_[0-9]{3}\.jpg\Z'),
)
# characters of the grammars, look-alikes (Arabic-Indic and full-width digits), blanks
EDIT_CHARS = '0123456789_camsvn.jpgCV ٣３\n\t\u00e9/'


@st.composite
def near_misses(draw):
    """A valid name of one of the four grammars with up to three random edits."""
    name = list(draw(VALID))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(('insert', 'delete', 'replace')))
        at = draw(st.integers(0, len(name)))
        char = draw(st.sampled_from(EDIT_CHARS))
        if op == 'insert':
            name.insert(at, char)
        elif name and at < len(name):
            name[at : at + 1] = [] if op == 'delete' else [char]
    return ''.join(name)


NAMES = st.one_of(
    st.text(max_size=40),
    near_misses(),
    # loose near-misses; hypothesis' \d and \w also draw non-ASCII digits and letters
    st.from_regex(r'\A\d{0,7}_?cam\d{0,3}(_[\w\- ]{0,5}){0,2}' + EXT + r'\Z'),
    st.from_regex(r'\A\d{0,5}_s\d{0,4}_v\d{0,3}(_[\w\-]{0,5})?' + EXT + r'\Z'),
    st.from_regex(r'\A\d{0,4}(_v\d{0,2})?(_n\d{0,2})?(_\w{0,4})?' + EXT + r'\Z'),
)
TAIL = st.text(alphabet='0123456789abcXYZ_- éü', max_size=6)


def _int(text):
    """The value of a non-empty run of ASCII digits, else None (an independent oracle)."""
    ok = text != '' and all(c in '0123456789' for c in text)
    return int(text) if ok else None


def _fields(stem, *seps):
    """Split ``stem`` at the first occurrence of each separator in turn, then at '_'.

    Returns the ASCII-digit values of the fields or None when a field is not one, when a
    separator is missing, or when what follows the last field is neither empty nor '_...'
    without a newline (the documented grammar: the rest of the name is not read).
    """
    values = []
    rest = stem
    for sep in seps:
        head, found, rest = rest.partition(sep)
        if not found or _int(head) is None:
            return None
        values.append(_int(head))
    last, underscore, tail = rest.partition('_')
    if _int(last) is None or '\n' in tail:
        return None
    return values + [_int(last)]


def _check(parse, name, dataset, expected, *args):
    """``parse`` gives ``expected`` (a dict) or, when it is None, the documented error."""
    try:
        got = parse(name, f'/root/{name}', *args)
    except ValueError as exc:
        assert f'{dataset}: cannot parse image name' in str(exc)
        assert f'/root/{name}' in str(exc) and 'expected the pattern' in str(exc)
        assert expected is None, f'{name!r} refused: {exc}'
    else:
        assert got == expected, f'{name!r} read as {got}, expected {expected}'


@example(name='٠٠٠٠٠١_cam١_0_00.jpg')
@example(name='000001_cam1\n.jpg')
@example(name='000001_cam３_0_00.jpg')
@example(name='000001_cam0_0_00.jpg')
@FUZZ
@given(name=NAMES)
def test_rgbnt201_name_parser(name):
    fields = _fields(osp.splitext(name)[0], '_cam')
    expected = None
    if fields is not None and fields[1] >= 1:
        expected = dict(gt_label=fields[0], camid=fields[1] - 1)
    _check(parse_rgbnt201_name, name, 'RGBNT201', expected)


@FUZZ
@given(
    pid=st.integers(0, 999999),
    cam=st.integers(1, 99),
    x=st.text(alphabet='0123456789ab', min_size=1, max_size=2),
    idx=st.integers(0, 199),
    tail=TAIL,
)
def test_rgbnt201_valid_names_round_trip(pid, cam, x, idx, tail):
    name = f'{pid:06d}_cam{cam}_{x}_{idx:02d}{tail}.jpg'
    assert parse_rgbnt201_name(name) == dict(gt_label=pid, camid=cam - 1)


@example(name='٠٥٦١_c0001_006.jpg')
@example(name='0561_c0001\n.jpg')
@example(name='0561_c0000_006.jpg')
@FUZZ
@given(name=NAMES)
def test_rgbnt100_name_parser(name):
    fields = _fields(osp.splitext(name)[0], '_c')
    expected = None
    if fields is not None and fields[1] >= 1:
        expected = dict(gt_label=fields[0], camid=fields[1] - 1)
    _check(parse_rgbnt100_name, name, 'RGBNT100', expected)


@FUZZ
@given(pid=st.integers(0, 9999), cam=st.integers(1, 9999), idx=st.integers(0, 999), tail=TAIL)
def test_rgbnt100_valid_names_round_trip(pid, cam, idx, tail):
    name = f'{pid:04d}_c{cam:04d}_{idx:03d}{tail}.jpg'
    assert parse_rgbnt100_name(name) == dict(gt_label=pid, camid=cam - 1)


@example(name='0019_s٠١٢_v0_000.jpg', pid=19)
@example(name='0019_s012_v0\n.jpg', pid=19)
@example(name='0019_s012_v0_000.jpg', pid=20)
@FUZZ
@given(name=NAMES, pid=st.one_of(st.none(), st.integers(0, 9999)))
def test_msvr310_name_parser(name, pid):
    # pid None: the name's id is not compared with a folder id
    fields = _fields(osp.splitext(name)[0], '_s', '_v')
    expected = None
    if fields is not None and pid in (None, fields[0]):
        expected = dict(gt_label=fields[0], sceneid=fields[1], camid=fields[2])
    _check(parse_msvr310_name, name, 'MSVR310', expected, pid)


@FUZZ
@given(
    vid=st.integers(0, 9999),
    scene=st.integers(0, 999),
    view=st.integers(0, 7),
    idx=st.integers(0, 999),
    tail=TAIL,
)
def test_msvr310_valid_names_round_trip(vid, scene, view, idx, tail):
    name = f'{vid:04d}_s{scene:03d}_v{view}_{idx:03d}{tail}.jpg'
    assert parse_msvr310_name(name, pid=vid) == dict(gt_label=vid, sceneid=scene, camid=view)


def _first_number_after(stem, letter, max_digits=None):
    """The ASCII digits right after the first ``letter`` followed by one, else None."""
    for i, c in enumerate(stem):
        if c == letter and i + 1 < len(stem) and stem[i + 1] in '0123456789':
            j = i + 1
            while j < len(stem) and stem[j] in '0123456789':
                j += 1
            digits = stem[i + 1 : j]
            return int(digits[:max_digits] if max_digits else digits)
    return None


@example(name='0001_v٢_n1_004.jpg')
@example(name='0001_v2_n１_004.jpg')
@FUZZ
@given(name=NAMES)
def test_wmveid863_name_parser(name):
    stem = osp.splitext(name)[0]
    cam, night = _first_number_after(stem, 'v'), _first_number_after(stem, 'n', 1)
    expected = None if cam is None or night is None else dict(camid=cam, night=night)
    _check(parse_wmveid863_name, name, 'WMVeID863', expected)


@FUZZ
@given(
    vid=st.integers(0, 9999),
    cam=st.integers(0, 99),
    night=st.integers(0, 1),
    idx=st.integers(0, 999),
    tail=TAIL,
)
def test_wmveid863_valid_names_round_trip(vid, cam, night, idx, tail):
    name = f'{vid:04d}_v{cam}_n{night}_{idx:03d}{tail}.jpg'
    assert parse_wmveid863_name(name) == dict(camid=cam, night=night)


MAGIC = [b'', b'\xff\xd8\xff\xe0', b'\x89PNG\r\n\x1a\n', b'BM', b'P6\n', b'II*\x00', b'GIF89a']


@FUZZ
@given(
    magic=st.sampled_from(MAGIC),
    body=st.binary(max_size=300),
    end=st.sampled_from([b'', b'\xff\xd9', b'IEND\xaeB`\x82']),
)
def test_image_decoder_on_random_bytes(magic, body, end):
    # decoded or the documented ValueError naming the file; never cv2.error or a crash
    try:
        img = decode_bgr(magic + body + end, '/root/x.jpg')
    except ValueError as exc:
        assert str(exc).startswith('cannot decode image /root/x.jpg: ')
    else:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def _reference(dist, q_pids, g_pids, q_cams, g_cams, max_rank):
    """Brute force: the standard Market-1501 protocol, one query at a time."""
    aps, inps, cmc = [], [], np.zeros(max_rank)
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind='stable')
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        hits = (g_pids[order] == q_pids[i])[keep]
        if not hits.any():
            continue
        pos = np.flatnonzero(hits)
        cmc[pos[0] :] += 1 if pos[0] < max_rank else 0
        aps.append(np.mean([(k + 1) / (p + 1) for k, p in enumerate(pos)]))
        inps.append(len(pos) / (pos[-1] + 1))
    return aps, inps, cmc


@FUZZ
@given(
    seed=st.integers(0, 2**31 - 1),
    num_q=st.integers(1, 6),
    num_g=st.integers(1, 12),
    num_ids=st.integers(1, 4),
    num_cams=st.integers(1, 3),
    max_rank=st.integers(1, 15),
)
def test_evaluate_rank_matches_brute_force(seed, num_q, num_g, num_ids, num_cams, max_rank):
    rng = np.random.default_rng(seed)
    dist = rng.random((num_q, num_g))  # continuous: no ties
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    q_cams, g_cams = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
    aps, inps, cmc = _reference(dist, q_pids, g_pids, q_cams, g_cams, max_rank)
    if not aps:
        with pytest.raises(ValueError):
            evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
        return
    out = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
    assert out['num_valid_queries'] == len(aps)
    assert out['num_invalid_queries'] == num_q - len(aps)
    np.testing.assert_allclose(out['mAP'], np.mean(aps), atol=1e-9)
    np.testing.assert_allclose(out['mINP'], np.mean(inps), atol=1e-9)
    np.testing.assert_allclose(out['cmc'], cmc / len(aps), atol=1e-9)


@FUZZ
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(0, 5), st.integers(0, 7)),
    bad=st.sampled_from([np.nan, np.inf, -np.inf, None]),
    wrong_len=st.booleans(),
    max_rank=st.integers(-2, 10),
)
def test_evaluate_rank_adversarial_inputs(seed, shape, bad, wrong_len, max_rank):
    rng = np.random.default_rng(seed)
    dist = rng.random(shape)
    if bad is not None and dist.size:
        dist.flat[rng.integers(0, dist.size)] = bad
    num_q, num_g = shape
    q_pids = rng.integers(0, 3, num_q + (1 if wrong_len else 0))
    g_pids = rng.integers(0, 3, num_g)
    q_cams, g_cams = rng.integers(0, 2, len(q_pids)), rng.integers(0, 2, num_g)
    try:
        out = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
    except ValueError:
        return
    assert not wrong_len and max_rank >= 1 and bad is not np.nan
    assert 0.0 <= out['mAP'] <= 1.0 and 0.0 <= out['mINP'] <= 1.0
    assert out['cmc'].shape == (max_rank,) and np.all(np.diff(out['cmc']) >= 0)


def test_evaluate_rank_all_queries_removed():
    # every true match shares the query's camera: all queries are invalid
    with pytest.raises(ValueError):
        evaluate_rank(np.zeros((2, 2)), [0, 1], [0, 1], [0, 0], [0, 0])
