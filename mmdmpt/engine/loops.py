"""Test loop with missing-modality evaluation."""

import copy
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.runner import TestLoop
from torch.utils.data import DataLoader

from mmdmpt.datasets import set_missing_in_pipeline
from mmdmpt.registry import LOOPS
from mmdmpt.structures import parse_missing
from mmdmpt.utils.errors import ConfigError


@LOOPS.register_module()
class ReIDTestLoop(TestLoop):
    """Test loop that can evaluate with some modalities absent.

    Each setting rebuilds the test dataloader with
    ``LoadMultiModalImages(missing_modalities=...)``, so absent images are never
    read, and the model sees the samples' ``modality_mask``. The settings'
    metrics are printed as one table and, with ``out_file``, written as JSON.
    Rank-list pictures are drawn by :class:`~mmdmpt.engine.hooks.RankListHook`
    (``tools/test.py --show-dir``), during the first setting.

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
            raise ConfigError('missing-modality testing needs test_dataloader as a config dict')
        self.out_file = out_file
        #: The modalities left out in the evaluation running now.
        self.current_missing: Tuple[str, ...] = ()

    def run(self) -> dict:
        """Evaluate once per setting and return the metrics of the first.

        The dataloader of each setting with missing modalities is built for
        that setting only; the loop's own dataloader is restored afterwards,
        so a second ``runner.test()`` starts from the full set again.
        """
        table: OrderedDict[str, dict] = OrderedDict()
        original = self.dataloader
        try:
            for missing in self.settings:
                present = '+'.join(m for m in self.modalities if m not in missing)
                self.dataloader = original
                self.current_missing = tuple(missing)
                if missing:
                    cfg = set_missing_in_pipeline(self._dataloader_cfg, missing)
                    self.dataloader = self.runner.build_dataloader(cfg, seed=self.runner.seed)
                    print_log(
                        f'Testing with modalities: {present} (missing: {",".join(missing)})',
                        logger='current',
                    )
                table[present] = super().run()
        finally:
            self.dataloader = original
            self.current_missing = ()
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
