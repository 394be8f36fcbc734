import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mmdmpt.models.utils import (
    CLIPWeightsError,
    is_openai_layout,
    load_clip_weights,
    resize_visual_pos_embed,
    resolve_quick_gelu,
)
from mmdmpt.testing import load_script

ROOT = Path(__file__).resolve().parents[3]


def _load_tool(relpath: str):
    return load_script(ROOT / relpath, Path(relpath).stem)


@pytest.fixture(scope='module')
def reference(tiny_weights):
    return torch.load(tiny_weights, weights_only=True)


def _assert_same(sd, ref):
    ref = {k: v for k, v in ref.items() if not k.endswith('attn_mask')}
    assert set(sd) == set(ref)
    for key, value in ref.items():
        assert sd[key].dtype == torch.float32
        assert torch.equal(sd[key], value.float()), key


def test_plain_state_dict(tiny_weights, reference):
    sd, info = load_clip_weights(tiny_weights)
    _assert_same(sd, reference)
    assert info['format'] == 'state_dict'
    assert info['quick_gelu'] is None and info['source'] is None
    assert info['openai_layout'] and not info['training_checkpoint']


@pytest.mark.parametrize('nest', ['state_dict', 'model'])
def test_nested_bin_with_module_prefix(tmp_path, reference, nest):
    path = tmp_path / 'ckpt.bin'
    torch.save({nest: {f'module.{k}': v for k, v in reference.items()}, 'epoch': 3}, path)
    sd, info = load_clip_weights(str(path))
    _assert_same(sd, reference)
    assert info['nested'] == nest
    assert info['training_checkpoint'] == (nest == 'state_dict')


def test_custom_text_keys_are_mapped(tmp_path, reference):
    text_keys = ('transformer.', 'token_embedding.', 'positional_embedding', 'ln_final.')
    custom = {
        (f'text.{k}' if k.startswith(text_keys) or k == 'text_projection' else k): v
        for k, v in reference.items()
    }
    path = tmp_path / 'custom.pth'
    torch.save(custom, path)
    sd, _ = load_clip_weights(str(path))
    _assert_same(sd, reference)


def test_safetensors_with_and_without_metadata(tmp_path, reference):
    tensors = {k: v.contiguous() for k, v in reference.items() if not k.endswith('attn_mask')}
    plain = tmp_path / 'plain.safetensors'
    save_file(tensors, str(plain))
    sd, info = load_clip_weights(str(plain))
    _assert_same(sd, reference)
    assert info['format'] == 'safetensors' and info['quick_gelu'] is None

    meta = tmp_path / 'meta.safetensors'
    save_file(tensors, str(meta), metadata={'source': 'openai', 'quick_gelu': 'true'})
    sd, info = load_clip_weights(str(meta))
    _assert_same(sd, reference)
    assert info['quick_gelu'] is True and info['source'] == 'openai'
    assert 'metadata' in info['quick_gelu_reason']

    gelu = tmp_path / 'gelu.safetensors'
    save_file(tensors, str(gelu), metadata={'quick_gelu': 'false'})
    assert load_clip_weights(str(gelu))[1]['quick_gelu'] is False


@pytest.mark.filterwarnings('ignore::FutureWarning')
def test_torchscript_archive(openai_archive):
    sd, info = load_clip_weights(openai_archive)
    assert info['format'] == 'torchscript'
    assert info['source'] == 'openai' and info['quick_gelu'] is True
    assert all(v.dtype == torch.float32 for v in sd.values() if v.is_floating_point())
    for key in ('input_resolution', 'context_length', 'vocab_size', 'attn_mask'):
        assert key not in sd
    assert 'visual.proj' in sd and 'visual.transformer.resblocks.2.mlp.c_fc.weight' in sd
    # Exactly the archive's (fp16) values, widened.
    archive = torch.jit.load(openai_archive, map_location='cpu').state_dict()
    assert torch.equal(sd['visual.conv1.weight'], archive['visual.conv1.weight'].float())
    assert is_openai_layout(sd)


def test_missing_file_names_path_and_formats(tmp_path):
    path = tmp_path / 'nope' / 'ViT-B-16.pt'
    with pytest.raises(FileNotFoundError) as err:
        load_clip_weights(str(path))
    assert str(path) in str(err.value)
    assert 'safetensors' in str(err.value) and 'TorchScript' in str(err.value)


def test_corrupt_file(tmp_path):
    path = tmp_path / 'corrupt.pt'
    path.write_bytes(os.urandom(2048))
    with pytest.raises(CLIPWeightsError) as err:
        load_clip_weights(str(path))
    assert str(path) in str(err.value) and 'safetensors' in str(err.value)


def test_truncated_zip(tmp_path, tiny_weights):
    path = tmp_path / 'truncated.pt'
    path.write_bytes(Path(tiny_weights).read_bytes()[:5000])
    with pytest.raises(CLIPWeightsError, match='truncated.pt'):
        load_clip_weights(str(path))


def test_zip_without_tensors(tmp_path):
    path = tmp_path / 'other.zip'
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('hello.txt', 'not weights')
    with pytest.raises(CLIPWeightsError, match='other.zip'):
        load_clip_weights(str(path))


def test_no_tensors(tmp_path):
    path = tmp_path / 'empty.pt'
    torch.save({'epoch': 1}, path)
    with pytest.raises(CLIPWeightsError, match='no tensors'):
        load_clip_weights(str(path))


