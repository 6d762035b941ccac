"""Small tensor helpers of the model: segment consensus (per-segment scores ``(N, T, K)`` into clip
scores), running means over time, a channel concatenation for compiled code, layout tests."""
import torch
import torch.nn.functional as F

CONSENSUS_TYPES = ('avg', 'identity')


def is_channels_last(x):
    """True for a 4-D map laid out channels_last and not also plain contiguous (as (N, C, 1, 1) maps
    are): the layout an op's result should be given back in."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def memory_format_of(x):
    """``torch.channels_last`` for a map :func:`is_channels_last` says is laid out so, else
    ``torch.contiguous_format``: the format to make a dense copy of ``x``-shaped data in."""
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format


def running_mean(x, dim=1):
    """Mean of the first ``t`` entries along ``dim``, for every ``t``: what an online model has seen so
    far (``(N, T, ...)`` -> same shape; the last entry is the plain mean)."""
    seen = torch.arange(1, x.shape[dim] + 1, device=x.device, dtype=x.dtype)
    return x.cumsum(dim=dim) / seen.view(-1, *([1] * (x.dim() - dim - 1)))


def concat_channels(parts, like):
    """``torch.cat(parts, dim=1)`` of ``(N, C_i, H, W)`` maps, written as one element-wise selection
    by channel, in the memory format of ``like`` (channels_last or contiguous).

    For compiled code only: Inductor lowers a channel concatenation of channels_last maps into a
    kernel that writes channel by channel; the selection fuses into one kernel that writes every
    pixel's channels together (cf. ``ops.temporal_shift.shift_select``).  In eager mode the
    concatenation is cheaper.
    """
    total = sum(p.size(1) for p in parts)
    channel = torch.arange(total, device=parts[-1].device).view(1, total, 1, 1)
    end = total
    out = None
    for part in reversed(parts):
        start = end - part.size(1)
        padded = F.pad(part, (0, 0, 0, 0, start, total - end))
        out = padded if out is None else torch.where(channel < end, padded, out)
        end = start
    if is_channels_last(like):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


class ConsensusModule(torch.nn.Module):
    """``avg``: ``(N, T, K) → (N, 1, K)`` mean over segments; ``identity``: unchanged."""

    def __init__(self, consensus_type, dim=1):
        super().__init__()
        if consensus_type == 'rnn':  # the reference maps 'rnn' to identity
            consensus_type = 'identity'
        if consensus_type not in CONSENSUS_TYPES:
            from ops.errors import LSNetError
            raise LSNetError('unknown --consensus_type {!r} (choose from {})'
                             .format(consensus_type, ', '.join(CONSENSUS_TYPES)))
        self.consensus_type = consensus_type
        self.dim = dim

    def extra_repr(self):
        return self.consensus_type

    def forward(self, x):
        if self.consensus_type == 'avg':
            return x.mean(dim=self.dim, keepdim=True)
        return x
