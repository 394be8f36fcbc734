"""BNNeck ReID head with ID, triplet and optional modality losses."""

import copy
import numbers
from typing import Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.structures import DataSample
from torch import nn

from mmdmpt.registry import MODELS
from mmdmpt.structures import stack_modality_mask
from mmdmpt.utils.errors import ConfigError

from ..utils.misc import autocast_off

DEFAULT_LOSS_CLS = dict(type='LabelSmoothCrossEntropy', label_smooth_val=0.1, loss_weight=0.25)
DEFAULT_LOSS_TRIPLET = dict(type='TripletLoss', margin=None, loss_weight=1.0)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is float16/bfloat16 (float32/float64 kept)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _bnneck(channels: int) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(channels)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)  # BNNeck: no shift (Luo et al., 2019)
    return bn


def _classifier(channels: int, num_classes: int, std: float) -> nn.Linear:
    fc = nn.Linear(channels, num_classes, bias=False)
    nn.init.normal_(fc.weight, std=std)
    return fc


@MODELS.register_module()
class BNNeckHead(BaseModule):
    """BNNeck head for multi-modal ReID features.

    The backbone's ``(N, M, D)`` features are flattened to ``(N, M*D)``;
    a BatchNorm1d with a frozen zero bias (the BNNeck) feeds a bias-free
    linear ID classifier. The ID loss is computed on the post-BN logits, the
    triplet loss on the pre-BN feature.

    Optional extras (off by default):

    * ``per_modality_loss=dict(weight=1.0, label_smooth_val=0.1)``: a separate
      BNNeck + classifier per modality on that modality's ``D`` features
      (present samples only), loss ``weight * mean_m CE_m``.
    * ``align_loss=dict(weight=1.0, mode='cosine' | 'contrastive',
      temperature=0.07)``: aligns each present modality's projected class
      token (CLIP's frozen ``visual.proj`` applied to the first ``d_v``
      channels) with that modality's text feature from the frozen text
      encoder. ``'cosine'``: ``1 - cos``; ``'contrastive'``: cross entropy
      over the M modality text features (the right modality is the target).
      Needs :meth:`init_alignment`, which :class:`MultiModalReID` calls.

    Mixed precision: the BNNeck and the ID classifier run in float32 with
    autocast disabled (a small head: no bf16 copy of its weights is made and
    kept for the backward pass), per-modality classifiers' logits may come
    out of autocast in float16/bfloat16, and every loss is computed in
    float32 with autocast disabled (the logits are cast to float32 first; the
    alignment loss projects and normalises float32 copies of the features),
    so the loss values are those of float32 arithmetic on the network's
    outputs. No loss reads a device value on the host.

    Test features (:meth:`predict`) are raw (not L2-normalised; normalising is
    the metric's job): the pre-BN feature for ``test_feature='before'`` or
    the BN output (eval statistics) for ``'after'``; absent modalities'
    slices are zero in both.

    Args:
        in_channels (int): ``M * D`` (2304 for ViT-B/16, 3 modalities).
        num_classes (int): Number of training identities.
        num_modalities (int): M. Defaults to 3.
        loss_cls (dict, optional): ID loss config, None to disable. Defaults
            to ``dict(type='LabelSmoothCrossEntropy', label_smooth_val=0.1,
            loss_weight=0.25)`` (the value of MMPretrain's ``LabelSmoothLoss``
            without its host-side label check).
        loss_triplet (dict, optional): Triplet loss config, None to disable.
            Defaults to ``dict(type='TripletLoss', margin=None,
            loss_weight=1.0)`` (soft margin).
        test_feature (str): ``'before'`` or ``'after'`` the BNNeck.
            Defaults to ``'before'``.
        per_modality_loss (dict, optional): See above. Defaults to None.
        align_loss (dict, optional): See above. Defaults to None.
        classifier_std (float): Std of the classifier's normal init.
            Defaults to 0.001.
        init_cfg (dict | list[dict], optional): MMEngine init config.
            Defaults to None.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_modalities: int = 3,
        loss_cls: Optional[dict] = DEFAULT_LOSS_CLS,
        loss_triplet: Optional[dict] = DEFAULT_LOSS_TRIPLET,
        test_feature: str = 'before',
        per_modality_loss: Optional[dict] = None,
        align_loss: Optional[dict] = None,
        classifier_std: float = 0.001,
        init_cfg: Optional[Union[dict, List[dict]]] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if test_feature not in ('before', 'after'):
            raise ConfigError(f"test_feature must be 'before' or 'after', got {test_feature!r}")
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, numbers.Integral)
            or num_classes < 1
        ):
            raise ConfigError(
                f'model.head.num_classes={num_classes!r}: expected a positive integer. '
                "'auto' is replaced by the number of training ids before the model is built "
                '(the Runner of tools/train.py / tools/test.py, or '
                'mmdmpt.engine.prepare.prepare_config / resolve_num_classes for a model built '
                'by hand).'
            )
        if in_channels % num_modalities:
            raise ConfigError(
                f'in_channels={in_channels} is not divisible by num_modalities={num_modalities}'
            )
        self.in_channels = in_channels
        self.num_classes = num_classes = int(num_classes)
        self.num_modalities = num_modalities
        self.channels_per_modality = in_channels // num_modalities
        self.test_feature = test_feature

        self.bnneck = _bnneck(in_channels)
        self.classifier = _classifier(in_channels, num_classes, classifier_std)
        self.loss_cls = MODELS.build(copy.deepcopy(loss_cls)) if loss_cls else None
        self.loss_triplet = MODELS.build(copy.deepcopy(loss_triplet)) if loss_triplet else None

        self.per_modality_cfg = copy.deepcopy(per_modality_loss) if per_modality_loss else None
        if self.per_modality_cfg is not None:
            cfg = self.per_modality_cfg
            unknown = set(cfg) - {'weight', 'label_smooth_val'}
            if unknown:
                raise ConfigError(f'per_modality_loss: unknown keys {sorted(unknown)}')
            self.modality_bnnecks = nn.ModuleList(
                [_bnneck(self.channels_per_modality) for _ in range(num_modalities)]
            )
            self.modality_classifiers = nn.ModuleList(
                [
                    _classifier(self.channels_per_modality, num_classes, classifier_std)
                    for _ in range(num_modalities)
                ]
            )
            self.modality_loss = MODELS.build(
                dict(
                    type='LabelSmoothCrossEntropy',
                    label_smooth_val=cfg.get('label_smooth_val', 0.1),
                    loss_weight=1.0,
                )
            )

        self.align_cfg = copy.deepcopy(align_loss) if align_loss else None
        if self.align_cfg is not None:
            unknown = set(self.align_cfg) - {'weight', 'mode', 'temperature'}
            if unknown:
                raise ConfigError(f'align_loss: unknown keys {sorted(unknown)}')
            if self.align_cfg.get('mode', 'cosine') not in ('cosine', 'contrastive'):
                raise ConfigError("align_loss.mode must be 'cosine' or 'contrastive'")
            # Filled by init_alignment(); frozen, rebuilt from the backbone at
            # construction, hence not saved in checkpoints.
            self.register_buffer('align_proj', torch.empty(0), persistent=False)
            self.register_buffer('align_text_features', torch.empty(0), persistent=False)

    # ----------------------------------------------------------------- setup
    @property
    def requires_alignment(self) -> bool:
        """Whether :meth:`init_alignment` must be called before training."""
        return self.align_cfg is not None

    def init_alignment(self, proj: torch.Tensor, text_features: torch.Tensor) -> None:
        """Store frozen copies of CLIP's visual projection and text features.

        Args:
            proj (Tensor): ``(d_v, E)`` visual projection.
            text_features (Tensor): ``(M, E)`` modality text features.
        """
        if text_features.shape[0] != self.num_modalities:
            raise ValueError(
                f'{text_features.shape[0]} text features for {self.num_modalities} modalities'
            )
        if proj.shape[1] != text_features.shape[1]:
            raise ValueError('proj and text features have different embedding sizes')
        self.align_proj = proj.detach().clone()
        self.align_text_features = text_features.detach().clone()

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """Yield the ID classifier weights (excluded from the prompt budget)."""
        yield from self.classifier.parameters()
        if self.per_modality_cfg is not None:
            yield from self.modality_classifiers.parameters()

    # -------------------------------------------------------------- helpers
    def _check(self, feats: torch.Tensor) -> None:
        if feats.dim() != 3 or feats.shape[1] * feats.shape[2] != self.in_channels:
            raise ValueError(
                f'BNNeckHead(in_channels={self.in_channels}) expects (N, M, D) features with '
                f'M*D={self.in_channels}, got {tuple(feats.shape)}'
            )

    def _mask(
        self, feats: torch.Tensor, data_samples: Optional[Sequence]
    ) -> Optional[torch.Tensor]:
        return stack_modality_mask(data_samples, feats.shape[0], feats.shape[1], feats.device)

    def extract_test_feature(
        self, feats: torch.Tensor, modality_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Return the ``(N, M*D)`` test feature (raw, not L2-normalised).

        Args:
            feats (Tensor): ``(N, M, D)`` backbone features.
            modality_mask (Tensor, optional): ``(N, M)`` bool. Defaults to None.

        Returns:
            Tensor: Pre-BN (``'before'``) or post-BN (``'after'``) feature with
            absent modalities' slices set to zero.
        """
        self._check(feats)
        flat = feats.flatten(1)
        if self.test_feature == 'before':
            return flat
        out = self.bnneck(flat)
        if modality_mask is not None:
            keep = modality_mask.to(out.device).bool()
            keep = keep.repeat_interleave(feats.shape[2], dim=1)
            out = out * keep.to(out.dtype)
        return out

    # ----------------------------------------------------------------- losses
    def loss(
        self, feats: torch.Tensor, data_samples: Sequence[DataSample]
    ) -> Dict[str, torch.Tensor]:
        """Compute the training losses.

        Args:
            feats (Tensor): ``(N, M, D)`` backbone features.
            data_samples (Sequence[DataSample]): With ``gt_label``; optionally
                ``modality_mask``.

        Returns:
            dict[str, Tensor]: ``loss_cls``, ``loss_triplet`` and, when
            enabled, ``loss_cls_modality`` and ``loss_align`` (summed by the
            model), plus the statistic ``acc_top1`` (percent, no ``loss`` in
            its key, only logged).
        """
        self._check(feats)
        # gt_label is on the device already (the data preprocessor moves the data
        # samples), so this is one concatenation and no host copy.
        labels = torch.cat([torch.as_tensor(s.gt_label).reshape(-1) for s in data_samples])
        labels = labels.to(feats.device).long()
        if labels.numel() != feats.shape[0]:
            raise ValueError(f'{labels.numel()} labels for {feats.shape[0]} samples')
        needs_mask = self.per_modality_cfg is not None or self.align_cfg is not None
        mask = self._mask(feats, data_samples) if needs_mask else None
        flat = feats.flatten(1)
        with autocast_off(flat.device):  # a small fp32 head: no weight copies under AMP
            logits = self.classifier(self.bnneck(_at_least_fp32(flat)))
        losses: Dict[str, torch.Tensor] = {}
        if self.loss_cls is not None:
            with autocast_off(logits.device):
                losses['loss_cls'] = self.loss_cls(_at_least_fp32(logits), labels)
        if self.loss_triplet is not None:
            losses['loss_triplet'] = self.loss_triplet(flat, labels)
        if self.per_modality_cfg is not None:
            losses['loss_cls_modality'] = self._per_modality_loss(feats, labels, mask)
        if self.align_cfg is not None:
            losses['loss_align'] = self._align_loss(feats, mask)
        with torch.no_grad():
            losses['acc_top1'] = (logits.argmax(1) == labels).float().mean() * 100.0
        return losses

    def _per_modality_loss(
        self, feats: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        terms = []
        # Keep every per-modality parameter in the graph (DDP) even if unused.
        total = sum(p.sum() for p in self.modality_classifiers.parameters()) * 0.0
        total = total + sum(bn.weight.sum() for bn in self.modality_bnnecks) * 0.0
        for m in range(self.num_modalities):
            keep = (
                mask[:, m]
                if mask is not None
                else torch.ones_like(labels, dtype=torch.bool, device=feats.device)
            )
            if int(keep.sum()) < 2:
                continue  # BatchNorm needs two samples
            x = self.modality_bnnecks[m](feats[keep, m])
            logits = self.modality_classifiers[m](x)
            with autocast_off(logits.device):
                terms.append(self.modality_loss(_at_least_fp32(logits), labels[keep]))
        if terms:
            total = total + torch.stack(terms).mean()
        return self.per_modality_cfg.get('weight', 1.0) * total

    def _align_loss(self, feats: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        if self.align_proj.numel() == 0:
            raise RuntimeError(
                'align_loss needs init_alignment(proj, text_features); build the head through '
                'MultiModalReID, which calls it with the backbone values.'
            )
        cfg = self.align_cfg
        num_samples, num_mod = feats.shape[:2]
        keep = (
            mask.to(feats.device).bool()
            if mask is not None
            else torch.ones(num_samples, num_mod, dtype=torch.bool, device=feats.device)
        )
        if not bool(keep.any()):
            return feats.sum() * 0.0
        d_v = self.align_proj.shape[0]
        with autocast_off(feats.device):
            x = _at_least_fp32(feats[..., :d_v])
            proj = x @ self.align_proj.to(x.dtype)  # (N, M, E)
            img = F.normalize(proj, dim=-1)
            txt = F.normalize(self.align_text_features.to(x.dtype), dim=-1)  # (M, E)
            if cfg.get('mode', 'cosine') == 'cosine':
                cos = (img * txt.unsqueeze(0)).sum(-1)  # (N, M)
                loss = (1.0 - cos)[keep].mean()
            else:
                logits = img @ txt.t() / cfg.get('temperature', 0.07)  # (N, M, M)
                target = torch.arange(num_mod, device=feats.device).expand(num_samples, -1)
                loss = F.cross_entropy(logits[keep], target[keep])
        return cfg.get('weight', 1.0) * loss

    # -------------------------------------------------------------- predict
    def predict(
        self, feats: torch.Tensor, data_samples: Optional[Sequence[DataSample]] = None
    ) -> List[DataSample]:
        """Write ``pred_feature`` (``(M*D,)`` float, raw) on each data sample.

        Args:
            feats (Tensor): ``(N, M, D)`` backbone features.
            data_samples (Sequence[DataSample], optional): Created when None.

        Returns:
            list[DataSample]: The data samples with ``pred_feature``.
        """
        mask = self._mask(feats, data_samples)
        test = self.extract_test_feature(feats, mask).detach()
        if data_samples is None:
            data_samples = [DataSample() for _ in range(test.shape[0])]
        for sample, feature in zip(data_samples, test):
            sample.set_field(feature, 'pred_feature', field_type='data')
        return list(data_samples)