class _Malicious:
    target = ''

    def __reduce__(self):
        return (open, (self.target, 'w'))


@pytest.mark.parametrize('legacy', [True, False])
def test_malicious_pickle_is_refused(tmp_path, legacy):
    target = tmp_path / 'pwned.txt'
    payload = _Malicious()
    payload.target = str(target)
    path = tmp_path / 'evil.pt'
    if legacy:
        with open(path, 'wb') as f:
            pickle.dump({'visual.proj': payload}, f, protocol=2)
    else:
        torch.save({'visual.proj': payload}, path)
    assert not target.exists()
    with pytest.raises(CLIPWeightsError) as err:
        load_clip_weights(str(path))
    assert 'evil.pt' in str(err.value) and 'never executed' in str(err.value)
    assert not target.exists()


def test_resize_pos_embed_matches_open_clip():
    from open_clip.model import resize_pos_embed

    torch.manual_seed(0)
    pos = torch.randn(1 + 14 * 14, 8)

    class _Visual:
        grid_size = (16, 8)

    class _Model:
        visual = _Visual()

    ref = {'visual.positional_embedding': pos.clone()}
    resize_pos_embed(ref, _Model())
    out = resize_visual_pos_embed(pos, (16, 8))
    assert out.shape == (1 + 128, 8)
    assert torch.equal(out[0], pos[0])  # class token kept
    assert torch.allclose(out, ref['visual.positional_embedding'], atol=1e-6)
    # Same grid: returned unchanged; fp16 input works on the CPU.
    assert resize_visual_pos_embed(pos, (14, 14)) is pos
    assert resize_visual_pos_embed(pos.half(), (16, 8)).dtype == torch.float16


def test_resize_non_square_source_fails():
    pos = torch.randn(1 + 16 * 8, 8)
    with pytest.raises(CLIPWeightsError, match='not a square grid'):
        resize_visual_pos_embed(pos, (8, 8))
    assert resize_visual_pos_embed(pos, (16, 8)) is pos


def test_quick_gelu_rule(tiny_weights, openai_archive, tmp_path, reference):
    _, ts_info = load_clip_weights(openai_archive)
    _, sd_info = load_clip_weights(tiny_weights)
    # 1. explicit wins
    assert resolve_quick_gelu(False, ts_info)[0] is False
    assert resolve_quick_gelu(True, sd_info)[0] is True
    # 2. the file says so
    assert resolve_quick_gelu(None, ts_info, None, None)[0] is True
    # 3. the model config says so (-quickgelu names)
    assert resolve_quick_gelu(None, sd_info, True, 'ViT-B-16-quickgelu')[0] is True
    # 4. plain OpenAI-layout state dict for a model with an 'openai' tag
    use, reason = resolve_quick_gelu(None, sd_info, None, 'ViT-B-16')
    assert use is True and 'quick_gelu=False' in reason
    # ... but not for a dict config, nor for a training checkpoint
    assert resolve_quick_gelu(None, sd_info, None, None)[0] is False
    path = tmp_path / 'train.pt'
    torch.save({'state_dict': {f'module.{k}': v for k, v in reference.items()}}, path)
    _, train_info = load_clip_weights(str(path))
    assert resolve_quick_gelu(None, train_info, None, 'ViT-B-16')[0] is False
    # 5. default
    assert resolve_quick_gelu(None, None)[0] is False
    # OpenAI extras in a plain state dict imply OpenAI origin.
    openai_sd = dict(reference, input_resolution=torch.tensor(224))
    path = tmp_path / 'openai_sd.pt'
    torch.save(openai_sd, path)
    _, info = load_clip_weights(str(path))
    assert info['quick_gelu'] is True and info['source'] == 'openai'


@pytest.mark.parametrize('dtype', ['fp32', 'fp16'])
def test_converter(openai_archive, tmp_path, dtype, capsys):
    tool = _load_tool('tools/model_converters/openai_to_safetensors.py')
    dst = tmp_path / 'out' / f'tiny-{dtype}.safetensors'
    assert tool.main([openai_archive, str(dst), '--dtype', dtype]) == 0
    assert 'Wrote' in capsys.readouterr().out
    assert sorted(os.listdir(dst.parent)) == [dst.name]  # no temporary file left
    sd, info = load_clip_weights(str(dst))
    assert info['format'] == 'safetensors'
    assert info['quick_gelu'] is True and info['source'] == 'openai'
    ref, _ = load_clip_weights(openai_archive)
    assert set(sd) == set(ref)
    # The archive is fp16 already, so both precisions are exact.
    for key in ref:
        assert torch.equal(sd[key], ref[key]), key


def test_converter_refuses_non_openai(tiny_weights, tmp_path, capsys):
    tool = _load_tool('tools/model_converters/openai_to_safetensors.py')
    dst = tmp_path / 'x.safetensors'
    assert tool.run_tool(tool.main, [tiny_weights, str(dst)]) == 2  # a user error
    err = capsys.readouterr().err
    assert 'checkpoint error' in err and 'not an OpenAI CLIP archive' in err
    assert '--allow-non-openai' in err and 'Traceback' not in err
    assert not dst.exists()
    assert tool.main([tiny_weights, str(dst), '--allow-non-openai']) == 0
    assert load_clip_weights(str(dst))[1]['quick_gelu'] is False
