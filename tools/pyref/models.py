"""PyTorch reference models. The state_dict key names are the tensor names of the
edgenn weights format; the engine's builders (include/edgenn/nn/) use the same names.

Families (hyperparameters go into the weights file's metadata):
  resnet_cifar   depth 6n+2, base width w (stages w, 2w, 4w), BasicBlock with 1x1 projection shortcut
  mobilenet_v2   width multiplier, stem channels/stride, inverted-residual settings, last channel
  meanet         a frozen resnet_cifar main block + adaptive block (raw input) + extension block
                 (on concat(main features, adaptive features)) with a classifier over the hard classes
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(cin, cout, k, stride, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut (identity, or 1x1 conv + BN when the shape changes), ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = conv_bn(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x if self.downsample is None else self.downsample(x)
        return F.relu(out + sc)


def _stage(cin, cout, n, stride):
    blocks = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout, 1) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


class ResNetCifar(nn.Module):
    def __init__(self, depth=20, width=16, in_ch=1, num_classes=10):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"resnet_cifar depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.hparams = dict(depth=depth, width=width, in_ch=in_ch, num_classes=num_classes)
        self.conv1 = nn.Conv2d(in_ch, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = _stage(width, width, n, 1)
        self.layer2 = _stage(width, 2 * width, n, 2)
        self.layer3 = _stage(2 * width, 4 * width, n, 2)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def head(self, f):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))

    def forward(self, x):
        return self.head(self.features(x))


def make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, k, stride, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """[1x1 expand-BN-ReLU6] - 3x3 depthwise-BN-ReLU6 - 1x1 project-BN, residual when stride 1 and cin == cout."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, 1, 1))
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


# (expansion t, channels c, repeats n, first stride s), adapted to 28x28: 28 -> 14 -> 7.
MBV2_SETTINGS_28 = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2],
                    [6, 96, 3, 1], [6, 160, 3, 1], [6, 320, 1, 1]]


class MobileNetV2(nn.Module):
    def __init__(self, width_mult=1.0, stem_channels=32, stem_stride=1, last_channel=1280,
                 in_ch=1, num_classes=10, settings=None):
        super().__init__()
        settings = settings or MBV2_SETTINGS_28
        self.hparams = dict(width_mult=width_mult, stem_channels=stem_channels, stem_stride=stem_stride,
                            last_channel=last_channel, in_ch=in_ch, num_classes=num_classes,
                            settings=[list(s) for s in settings])
        cin = make_divisible(stem_channels * width_mult)
        last = make_divisible(last_channel * max(1.0, width_mult))
        feats = [ConvBNAct(in_ch, cin, 3, stem_stride)]
        for t, c, n, s in settings:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        feats.append(ConvBNAct(cin, last, 1, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class AdaptiveBlock(nn.Module):
    """Runs on the raw input: conv3x3-BN-ReLU stem, then BasicBlocks given as (channels, stride)."""

    def __init__(self, in_ch, stem, blocks):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers, cin = [], stem
        for c, s in blocks:
            layers.append(BasicBlock(cin, c, s))
            cin = c
        self.blocks = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x):
        return self.blocks(F.relu(self.bn1(self.conv1(x))))


class ExtensionBlock(nn.Module):
    """BasicBlocks on concat(main features, adaptive features), global average pool, fc over the hard classes."""

    def __init__(self, in_ch, blocks, num_hard):
        super().__init__()
        layers, cin = [], in_ch
        for c, s in blocks:
            layers.append(BasicBlock(cin, c, s))
            cin = c
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_hard)

    def forward(self, f):
        f = self.blocks(f)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))


class MEANet(nn.Module):
    def __init__(self, main, hard_classes, adaptive_stem=16, adaptive_blocks=((16, 1), (32, 2), (64, 2)),
                 extension_blocks=((64, 1), (64, 1), (64, 1), (64, 1))):
        super().__init__()
        self.main = main
        self.hard_classes = list(hard_classes)
        in_ch = main.hparams["in_ch"]
        self.adaptive = AdaptiveBlock(in_ch, adaptive_stem, adaptive_blocks)
        main_ch = 4 * main.hparams["width"]
        self.extension = ExtensionBlock(main_ch + self.adaptive.out_channels, extension_blocks,
                                        len(self.hard_classes))
        self.hparams = dict(main=main.hparams, adaptive_stem=adaptive_stem,
                            adaptive_blocks=[list(b) for b in adaptive_blocks],
                            extension_blocks=[list(b) for b in extension_blocks],
                            hard_classes=self.hard_classes)

    def freeze_main(self):
        for p in self.main.parameters():
            p.requires_grad_(False)
        self.main.eval()

    def train(self, mode=True):
        super().train(mode)
        self.main.eval()  # the main block is frozen: its BN stays in eval mode
        return self

    def extension_logits(self, x, main_features):
        f = torch.cat([main_features, self.adaptive(x)], dim=1)
        return self.extension(f)

    def forward(self, x):
        with torch.no_grad():
            fm = self.main.features(x)
        return self.main.head(fm), self.extension_logits(x, fm)


def init_adaptive_from_main(meanet):
    """Copy the main block's stem and the first block of each stage into the adaptive block
    wherever the shapes match (adaptive.conv1/bn1 <- main.conv1/bn1, adaptive.blocks.i <-
    main.layer{i+1}.0). Returns the names of the copied modules."""
    pairs = [(meanet.adaptive.conv1, meanet.main.conv1, "conv1"), (meanet.adaptive.bn1, meanet.main.bn1, "bn1")]
    for i, blk in enumerate(meanet.adaptive.blocks):
        stage = getattr(meanet.main, f"layer{i + 1}", None)
        if stage is not None:
            pairs.append((blk, stage[0], f"blocks.{i}"))
    copied = []
    for dst, src, name in pairs:
        sd_src, sd_dst = src.state_dict(), dst.state_dict()
        if sd_src.keys() == sd_dst.keys() and all(sd_src[k].shape == sd_dst[k].shape for k in sd_src):
            dst.load_state_dict(sd_src)
            copied.append(name)
    return copied


def build(arch, hparams):
    if arch == "resnet_cifar":
        return ResNetCifar(**hparams)
    if arch == "mobilenet_v2":
        return MobileNetV2(**hparams)
    if arch == "meanet":
        hp = dict(hparams)
        main = ResNetCifar(**hp.pop("main"))
        return MEANet(main, **hp)
    raise ValueError(f"unknown architecture {arch!r}")


def count_macs(model, in_shape=(1, 1, 28, 28)):
    """Conv and linear multiply-accumulates for one input (BN, activations, pooling ignored)."""
    total = [0]

    def conv_hook(m, i, o):
        total[0] += o.numel() // o.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def fc_hook(m, i, o):
        total[0] += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(fc_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(in_shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total[0]
