"""Per-modality encoder branches, chosen by name from :data:`ENCODERS`."""

from __future__ import annotations

from torch import Tensor, nn

from fedsense.registry import Registry

ENCODERS: Registry[type[nn.Module]] = Registry("encoder")


@ENCODERS.register("conv1d")
class Conv1dEncoder(nn.Module):
    """Small 1-D CNN for one sensor stream: ``(B, C, T) -> (B, embed_dim)``.

    Conv -> BatchNorm -> ReLU blocks, max-pooling between blocks, global
    average pooling over time and a linear projection. Global pooling makes
    the branch independent of T, so sensors with other rates fit unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        channels: list[int],
        kernel_size: int,
        embed_dim: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for i, out in enumerate(channels):
            layers += [
                nn.Conv1d(width, out, kernel_size, padding=kernel_size // 2, bias=False),
                nn.BatchNorm1d(out),
                nn.ReLU(inplace=True),
            ]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool1d(2))
            width = out
        self.features = nn.Sequential(*layers)
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, embed_dim), nn.ReLU())
        self.embed_dim = embed_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.features(x).mean(dim=-1))
