"""Domain discriminators: one small MLP per adversarial branch, logits out."""

from __future__ import annotations

from torch import Tensor, nn

FUSED = "fused"  # the branch name of the fused embedding


class DomainDiscriminator(nn.Module):
    """``(B, D) -> (B,)`` logit that a window comes from the "positive" domain.

    No BatchNorm: a client's batch holds one domain only, and batch statistics
    would leak that to the discriminator.
    """

    def __init__(self, in_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)


def build_discriminators(dims: dict[str, int], hidden: int = 64) -> nn.ModuleDict:
    """One discriminator per branch name -> embedding size."""
    return nn.ModuleDict({name: DomainDiscriminator(dim, hidden) for name, dim in dims.items()})
