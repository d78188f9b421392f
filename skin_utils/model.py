"""`MultiTaskNet`: a ResNet18 encoder shared by a U-Net decoder (lesion mask) and a classification
head (diagnosis). ResNet18's feature maps for an H x W input, shallowest first::

    stem   (conv1+bn+relu)  64 ch  H/2    <- skip
    layer1 (after maxpool)  64 ch  H/4    <- skip
    layer2                 128 ch  H/8    <- skip
    layer3                 256 ch  H/16   <- skip
    layer4                 512 ch  H/32   -> decoder input, classification head

The decoder upsamples x2 five times back to H x W, concatenating the matching skip. Its widths
shrink with resolution, so the stages at H/2 and H, where the pixels are, stay cheap.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from skin_utils.config import POOLINGS
from skin_utils.labels import NUM_CLASSES

ENCODER_CHANNELS = (64, 64, 128, 256, 512)
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)
NO_WEIGHTS = (None, "", "none", "None", "random", "scratch")
LESION_FLOOR = 0.01  # added to every cell's weight: an empty predicted mask falls back to the average pool


class EncoderWeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for but could not be obtained (e.g. offline)."""


def build_resnet18(encoder_weights: str | None) -> tuple[nn.Module, str]:
    """torchvision's ResNet18 and what its weights are: "imagenet" (downloaded once), "auto" (ImageNet
    when obtainable, else from scratch with a warning), a local ``.pth`` path, or None (from scratch)."""
    if encoder_weights in NO_WEIGHTS:
        # each residual block starts as the identity (last BN scale 0): the network begins shallow and
        # trains faster, which matters in a 5-epoch budget (Goyal et al. 2017)
        return resnet18(weights=None, zero_init_residual=True), "none (trained from scratch)"
    if encoder_weights == "auto":
        try:
            return build_resnet18("imagenet")
        except EncoderWeightsUnavailable as err:
            warnings.warn(f"{err}\nencoder_weights='auto': training the encoder FROM SCRATCH instead.", stacklevel=2)
            return build_resnet18(None)[0], "none (ImageNet weights unavailable, trained from scratch)"
    if encoder_weights == "imagenet":
        try:
            return resnet18(weights=ResNet18_Weights.IMAGENET1K_V1), "ImageNet (torchvision IMAGENET1K_V1)"
        except Exception as err:  # URLError, OSError, RuntimeError (hash), ...
            raise EncoderWeightsUnavailable(
                f"Could not obtain torchvision's ImageNet ResNet18 weights ({type(err).__name__}: {err}).\n"
                "What to do: on a machine with internet run "
                "`python -c \"import torchvision; torchvision.models.resnet18(weights='IMAGENET1K_V1')\"` and copy "
                f"{ResNet18_Weights.IMAGENET1K_V1.url.rsplit('/', 1)[-1]} into "
                f"{Path(torch.hub.get_dir()) / 'checkpoints'}, "
                "or pass encoder_weights='/path/to/resnet18.pth', or encoder_weights=None to train from scratch."
            ) from err
    path = Path(encoder_weights)
    if not path.is_file():
        raise FileNotFoundError(f"encoder_weights={encoder_weights!r} is neither 'imagenet', 'auto', None, nor an "
                                "existing .pth file. Pass one of those.")
    net = resnet18(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state["state_dict"] if isinstance(state, dict) and "state_dict" in state else state
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing:
        raise ValueError(f"{path} is not a ResNet18 state dict: {len(missing)} encoder tensors are missing "
                         f"(first: {missing[:3]}).")
    if unexpected:
        warnings.warn(f"{path}: ignored {len(unexpected)} unexpected keys (first: {unexpected[:3]})")
    return net, f"local file {path}"


class ResNet18Encoder(nn.Module):
    """The five feature maps of the module docstring, shallowest first."""

    def __init__(self, weights: str | None = None):
        super().__init__()
        net, self.weights_used = build_resnet18(weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stem(x)
        f2 = self.layer1(self.pool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        return [f1, f2, f3, f4, self.layer4(f4)]


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """Upsample to the skip's size (nearest), concatenate the skip (if any), two 3x3 conv-BN-ReLU."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = conv_bn_relu(in_ch + skip_ch, out_ch)
        self.conv2 = conv_bn_relu(out_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        return self.conv2(self.conv1(x if skip is None else torch.cat([x, skip], dim=1)))


class UNetDecoder(nn.Module):
    """Five blocks from H/32 back to H: skips at H/16, H/8, H/4, H/2, none at H."""

    def __init__(self, channels=DEFAULT_DECODER_CHANNELS):
        super().__init__()
        if len(channels) != 5:
            raise ValueError(f"decoder_channels needs 5 widths, got {channels!r}")
        skips = (*ENCODER_CHANNELS[-2::-1], 0)  # 256, 128, 64, 64, 0
        ins = (ENCODER_CHANNELS[-1], *channels[:-1])
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, channels))

    def forward(self, features: list[torch.Tensor], out_size) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, [*features[-2::-1], None]):
            x = block(x, skip, out_size if skip is None else skip.shape[-2:])
        return x


def lesion_weighted(features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """``features`` (N, C, h, w) scaled so that their average pool is their mean weighted by the predicted
    lesion (the mask's probability pooled to h x w, plus `LESION_FLOOR`). The weights are detached: the
    diagnosis chooses where to look from the mask, it does not redraw the mask."""
    stride = 2 ** len(ENCODER_CHANNELS)  # 32: each stage halves, rounding up, as ceil_mode does (exports to ONNX)
    w = F.avg_pool2d(mask_logits.detach().float().sigmoid(), stride, ceil_mode=True) + LESION_FLOOR
    return features * (w / w.mean((2, 3), keepdim=True)).to(features.dtype)


class MultiTaskNet(nn.Module):
    """ResNet18 encoder + U-Net decoder + classification head (pool, dropout, linear): a normalised batch
    (N, 3, H, W) -> ``(mask_logits (N, 1, H, W), class_logits (N, num_classes))``. ``pooling="lesion"``
    pools the encoder's last map weighted by the predicted mask (`lesion_weighted`) instead of the frame."""

    def __init__(self, num_classes: int = NUM_CLASSES, encoder_weights: str | None = None,
                 decoder_channels=DEFAULT_DECODER_CHANNELS, dropout: float = 0.2, pooling: str = "average"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is not one of {POOLINGS}.")
        self.config = {"architecture": "MultiTaskNet", "encoder": "resnet18", "num_classes": int(num_classes),
                       "decoder_channels": [int(c) for c in decoder_channels], "dropout": float(dropout),
                       "pooling": pooling}
        self.encoder = ResNet18Encoder(encoder_weights)
        self.encoder_weights_used = self.encoder.weights_used
        self.decoder = UNetDecoder(tuple(decoder_channels))
        self.segmentation_head = nn.Conv2d(decoder_channels[-1], 1, kernel_size=1)
        self.classification_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                                 nn.Linear(ENCODER_CHANNELS[-1], num_classes))

    @classmethod
    def from_config(cls, config: dict) -> MultiTaskNet:
        """The network a checkpoint's ``model_config`` describes (weights not loaded)."""
        built = config.get("architecture", "MultiTaskNet"), config.get("encoder", "resnet18")
        if built != ("MultiTaskNet", "resnet18"):
            raise ValueError(f"This checkpoint was made for architecture={config.get('architecture')!r}, "
                             f"encoder={config.get('encoder')!r}; skin_utils builds MultiTaskNet/resnet18 only.")
        return cls(config["num_classes"], None, tuple(config["decoder_channels"]), config.get("dropout", 0.2),
                   config.get("pooling", "average"))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        mask_logits = self.segmentation_head(self.decoder(features, out_size=x.shape[-2:]))
        deepest = features[-1] if self.config["pooling"] == "average" else lesion_weighted(features[-1], mask_logits)
        return mask_logits, self.classification_head(deepest)
