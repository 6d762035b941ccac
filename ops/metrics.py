"""Accuracy bookkeeping shared by training, validation and testing.

``topk_correct`` / ``accuracy`` score a batch; ``AverageMeter`` keeps a running mean and
``EpochMeter`` an epoch's loss and top-1/top-5 sums; ``summarize``
turns a test run's video scores into the report (top-1/top-5, mean class accuracy, per class
accuracy / precision / recall / F1, per class group); ``plot_confusion`` draws the row-normalised
confusion matrix of the most-confused classes.
"""
import time

import numpy as np
import torch

from ops.errors import LSNetError


class AverageMeter:
    """Running value, sum, count and average of a scalar."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.val = 0.0
        self.sum = 0.0
        self.count = 0
        self.avg = 0.0

    def update(self, val, n=1):
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n
        self.avg = self.sum / self.count if self.count else 0.0


class EpochMeter:
    """Sums of ``[loss·n, top-1 hits, top-5 hits, n]`` over an epoch; means in percent, clips/s."""

    def __init__(self):
        self.sums = torch.zeros(4, dtype=torch.float64)
        self.t0 = time.time()

    def add(self, sums):
        self.sums += sums

    @property
    def count(self):
        return int(self.sums[3].item())

    def _mean(self, i, scale=1.0):
        return scale * self.sums[i].item() / max(self.sums[3].item(), 1)

    @property
    def loss(self):
        return self._mean(0)

    @property
    def top1(self):
        return self._mean(1, 100.0)

    @property
    def top5(self):
        return self._mean(2, 100.0)

    @property
    def clips_per_s(self):
        return self.sums[3].item() / max(time.time() - self.t0, 1e-9)

    def result(self):
        return {'loss': self.loss, 'top1': self.top1, 'top5': self.top5, 'clips_per_s': self.clips_per_s}


def topk_correct(output, target, topk=(1,)):
    """Number of samples whose label is among the top-k scores, for each k.

    output: (N, num_class) scores; target: (N,) labels. k larger than num_class counts as num_class.
    """
    maxk = min(max(topk), output.size(1))
    pred = output.topk(maxk, 1, True, True)[1]
    hit = pred.eq(target.view(-1, 1))
    return [hit[:, :min(k, maxk)].any(dim=1).sum().item() for k in topk]


def accuracy(output, target, topk=(1,)):
    """Precision@k in percent for each k (reference semantics; k is capped at num_class)."""
    n = max(target.size(0), 1)
    return [100.0 * c / n for c in topk_correct(output, target, topk)]


def confusion(labels, preds, num_class):
    """(num_class, num_class) counts: row = true label, column = prediction."""
    from sklearn.metrics import confusion_matrix
    return confusion_matrix(labels, preds, labels=list(range(num_class))).astype(float)


def summarize(scores, labels, categories, groups):
    """Metrics dict (percent): top1, top5, mean class accuracy; per class with videos its accuracy,
    precision, recall and F1 (scikit-learn; 0 where undefined) and their macro means; per group."""
    from sklearn.metrics import precision_recall_fscore_support
    num_class = scores.shape[1]
    preds = scores.argmax(1)
    k = min(5, num_class)
    top5 = np.argsort(-scores, axis=1)[:, :k]
    cm = confusion(labels, preds, num_class)
    counts = cm.sum(1)
    hits = np.diag(cm)
    present = counts > 0
    prf = precision_recall_fscore_support(labels, preds, labels=list(range(num_class)), zero_division=0)[:3]
    per_class = []
    for c in range(num_class):
        if present[c]:
            per_class.append({'class': c, 'name': categories[c] if c < len(categories) else str(c),
                              'count': int(counts[c]), 'acc': 100.0 * hits[c] / counts[c],
                              'precision': 100.0 * float(prf[0][c]), 'recall': 100.0 * float(prf[1][c]),
                              'f1': 100.0 * float(prf[2][c])})
    res = {'videos': int(len(labels)),
           'top1': 100.0 * float((preds == labels).mean()) if len(labels) else 0.0,
           'top5': 100.0 * float((top5 == labels[:, None]).any(1).mean()) if len(labels) else 0.0,
           'mean_class_acc': 100.0 * float(np.mean(hits[present] / counts[present])) if present.any() else 0.0,
           'macro': {name: 100.0 * float(v[present].mean()) if present.any() else 0.0
                     for name, v in zip(('precision', 'recall', 'f1'), prf)},
           'per_class': per_class, 'groups': []}
    for name, members in (groups or {}).items():
        members = [int(m) for m in members]
        bad = [m for m in members if not 0 <= m < num_class]
        if bad:
            raise LSNetError('class group {!r} names label {} outside 0..{}'.format(name, bad[0], num_class - 1))
        mask = np.isin(labels, members)
        if not mask.any():
            continue
        within = np.array(members)[scores[mask][:, members].argmax(1)]
        res['groups'].append({'group': name, 'classes': members, 'count': int(mask.sum()),
                              'acc': 100.0 * float((preds[mask] == labels[mask]).mean()),
                              'within_group_acc': 100.0 * float((within == labels[mask]).mean())})
    return res


def most_confused(cm, k=30):
    """Label-ordered indices of the ``k`` classes with the most confusion: off-diagonal mass of the
    row-normalised (num_class, num_class) matrix ``cm``, as a true class (row) plus as a prediction
    (column).  All classes when there are at most ``k``."""
    n = len(cm)
    if n <= k:
        return np.arange(n)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    off = norm - np.diag(np.diag(norm))
    mass = off.sum(0) + off.sum(1)
    return np.sort(np.argsort(-mass, kind='stable')[:k])


def plot_confusion(labels, preds, categories, path, top_k=30):
    """Draw the row-normalised confusion matrix (rows true, columns predicted, class names on the
    axes) to ``path`` (.png/.pdf/.svg) with matplotlib's Agg canvas; more than ``top_k`` classes:
    only the :func:`most_confused` ones, as the title says.  Returns the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    n = len(categories)
    cm = confusion(labels, preds, n)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    idx = most_confused(cm, top_k)
    shown = norm[np.ix_(idx, idx)]
    names = [str(categories[i]) for i in idx]
    k = len(idx)
    title = ('Confusion matrix, rows normalised: all {} classes'.format(n) if k == n else
             'Confusion matrix, rows normalised over all {} classes:\nthe {} most-confused classes '
             '(off-diagonal mass as true class + as prediction)'.format(n, k))
    side = max(5.0, 0.3 * k + 3.0)
    fig = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(shown, cmap='Blues', vmin=0.0, vmax=1.0, interpolation='nearest')
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel('predicted class')
    ax.set_ylabel('true class')
    ax.set_title(title, fontsize=9)
    for r in range(k):
        for c in range(k):
            if shown[r, c] >= 0.005:
                ax.text(c, r, '{:.0f}'.format(100 * shown[r, c]), ha='center', va='center', fontsize=5,
                        color='white' if shown[r, c] > 0.5 else 'black')
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label='fraction of the true class')
    fig.savefig(path, dpi=100, bbox_inches='tight')
    return title
