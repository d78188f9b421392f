"""`MultiTaskNet`: a ResNet18 encoder shared by a U-Net decoder (lesion mask) and a
classification head (diagnosis).

The split follows segmentation_models_pytorch: an encoder that returns a list of feature maps,
a decoder that turns them into a full-resolution feature map, two small heads, and a base model
that owns ``forward``.

Feature maps of ResNet18 for an input of size H x W::

    stem   (conv1+bn+relu)  64 ch  H/2       <- skip
    layer1 (after maxpool)  64 ch  H/4       <- skip
    layer2                 128 ch  H/8       <- skip
    layer3                 256 ch  H/16      <- skip
    layer4                 512 ch  H/32      -> decoder input, classification head

The decoder upsamples x2 five times, concatenating the matching skip at each step, back to H x W.
Its widths (256, 128, 64, 32, 16) shrink with resolution, so the two stages that run at H/2 and
H (where the pixels are) stay cheap: that is where a naive U-Net with constant widths spends
most of its time.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from skin_utils.labels import NUM_CLASSES

ENCODER_CHANNELS = (64, 64, 128, 256, 512)
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)


class EncoderWeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for but could not be obtained (e.g. offline)."""


def build_resnet18(encoder_weights: str | None) -> tuple[nn.Module, str]:
    """torchvision's ResNet18 and a description of the weights it got.

    ``encoder_weights``: "imagenet" (torchvision's own weights, downloaded once into the torch
    hub cache; when they cannot be obtained this raises `EncoderWeightsUnavailable` saying what
    to do), "auto" (ImageNet when obtainable, otherwise from scratch with a warning that says
    so), a local ``.pth`` path, or None (from scratch).
    """
    from torchvision.models import ResNet18_Weights, resnet18

    # From scratch, each residual block starts as the identity (last BN scale 0): the network
    # begins shallow and trains faster, which matters in a 5-epoch budget (Goyal et al. 2017).
    if encoder_weights in (None, "", "none", "None", "random", "scratch"):
        return resnet18(weights=None, zero_init_residual=True), "none (trained from scratch)"
    if encoder_weights == "auto":
        try:
            return build_resnet18("imagenet")
        except EncoderWeightsUnavailable as err:
            warnings.warn(f"{err}\nencoder_weights='auto': training the encoder FROM SCRATCH instead.",
                          stacklevel=2)
            return (resnet18(weights=None, zero_init_residual=True),
                    "none (ImageNet weights unavailable, trained from scratch)")
    if encoder_weights == "imagenet":
        try:
            return resnet18(weights=ResNet18_Weights.IMAGENET1K_V1), "ImageNet (torchvision IMAGENET1K_V1)"
        except Exception as err:  # URLError, OSError, RuntimeError (hash), ...
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise EncoderWeightsUnavailable(
                "Could not obtain torchvision's ImageNet ResNet18 weights "
                f"({type(err).__name__}: {err}).\n"
                "What to do: on a machine with internet run "
                "`python -c \"import torchvision; torchvision.models.resnet18(weights='IMAGENET1K_V1')\"` "
                f"and copy {ResNet18_Weights.IMAGENET1K_V1.url.rsplit('/', 1)[-1]} into {cache}, "
                "or pass encoder_weights='/path/to/resnet18.pth', "
                "or encoder_weights=None to train from scratch."
            ) from err
    path = Path(encoder_weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"encoder_weights={encoder_weights!r} is neither 'imagenet', 'auto', None, nor an existing "
            ".pth file. Pass one of those."
        )
    net = resnet18(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing:
        raise ValueError(
            f"{path} is not a ResNet18 state dict: {len(missing)} encoder tensors are missing "
            f"(first: {missing[:3]})."
        )
    if unexpected:
        warnings.warn(f"{path}: ignored {len(unexpected)} unexpected keys (first: {unexpected[:3]})")
    return net, f"local file {path}"


class ResNet18Encoder(nn.Module):
    """Returns the five feature maps listed in the module docstring, shallowest first."""

    out_channels = ENCODER_CHANNELS

    def __init__(self, weights: str | None = None):
        super().__init__()
        net, self.weights_used = build_resnet18(weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4,
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stem(x)
        f2 = self.layer1(self.pool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        f5 = self.layer4(f4)
        return [f1, f2, f3, f4, f5]


class ConvBnReLU(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Module):
    """Upsample x2 (nearest), concatenate the skip (if any), two 3x3 conv-BN-ReLU."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = ConvBnReLU(in_ch + skip_ch, out_ch)
        self.conv2 = ConvBnReLU(out_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UNetDecoder(nn.Module):
    """Five decoder blocks from H/32 back to H: skips at H/16, H/8, H/4, H/2, none at H."""

    def __init__(self, encoder_channels=ENCODER_CHANNELS, channels=DEFAULT_DECODER_CHANNELS):
        super().__init__()
        if len(channels) != 5:
            raise ValueError(f"decoder_channels needs 5 widths, got {channels!r}")
        skips = list(encoder_channels[:-1][::-1]) + [0]  # 256, 128, 64, 64, 0
        ins = [encoder_channels[-1]] + list(channels[:-1])
        self.blocks = nn.ModuleList(
            DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, channels)
        )

    def forward(self, features: list[torch.Tensor], out_size) -> torch.Tensor:
        skips = features[:-1][::-1] + [None]
        x = features[-1]
        for block, skip in zip(self.blocks, skips):
            x = block(x, skip, skip.shape[-2:] if skip is not None else out_size)
        return x


class ClassificationHead(nn.Sequential):
    """Global average pool of the deepest features, dropout, linear layer."""

    def __init__(self, in_ch: int = ENCODER_CHANNELS[-1], num_classes: int = NUM_CLASSES,
                 dropout: float = 0.2):
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_ch, num_classes)
        )


class MultiTaskNet(nn.Module):
    """ResNet18 encoder + U-Net decoder + classification head.

    ``forward(x)`` takes a normalised float batch (N, 3, H, W) with H and W any size (multiples
    of 32 are fastest) and returns ``(mask_logits (N, 1, H, W), class_logits (N, num_classes))``.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, encoder_weights: str | None = None,
                 decoder_channels=DEFAULT_DECODER_CHANNELS, dropout: float = 0.2):
        super().__init__()
        self.config = {
            "architecture": "MultiTaskNet",
            "encoder": "resnet18",
            "num_classes": int(num_classes),
            "decoder_channels": [int(c) for c in decoder_channels],
            "dropout": float(dropout),
        }
        self.encoder = ResNet18Encoder(encoder_weights)
        self.decoder = UNetDecoder(ENCODER_CHANNELS, tuple(decoder_channels))
        self.encoder_weights_used = self.encoder.weights_used
        self.segmentation_head = nn.Conv2d(decoder_channels[-1], 1, kernel_size=1)
        self.classification_head = ClassificationHead(ENCODER_CHANNELS[-1], num_classes, dropout)

    @classmethod
    def from_config(cls, config: dict) -> "MultiTaskNet":
        if config.get("architecture", "MultiTaskNet") != "MultiTaskNet" or config.get("encoder", "resnet18") != "resnet18":
            raise ValueError(
                f"This checkpoint was made for architecture={config.get('architecture')!r}, "
                f"encoder={config.get('encoder')!r}; skin_utils builds MultiTaskNet/resnet18 only."
            )
        return cls(num_classes=config["num_classes"], encoder_weights=None,
                   decoder_channels=tuple(config["decoder_channels"]),
                   dropout=config.get("dropout", 0.2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        decoded = self.decoder(features, out_size=x.shape[-2:])
        return self.segmentation_head(decoded), self.classification_head(features[-1])
