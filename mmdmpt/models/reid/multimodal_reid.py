"""The top-level multi-modal ReID model."""

import copy
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Set, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModel
from torch import nn

from mmdmpt.registry import MODELS
from mmdmpt.structures import stack_modality_mask
from mmdmpt.utils.errors import ConfigError

from ..utils import count_parameters


def _fill_frozen_keys(
    module: 'MultiModalReID',
    state_dict: dict,
    prefix: str,
    local_metadata: dict,
    strict: bool,
    missing_keys: List[str],
    unexpected_keys: List[str],
    error_msgs: List[str],
) -> None:
    """Load-state-dict pre-hook: fill absent *frozen* entries from the model.

    A trainable-only checkpoint lacks the frozen CLIP weights (and other
    non-trainable entries); they keep the model's current values, i.e. the
    pretrained weights it was built with. Missing *trainable* entries are left
    missing, so strict loading still fails on them.
    """
    trainable = module.trainable_keys()
    filled = []
    for key, value in module.state_dict(keep_vars=True).items():
        full = prefix + key
        if full not in state_dict and key not in trainable:
            state_dict[full] = value.detach()
            filled.append(key)
    if filled:
        print_log(
            f'Loaded a state dict without {len(filled)} frozen entries (e.g. {filled[0]}); '
            'they keep the values the model was built with (its pretrained CLIP weights).',
            logger='current',
        )


