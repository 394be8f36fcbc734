"""The modality vocabulary of mmdmpt, in one place.

A *modality* is named by a short lowercase word. The three benchmarks'
modalities, in their default order, are :data:`MODALITIES`; datasets of
one's own may use any names (``'depth'``, ``'event'``, ...). Everything that
needs the names -- datasets, the data preprocessor, the backbone, the loops,
the tools -- takes them from here, and a config states them once (its
``modalities`` variable).
"""

import itertools
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from mmdmpt.utils.errors import ConfigError

__all__ = [
    'MODALITIES',
    'DEFAULT_MODALITY_WORDS',
    'check_modalities',
    'modality_words',
    'parse_missing',
    'stack_modality_mask',
]

#: The benchmarks' modalities in their default order: visible, near-infrared,
#: thermal-infrared.
MODALITIES: Tuple[str, ...] = ('rgb', 'nir', 'tir')

#: The word naming each known modality in the text template of the
#: modality-specific prompts ("a {word} photo of a {object}.").
DEFAULT_MODALITY_WORDS: Dict[str, str] = {
    'rgb': 'visible',
    'nir': 'near-infrared',
    'tir': 'thermal-infrared',
    'depth': 'depth',
    'event': 'event camera',
    'swir': 'short-wave infrared',
    'uv': 'ultraviolet',
}

_NAME = re.compile(r'[a-z][a-z0-9_]*')


def check_modalities(
    modalities: Union[str, Sequence[str]],
    key: str = 'modalities',
    allowed: Optional[Sequence[str]] = None,
) -> Tuple[str, ...]:
    """Validate a list of modality names; the order given is kept.

    Args:
        modalities (str | Sequence[str]): The names (one name counts as a
            list of one).
        key (str): The config key the names come from, for messages.
            Defaults to ``'modalities'``.
        allowed (Sequence[str], optional): The names a reader knows (e.g. a
            benchmark's folders). Defaults to None: any lowercase name
            (``[a-z][a-z0-9_]*``).

    Returns:
        tuple[str]: The names.

    Raises:
        ConfigError: On an empty list, a repeated, malformed or (with
            ``allowed``) unknown name.
    """
    if isinstance(modalities, str):
        modalities = (modalities,)
    try:
        names = tuple(modalities)
    except TypeError:
        raise ConfigError(
            f'{key}={modalities!r}: expected a sequence of modality names, e.g. {MODALITIES}'
        ) from None
    if not names:
        expected = tuple(allowed) if allowed is not None else MODALITIES
        raise ConfigError(f'{key} must name at least one modality (e.g. {expected}), got ()')
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(
                f'{key}={names}: modality names are lowercase words ([a-z][a-z0-9_]*), got {name!r}'
            )
        if allowed is not None and name not in allowed:
            raise ConfigError(
                f'{key}={names}: unknown modality {name!r}; expected names among {tuple(allowed)}'
            )
    if len(set(names)) != len(names):
        raise ConfigError(f'{key} must not repeat a name, got {names}')
    return names


def modality_words(
    modalities: Sequence[str],
    words: Optional[Union[Mapping[str, str], Sequence[str]]] = None,
    key: str = 'modality_words',
) -> Tuple[str, ...]:
    """The template word of each modality.

    Args:
        modalities (Sequence[str]): The modality names.
        words (Mapping | Sequence, optional): ``name -> word`` (entries
            override :data:`DEFAULT_MODALITY_WORDS`) or one word per
            modality. Defaults to None (the defaults).
        key (str): The config key, for messages. Defaults to
            ``'modality_words'``.

    Returns:
        tuple[str]: One word per modality.

    Raises:
        ConfigError: When a modality has no word.
    """
    modalities = tuple(modalities)
    if words is not None and not isinstance(words, Mapping):
        words = tuple(str(w) for w in words)
        if len(words) != len(modalities):
            raise ConfigError(
                f'{key}: {len(words)} words for {len(modalities)} modalities {modalities}'
            )
        return words
    table = dict(DEFAULT_MODALITY_WORDS)
    table.update(words or {})
    missing = [m for m in modalities if m not in table]
    if missing:
        raise ConfigError(
            f'{key}: no word for the modalities {missing} in the text template; known words '
            f'exist for {tuple(DEFAULT_MODALITY_WORDS)}. Give one, e.g. {key}=dict('
            f"{missing[0]}='{missing[0]}')."
        )
    return tuple(str(table[m]) for m in modalities)


def parse_missing(
    missing: Union[None, str, Sequence[str]], modalities: Sequence[str]
) -> List[Tuple[str, ...]]:
    """Turn a ``--missing`` value into the list of modality sets to leave out.

    Args:
        missing: ``None`` (nothing missing), ``'all'`` (every non-empty subset
            of ``modalities`` kept, one evaluation each, the full set first), or
            comma-separated names / a sequence of names to leave out.
        modalities: The dataset's modalities, in order.

    Returns:
        A list of tuples of missing modality names, one per evaluation.

    Raises:
        ConfigError: If a name is not one of ``modalities`` or all would be
            left out.
    """
    modalities = tuple(modalities)
    if missing is None:
        return [()]
    if isinstance(missing, str) and missing.strip().lower() == 'all':
        settings = []
        for keep in range(len(modalities), 0, -1):
            for kept in itertools.combinations(modalities, keep):
                settings.append(tuple(m for m in modalities if m not in kept))
        return settings
    names = missing.split(',') if isinstance(missing, str) else list(missing)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in modalities]
    if unknown:
        raise ConfigError(
            f'missing: unknown modality {unknown}; the dataset has {list(modalities)} '
            '(or use "all").'
        )
    if set(names) >= set(modalities):
        raise ConfigError(
            f'missing: leaving out {names} would leave no modality; keep at least one '
            f'of {list(modalities)}.'
        )
    return [tuple(m for m in modalities if m in names)]


def stack_modality_mask(
    data_samples: Optional[Sequence],
    num_samples: int,
    num_modalities: int,
    device=None,
):
    """Collect ``modality_mask`` from data samples into an ``(N, M)`` bool tensor.

    Each sample may carry ``modality_mask`` (bool ``(M,)``, True where the
    modality is present) in its metainfo or data fields (see
    ``docs/contracts.md``). Samples without it count as fully present.

    Args:
        data_samples (Sequence, optional): The batch's data samples.
        num_samples (int): N.
        num_modalities (int): M.
        device (torch.device, optional): Device of the result. Defaults to None.

    Returns:
        Tensor | None: ``(N, M)`` bool, or None when no sample carries a mask
        (meaning all modalities are present).

    Raises:
        ValueError: If a mask does not have M entries or the number of data
            samples differs from N.
    """
    import torch

    if not data_samples:
        return None
    if len(data_samples) != num_samples:
        raise ValueError(f'{len(data_samples)} data samples for {num_samples} inputs')
    masks = []
    for sample in data_samples:
        mask = getattr(sample, 'modality_mask', None)
        if mask is None and isinstance(sample, Mapping):
            mask = sample.get('modality_mask')
        masks.append(None if mask is None else torch.as_tensor(mask).reshape(-1).bool())
    if all(m is None for m in masks):
        return None
    rows = []
    for mask in masks:
        if mask is None:
            mask = torch.ones(num_modalities, dtype=torch.bool)
        if mask.numel() != num_modalities:
            raise ValueError(
                f'modality_mask has {mask.numel()} entries but the model has {num_modalities} '
                'modalities'
            )
        rows.append(mask.cpu())
    return torch.stack(rows).to(device)
