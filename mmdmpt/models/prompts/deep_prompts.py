"""Layer-wise learnable prompt tokens (semantic and bind prompts)."""

import math

import torch
from torch import nn

from mmdmpt.registry import MODELS


@MODELS.register_module()
class DeepPrompts(nn.Module):
    """Learnable prompt tokens, one set per layer (VPT-deep).

    Used for the modality-independent semantic prompts ``SP_l`` and for the
    PromptIBind bind prompts ``B_l``.

    Args:
        num_layers (int): Number of layers with their own tokens.
        num_tokens (int): Tokens per layer.
        embed_dim (int): Visual width d_v.
        patch_dim (int): ``3 * patch_h * patch_w``, used for VPT's uniform
            init bound ``sqrt(6 / (patch_dim + embed_dim))``. Defaults to 768
            (16x16 patches).
    """

    def __init__(
        self, *, num_layers: int, num_tokens: int, embed_dim: int, patch_dim: int = 768
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.num_tokens = num_tokens
        self.patch_dim = patch_dim
        self.prompts = nn.Parameter(torch.empty(num_layers, num_tokens, embed_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform init as in VPT (Jia et al., 2022)."""
        bound = math.sqrt(6.0 / float(self.patch_dim + self.prompts.shape[-1]))
        nn.init.uniform_(self.prompts, -bound, bound)

    def forward(self, index: int) -> torch.Tensor:
        """Return the ``(num_tokens, d_v)`` tokens of the ``index``-th layer."""
        return self.prompts[index]

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f'num_layers={self.num_layers}, num_tokens={self.num_tokens}'
