"""Modality-specific prompts generated from frozen text knowledge."""

import torch
from torch import nn

from mmdmpt.registry import MODELS


@MODELS.register_module()
class ModalityPromptGenerator(nn.Module):
    """Map modality knowledge to modality-specific prompt tokens.

    For every prompted visual layer ``l`` and modality ``m``:
    ``MSP_l^m = P_l(k_l^m) + E_l``, where ``k_l^m`` (``d_t``) is the frozen
    text encoder's hidden state at the modality word, ``P_l`` a
    ``Linear(d_t, d_v)`` per layer (MaPLe-style coupling) and ``E_l`` a
    learnable ``(num_tokens, d_v)`` offset that turns the single mapped
    vector into ``num_tokens`` tokens.

    Args:
        num_layers (int): Number of prompted visual layers.
        num_tokens (int): Tokens per modality and layer (n_msp).
        text_dim (int): Text width d_t.
        embed_dim (int): Visual width d_v.
        offset_std (float): Std of the normal init of ``E_l``.
            Defaults to 0.02.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        num_tokens: int,
        text_dim: int,
        embed_dim: int,
        offset_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.num_tokens = num_tokens
        self.offset_std = offset_std
        self.mappings = nn.ModuleList([nn.Linear(text_dim, embed_dim) for _ in range(num_layers)])
        self.offsets = nn.Parameter(torch.empty(num_layers, num_tokens, embed_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Linear layers as ``nn.Linear`` does; offsets ~ N(0, offset_std)."""
        for mapping in self.mappings:
            mapping.reset_parameters()
        nn.init.normal_(self.offsets, std=self.offset_std)

    def forward(self, knowledge: torch.Tensor) -> torch.Tensor:
        """Generate the prompts.

        Args:
            knowledge (Tensor): ``(M, num_layers, d_t)``, the knowledge of the
                text layer mapped to each prompted visual layer.

        Returns:
            Tensor: ``(num_layers, M, num_tokens, d_v)``.
        """
        # All layers' mappings in one batched matmul (one kernel instead of
        # num_layers small ones; the parameters stay separate Linear layers).
        weight = torch.stack([mapping.weight for mapping in self.mappings])  # (L, d_v, d_t)
        bias = torch.stack([mapping.bias for mapping in self.mappings])  # (L, d_v)
        mapped = torch.baddbmm(
            bias.unsqueeze(1), knowledge.transpose(0, 1).to(weight.dtype), weight.transpose(1, 2)
        )  # (num_layers, M, d_v)
        return mapped.unsqueeze(2) + self.offsets.unsqueeze(1)

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f'num_layers={self.num_layers}, num_tokens={self.num_tokens}'
