"""Segment consensus: combine per-segment scores ``(N, T, K)`` into clip scores."""
import torch

CONSENSUS_TYPES = ('avg', 'identity')


def running_mean(x, dim=1):
    """Mean of the first ``t`` entries along ``dim``, for every ``t``: what an online model has seen so
    far (``(N, T, ...)`` -> same shape; the last entry is the plain mean)."""
    seen = torch.arange(1, x.shape[dim] + 1, device=x.device, dtype=x.dtype)
    return x.cumsum(dim=dim) / seen.view(-1, *([1] * (x.dim() - dim - 1)))


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
