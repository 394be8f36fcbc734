"""Test loop with missing-modality evaluation."""

import copy
import itertools
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.runner import TestLoop
from torch.utils.data import DataLoader

from mmdmpt.registry import LOOPS

LOADER_TYPE = 'LoadMultiModalImages'


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
        ValueError: If a name is not one of ``modalities`` or all would be
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
        raise ValueError(
            f'missing: unknown modality {unknown}; the dataset has {list(modalities)} '
            '(or use "all").'
        )
    if set(names) >= set(modalities):
        raise ValueError(
            f'missing: leaving out {names} would leave no modality; keep at least one '
            f'of {list(modalities)}.'
        )
    return [tuple(m for m in modalities if m in names)]


def set_missing_in_pipeline(dataloader_cfg: dict, missing: Sequence[str]) -> dict:
    """Return a copy of ``dataloader_cfg`` whose loader drops ``missing``."""
    cfg = copy.deepcopy(dataloader_cfg)
    pipeline = cfg.get('dataset', {}).get('pipeline', [])
    loaders = [t for t in pipeline if isinstance(t, dict) and t.get('type') == LOADER_TYPE]
    if not loaders:
        raise ValueError(
            f'missing-modality testing needs a {LOADER_TYPE} transform in '
            'test_dataloader.dataset.pipeline; none was found.'
        )
    for transform in loaders:
        transform['missing_modalities'] = tuple(missing)
    return cfg


@LOOPS.register_module()
class ReIDTestLoop(TestLoop):
    """Test loop that can evaluate with some modalities absent.

    Each setting rebuilds the test dataloader with
    ``LoadMultiModalImages(missing_modalities=...)``, so absent images are never
    read, and the model sees the samples' ``modality_mask``.

    Args:
        runner: The runner.
        dataloader (dict): Config of the test dataloader.
        evaluator (dict | list): Config of the evaluator.
        fp16 (bool): Test with autocast. Defaults to False.
        missing (str | Sequence[str], optional): Modalities to leave out, or
            ``'all'`` for every non-empty subset (one table). Defaults to None.
        out_file (str, optional): Write the metrics of every setting to this
            JSON file. Defaults to None.
    """

    def __init__(
        self,
        runner,
        dataloader: Union[DataLoader, Dict],
        evaluator: Union[Dict, List],
        fp16: bool = False,
        missing: Union[None, str, Sequence[str]] = None,
        out_file: Optional[str] = None,
    ) -> None:
        self._dataloader_cfg = copy.deepcopy(dataloader) if isinstance(dataloader, dict) else None
        super().__init__(runner, dataloader, evaluator, fp16)
        self.modalities = tuple(self.dataloader.dataset.metainfo['modalities'])
        self.settings = parse_missing(missing, self.modalities)
        if self.settings != [()] and self._dataloader_cfg is None:
            raise ValueError('missing-modality testing needs test_dataloader as a config dict')
        self.out_file = out_file

    def run(self) -> dict:
        """Evaluate once per setting and return the metrics of the first."""
        table: OrderedDict[str, dict] = OrderedDict()
        for missing in self.settings:
            present = '+'.join(m for m in self.modalities if m not in missing)
            if missing:
                cfg = set_missing_in_pipeline(self._dataloader_cfg, missing)
                self.dataloader = self.runner.build_dataloader(cfg, seed=self.runner.seed)
                print_log(
                    f'Testing with modalities: {present} (missing: {",".join(missing)})',
                    logger='current',
                )
            table[present] = super().run()
        if len(table) > 1:
            print_log(format_table(table), logger='current')
        if self.out_file and is_main_process():
            out_dir = osp.dirname(osp.abspath(self.out_file))
            os.makedirs(out_dir, exist_ok=True)
            with open(self.out_file, 'w') as f:
                json.dump(
                    {k: {n: float(v) for n, v in m.items()} for k, m in table.items()}, f, indent=2
                )
        return next(iter(table.values()))


def format_table(table: Dict[str, dict]) -> str:
    """Format ``{modalities: metrics}`` as a fixed-width text table."""
    names = []
    for metrics in table.values():
        names += [n for n in metrics if n not in names]
    width = max(len(k) for k in table) + 2
    header = 'modalities'.ljust(width) + ''.join(n.split('/')[-1].rjust(9) for n in names)
    lines = ['Missing-modality evaluation', header, '-' * len(header)]
    for present, metrics in table.items():
        values = ''.join(f'{metrics.get(n, float("nan")):9.2f}' for n in names)
        lines.append(present.ljust(width) + values)
    return '\n'.join(lines)
