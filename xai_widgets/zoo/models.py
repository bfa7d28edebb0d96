"""Architectures of the model zoo: small enough for a laptop CPU, built to exercise the engine's hard cases.

- ``ShapesVGG``: a plain conv/ReLU/max-pool stack and a dense head (Simonyan and Zisserman 2015, in small).
- ``ShapesResNet``: torchvision-style basic blocks (He et al. 2016) with BatchNorm, one in-place activation
  module reused twice per block and ``out += identity``; with ``negative_slope`` the activation is a
  LeakyReLU (for activation maximization).
- ``DigitsMLP``: Flatten → Linear(196, 256) → ReLU → Dropout(p) → Linear(256, 10) on 14×14 digits, with
  readable layer names; the dropout rate is the lever of the interaction-order analysis (ActSpec).
- ``tabular_mlp``: Linear → tanh → Linear → sigmoid → Linear on the 30 standardised features of the
  breast-cancer table (feature vectors, saturating units: DLBacktrace's case).
- ``shapes_vit``: torchvision's ``VisionTransformer`` (Dosovitskiy et al. 2021) in small, a hybrid whose patch
  embedding is a ShapesResNet trunk, so the tour shows a transformer without downloads.

The shapes models map 64×64 RGB pictures to 6 logits and keep their last spatial map at 8×8, so Grad-CAM at
the default layer is sharp enough to point at the object; the MLPs map 14×14 grey digits to 10 logits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:  # torchvision loads torch._dynamo (seconds): imported where the ViT is built
    from torchvision.models.vision_transformer import VisionTransformer


class ShapesVGG(nn.Module):
    """A plain stack in the manner of VGG: 3×3 conv + ReLU, with a 2×2 max-pool after each of the first three
    convs (64 → 8 px) and a fourth conv + ReLU on the 8×8 map; then global max pooling and a dense head
    (Linear → ReLU → Dropout → Linear).

    Why global max pooling (as in weakly supervised localisation, Oquab et al. 2015): with a flattened 8×8
    map the head learns position-specific weights and Grad-CAM maps scatter (the object was hit in 62% of
    images); with average pooling the small object drowns in background and this net, which has no
    BatchNorm, does not leave the loss plateau at ln 6.
    """

    def __init__(
        self, num_classes: int = 6, widths: tuple[int, ...] = (16, 32, 64, 96), hidden: int = 64
    ) -> None:
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        cin = 3
        for index, width in enumerate(widths, start=1):
            layers += [
                (f"conv{index}", nn.Conv2d(cin, width, 3, padding=1)),
                (f"relu{index}", nn.ReLU(inplace=True)),
            ]
            if index < len(widths):
                layers.append((f"pool{index}", nn.MaxPool2d(2)))
            cin = width
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("flatten", nn.Flatten()),
                    ("fc1", nn.Linear(cin, hidden)),
                    ("relu", nn.ReLU(inplace=True)),
                    ("dropout", nn.Dropout(0.2)),
                    ("fc2", nn.Linear(hidden, num_classes)),
                ]
            )
        )

        for (
            module
        ) in self.modules():  # torchvision's VGG initialisation: a plain deep stack needs it to train
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)))


class BasicBlock(nn.Module):
    """Two 3×3 conv + BatchNorm with a shortcut, written as in torchvision: one activation module used twice,
    and the shortcut added in place (``out += identity``)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, negative_slope: float | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = _activation(negative_slope)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def _activation(negative_slope: float | None) -> nn.Module:
    if negative_slope is None:
        return nn.ReLU(inplace=True)
    return nn.LeakyReLU(negative_slope, inplace=True)


class ShapesResNet(nn.Module):
    """A small ResNet: conv stem + max-pool (64 → 32), three stages of one basic block (32, 16, 8 px),
    global average pooling and a linear head."""

    def __init__(
        self,
        num_classes: int = 6,
        widths: tuple[int, int, int] = (16, 32, 64),
        negative_slope: float | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = _activation(negative_slope)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(BasicBlock(widths[0], widths[0], 1, negative_slope))
        self.layer2 = nn.Sequential(BasicBlock(widths[0], widths[1], 2, negative_slope))
        self.layer3 = nn.Sequential(BasicBlock(widths[1], widths[2], 2, negative_slope))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def digits_mlp(dropout: float, hidden: int = 256, side: int = 14, num_classes: int = 10) -> nn.Sequential:
    """One hidden ReLU layer on flattened ``side``×``side`` digits, with dropout ``p`` after the ReLU."""
    return nn.Sequential(
        OrderedDict(
            [
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(side * side, hidden)),
                ("relu", nn.ReLU()),
                ("dropout", nn.Dropout(dropout)),
                ("fc2", nn.Linear(hidden, num_classes)),
            ]
        )
    )


def tabular_mlp(features: int = 30, num_classes: int = 2) -> nn.Sequential:
    """A small MLP for standardised feature vectors with saturating units: Linear → tanh → Linear → sigmoid →
    Linear, so DLBacktrace's saturation ranges (tanh (−2, 2), sigmoid (−4, 4)) decide where relevance goes."""
    return nn.Sequential(
        OrderedDict(
            [
                ("fc1", nn.Linear(features, 16)),
                ("tanh", nn.Tanh()),
                ("fc2", nn.Linear(16, 8)),
                ("sigmoid", nn.Sigmoid()),
                ("fc3", nn.Linear(8, num_classes)),
            ]
        )
    )


def shapes_vit(num_classes: int = 6) -> VisionTransformer:
    """A small hybrid ViT on 64×64 pictures (Dosovitskiy et al. 2021, section 3.1 "Hybrid architecture"): the
    patch embedding is a ShapesResNet trunk (stem and three stages, 64 × 8×8 features, so one token per 8×8
    patch) and a 1×1 projection; then 3 encoder blocks of width 64 with 4 heads and an MLP of 128, the class
    token read by a linear head. torchvision's ``VisionTransformer`` with this ``conv_proj``.

    Why hybrid: a plain or convolutional-stem ViT stayed near chance (ln 6 loss) for several epochs on the
    cluttered shapes, too long to train on a shared laptop CPU; with the trunk of the trained ``shapes-resnet``
    (frozen) the transformer learns in a few epochs. Each token then carries its patch's convolutional
    features, and the attention decides how they reach the class token.
    """
    trunk = ShapesResNet(num_classes)
    embed = nn.Sequential(
        OrderedDict(
            [
                ("conv1", trunk.conv1),
                ("bn1", trunk.bn1),
                ("relu", trunk.relu),
                ("maxpool", trunk.maxpool),
                ("layer1", trunk.layer1),
                ("layer2", trunk.layer2),
                ("layer3", trunk.layer3),
                ("proj", nn.Conv2d(64, 64, 1)),
            ]
        )
    )
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        image_size=64,
        patch_size=8,
        num_layers=3,
        num_heads=4,
        hidden_dim=64,
        mlp_dim=128,
        num_classes=num_classes,
    )
    model.conv_proj = embed
    return model


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "shapes-vgg": ShapesVGG,
    "shapes-resnet": ShapesResNet,
    "shapes-leaky": partial(ShapesResNet, negative_slope=0.01),
    "mnist-mlp-d0": partial(digits_mlp, 0.0),
    "mnist-mlp-d20": partial(digits_mlp, 0.2),
    "mnist-mlp-d50": partial(digits_mlp, 0.5),
    "shapes-vit": shapes_vit,
    "tabular-mlp": tabular_mlp,
}
"""Zoo name → a constructor of the untrained architecture."""
