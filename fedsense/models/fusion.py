"""Fusion of per-modality embeddings, chosen by name from :data:`FUSIONS`.

Every fusion takes ``embeddings: {modality: (B, D)}`` and ``mask: {modality:
(B,)}`` (1 where the modality is present; ``None``: every modality of every
window is) and returns ``(B, out_dim)``. A missing modality is masked, never
a crash.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedsense.registry import Registry

FUSIONS: Registry[type[nn.Module]] = Registry("fusion")


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenate embeddings in modality order; absent modalities are zeros."""

    def __init__(self, modalities: list[str], embed_dim: int) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.out_dim = embed_dim * len(modalities)

    def forward(self, embeddings: dict[str, Tensor], mask: dict[str, Tensor] | None) -> Tensor:
        if mask is None:  # nothing to mask: no multiplications in an exported graph either
            return torch.cat([embeddings[m] for m in self.modalities], dim=-1)
        parts = [embeddings[m] * mask[m].unsqueeze(-1) for m in self.modalities]
        return torch.cat(parts, dim=-1)


@FUSIONS.register("attention")
class AttentionFusion(nn.Module):
    """Cross-modal attention: each modality token attends to the present ones;
    the present tokens are then mean-pooled into one ``(B, embed_dim)`` vector."""

    def __init__(self, modalities: list[str], embed_dim: int, heads: int = 4) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.token = nn.Parameter(torch.zeros(len(modalities), embed_dim))  # modality embedding
        heads = heads if embed_dim % heads == 0 else 1
        self.attn = nn.MultiheadAttention(embed_dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(embed_dim)
        self.out_dim = embed_dim

    def forward(self, embeddings: dict[str, Tensor], mask: dict[str, Tensor] | None) -> Tensor:
        if mask is None:
            ones = torch.ones(next(iter(embeddings.values())).shape[0], device=self.token.device)
            mask = {m: ones for m in self.modalities}
        tokens = torch.stack([embeddings[m] for m in self.modalities], dim=1) + self.token
        present = torch.stack([mask[m] for m in self.modalities], dim=1) > 0  # (B, M)
        # A window with no modality at all would make attention NaN: let it see itself.
        safe = present | ~present.any(dim=1, keepdim=True)
        attended, _ = self.attn(tokens, tokens, tokens, key_padding_mask=~safe)
        tokens = self.norm(tokens + attended)
        weights = safe.float().unsqueeze(-1) * present.float().unsqueeze(-1)
        return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