@MODELS.register_module()
class MultiModalReID(BaseModel):
    """Multi-modal object ReID: backbone ``(N, M, D)`` features + ReID head.

    Args:
        backbone (dict): Backbone config, e.g. ``dict(type='DMPTCLIPViT', ...)``.
        head (dict): Head config, e.g. ``dict(type='BNNeckHead', ...)``. The
            model passes it ``num_modalities=M`` and ``in_channels=M * D``
            from the backbone (``backbone.num_modalities``,
            ``backbone.out_channels``: the contract of a backbone here); a
            head config may leave both out, and a value it states must agree.
        data_preprocessor (dict | nn.Module, optional): E.g.
            ``dict(type='MultiModalDataPreprocessor')``. Defaults to None
            (MMEngine's ``BaseDataPreprocessor``, which only moves data; a
            Runner fills it from the config's top-level ``data_preprocessor``).
        init_cfg (dict | list[dict], optional): MMEngine init config.
            Defaults to None.

    Note:
        With a frozen backbone only prompt, mapping, bind and head parameters
        require gradients. :meth:`trainable_state_dict` returns only what is
        trained; loading a state dict that lacks frozen entries fills them
        from the current model (one info line), while a missing trainable
        entry still fails under strict loading.
    """

    def __init__(
        self,
        *,
        backbone: dict,
        head: dict,
        data_preprocessor: Optional[Union[dict, nn.Module]] = None,
        init_cfg: Optional[Union[dict, List[dict]]] = None,
    ) -> None:
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        num_mod = int(self.backbone.num_modalities)
        in_channels = num_mod * int(self.backbone.out_channels)
        head = copy.deepcopy(dict(head))
        for key, value in (('in_channels', in_channels), ('num_modalities', num_mod)):
            given = head.get(key)
            if given not in (None, 'auto') and given != value:
                raise ConfigError(
                    f'model.head.{key}={given} but the backbone gives {num_mod} modalities x '
                    f'{self.backbone.out_channels} channels (in_channels {in_channels}); leave '
                    f'model.head.{key} out (it follows the backbone) or set it to {value}.'
                )
            head[key] = value
        self.head = MODELS.build(head)
        if getattr(self.head, 'requires_alignment', False):
            self.head.init_alignment(
                self.backbone.get_visual_projection(), self.backbone.modality_text_features
            )
        self.register_load_state_dict_pre_hook(_fill_frozen_keys)
        counts = count_parameters(self)
        print_log(
            f'MultiModalReID: {counts["trainable_params"]:,} trainable / '
            f'{counts["total_params"]:,} parameters '
            f'({counts["trainable_params_no_classifier"]:,} without the ID classifier = '
            f'{100 * counts["ratio"]:.2f}% of the {counts["backbone_params"]:,}-parameter '
            'CLIP visual tower).',
            logger='current',
        )

    # ------------------------------------------------------------- forward
    def _modality_mask(
        self, inputs: torch.Tensor, data_samples: Optional[Sequence]
    ) -> Optional[torch.Tensor]:
        """The batch's ``(N, M)`` modality mask on the device, or None when all are present.

        The masks are batch metadata on the host (``modality_mask`` in the
        samples' metainfo); checking them there reads no device value, so a
        batch with every modality present costs no host-device sync.
        """
        mask = stack_modality_mask(data_samples, inputs.shape[0], inputs.shape[1], 'cpu')
        if mask is None or bool(mask.numpy().all()):
            return None
        return mask.to(inputs.device)

    def extract_feat(
        self, inputs: torch.Tensor, data_samples: Optional[Sequence] = None
    ) -> torch.Tensor:
        """Per-modality backbone features ``(N, M, D)`` (absent modalities zero)."""
        return self.backbone(inputs, self._modality_mask(inputs, data_samples))

    def forward(
        self,
        inputs: torch.Tensor,
        data_samples: Optional[Sequence] = None,
        mode: str = 'tensor',
    ) -> Union[torch.Tensor, Dict[str, torch.Tensor], list]:
        """Run the model.

        Args:
            inputs (Tensor): ``(N, M, 3, H, W)`` normalised images.
            data_samples (Sequence[DataSample], optional): Per-sample
                annotations; ``modality_mask`` (bool ``(M,)``) is read from
                them when present. Required for ``'loss'``.
            mode (str): ``'tensor'`` -> the test feature ``(N, M*D)``;
                ``'loss'`` -> dict of losses; ``'predict'`` -> data samples
                with ``pred_feature``. Defaults to ``'tensor'``.

        Returns:
            Tensor | dict | list: See ``mode``.
        """
        if mode == 'tensor':
            mask = self._modality_mask(inputs, data_samples)
            feats = self.backbone(inputs, mask)
            return self.head.extract_test_feature(feats, mask)
        if mode == 'loss':
            if not data_samples:
                raise ValueError("mode='loss' needs data_samples with gt_label")
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}"; use "tensor", "loss" or "predict".')

    def loss(self, inputs: torch.Tensor, data_samples: Sequence) -> Dict[str, torch.Tensor]:
        """Return the head's loss dict for a batch."""
        return self.head.loss(self.extract_feat(inputs, data_samples), data_samples)

    def predict(self, inputs: torch.Tensor, data_samples: Optional[Sequence] = None) -> list:
        """Return data samples carrying ``pred_feature`` (``(M*D,)``)."""
        return self.head.predict(self.extract_feat(inputs, data_samples), data_samples)

    # ------------------------------------------------ trainable checkpoints
    def trainable_keys(self) -> Set[str]:
        """State-dict keys of what is trained.

        These are the parameters with ``requires_grad`` and the persistent
        buffers of every module that directly owns such a parameter (e.g. the
        BNNeck's running statistics).
        """
        keys: Set[str] = set()
        for name, module in self.named_modules():
            own = list(module.named_parameters(recurse=False))
            if not any(p.requires_grad for _, p in own):
                continue
            base = f'{name}.' if name else ''
            keys.update(base + n for n, p in own if p.requires_grad)
            non_persistent = getattr(module, '_non_persistent_buffers_set', set())
            keys.update(
                base + n
                for n, b in module.named_buffers(recurse=False)
                if b is not None and n not in non_persistent
            )
        return keys

    def trainable_state_dict(self, keep_vars: bool = False) -> 'OrderedDict[str, torch.Tensor]':
        """The state dict restricted to :meth:`trainable_keys` (a few MB).

        Args:
            keep_vars (bool): Return parameters instead of detached tensors.
                Defaults to False.

        Returns:
            OrderedDict[str, Tensor]: Loadable with ``load_state_dict`` into a
            model built with the same pretrained CLIP file.
        """
        keys = self.trainable_keys()
        full = self.state_dict(keep_vars=keep_vars)
        return OrderedDict((k, v) for k, v in full.items() if k in keys)
