"""Non-local blocks (embedded Gaussian, 3D over T×H×W) as in the official NL-TSM ResNet-50.

Parameter names follow the official checkpoints: ``layerK.I.block.*`` (the wrapped residual block)
and ``layerK.I.nl.{g.0, theta, phi.0, W.0, W.1}.*``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ops.errors import LSNetError


class NonLocalBlock3D(nn.Module):
    """``(N, C, T, H, W) → same``: ``x + BN(W(softmax(θ(x)ᵀφ(x)) g(x)))``; φ, g max-pool H, W by 2."""

    def __init__(self, in_channels, inter_channels=None):
        super().__init__()
        self.in_channels = in_channels
        self.inter_channels = inter_channels or max(in_channels // 2, 1)
        ci = self.inter_channels
        # registration order (g, W, theta, phi) fixes the state_dict order of the official files
        self.g = nn.Sequential(nn.Conv3d(in_channels, ci, 1), nn.MaxPool3d(kernel_size=(1, 2, 2)))
        self.W = nn.Sequential(nn.Conv3d(ci, in_channels, 1), nn.BatchNorm3d(in_channels))
        nn.init.zeros_(self.W[1].weight)  # starts as the identity
        nn.init.zeros_(self.W[1].bias)
        self.theta = nn.Conv3d(in_channels, ci, 1)
        self.phi = nn.Sequential(nn.Conv3d(in_channels, ci, 1), nn.MaxPool3d(kernel_size=(1, 2, 2)))

    def forward(self, x):
        n = x.size(0)
        g_x = self.g(x).view(n, self.inter_channels, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(n, self.inter_channels, -1).permute(0, 2, 1)
        phi_x = self.phi(x).view(n, self.inter_channels, -1)
        attn = F.softmax(torch.matmul(theta_x, phi_x), dim=-1)
        y = torch.matmul(attn, g_x).permute(0, 2, 1).contiguous()
        y = y.view(n, self.inter_channels, *x.size()[2:])
        return self.W(y) + x


def _block_out_channels(block):
    bn = getattr(block, 'bn3', None) or getattr(block, 'bn2')
    return bn.num_features


class NL3DWrapper(nn.Module):
    """Run a residual ``block`` on ``(N*T, C, H, W)``, then a non-local block over (T, H, W)."""

    def __init__(self, block, num_segments):
        super().__init__()
        self.block = block
        self.nl = NonLocalBlock3D(_block_out_channels(block))
        self.num_segments = num_segments

    def forward(self, x):
        x = self.block(x)
        nt, c, h, w = x.size()
        x = x.view(nt // self.num_segments, self.num_segments, c, h, w).transpose(1, 2)
        x = self.nl(x)
        return x.transpose(1, 2).contiguous().view(nt, c, h, w)


def make_non_local(net, num_segments, stage_segments=None):
    """Wrap every second block (0, 2, …) of ``layer2`` and ``layer3`` of a torchvision ResNet.

    For ResNet-50 this is exactly the official placement (layer2 blocks 0, 2; layer3 0, 2, 4).
    ``stage_segments`` gives the segments each of layer1..4 sees (temporal pool halves them).
    """
    import torchvision
    if not isinstance(net, torchvision.models.ResNet):
        raise LSNetError('--non_local needs a ResNet --arch (resnet18 ... resnet152); got a {} backbone'
                         .format(type(net).__name__))
    segments = stage_segments or [num_segments] * 4
    for name, stage_num_segments in (('layer2', segments[1]), ('layer3', segments[2])):
        stage = getattr(net, name)
        blocks = [NL3DWrapper(b, stage_num_segments) if i % 2 == 0 else b for i, b in enumerate(stage)]
        setattr(net, name, nn.Sequential(*blocks))
