"""Run logs: plain-text log, per-epoch CSV, args file and tensorboardX scalars.

Only the main process writes; other processes get a logger whose methods do nothing.
"""
import csv
import json
import logging
import os

log = logging.getLogger(__name__)

CSV_FIELDS = ['epoch', 'lr', 'train_loss', 'train_top1', 'train_top5', 'val_loss', 'val_top1', 'val_top5',
              'best_top1', 'clips_per_s', 'seconds']


LOG_FILES = ('log.txt', 'log.csv', 'args.txt')
EVENTS_PREFIX = 'events.out.tfevents.'
PREVIOUS = 'previous_runs'


def archive_previous_logs(log_dir):
    """Move the logs an earlier run left in ``log_dir`` to ``log_dir/previous_runs/<k>/``; return it or None.

    A new run under an existing name (no ``--resume``) starts fresh logs; the old ones are kept apart,
    so a run that fails at once loses nothing and TensorBoard shows the two runs as separate curves.
    """
    names = [n for n in sorted(os.listdir(log_dir)) if n in LOG_FILES or n.startswith(EVENTS_PREFIX)]
    if not names:
        return None
    k = 1
    while os.path.exists(os.path.join(log_dir, PREVIOUS, str(k))):
        k += 1
    dest = os.path.join(log_dir, PREVIOUS, str(k))
    os.makedirs(dest)
    for name in names:
        os.replace(os.path.join(log_dir, name), os.path.join(dest, name))
    return dest


class RunLogger:
    """Writes ``log.txt``, ``log.csv``, ``args.txt`` and tensorboardX events into ``log_dir``;
    a fresh run (``append=False``) first moves an earlier run's logs aside (:func:`archive_previous_logs`)."""

    def __init__(self, log_dir, enabled=True, append=False, tensorboard=True):
        self.enabled = enabled
        self.log_dir = log_dir
        self._writer = None
        self._text = None
        if not enabled:
            return
        os.makedirs(log_dir, exist_ok=True)
        archived = None if append else archive_previous_logs(log_dir)
        self._text = logging.FileHandler(os.path.join(log_dir, 'log.txt'), mode='a' if append else 'w')
        self._text.setFormatter(logging.Formatter('%(asctime)s %(message)s'))
        logging.getLogger().addHandler(self._text)
        csv_path = os.path.join(log_dir, 'log.csv')
        fresh = not (append and os.path.exists(csv_path))
        self._csv_file = open(csv_path, 'w' if fresh else 'a', newline='')
        self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_FIELDS)
        if fresh:
            self._csv.writeheader()
            self._csv_file.flush()
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._writer = SummaryWriter(log_dir=log_dir)
        if archived:
            log.info('logs of an earlier run named %s moved to %s', os.path.basename(log_dir), archived)

    def save_args(self, args_dict):
        if self.enabled:
            with open(os.path.join(self.log_dir, 'args.txt'), 'w') as f:
                json.dump(args_dict, f, indent=1, sort_keys=True, default=str)
                f.write('\n')

    def scalar(self, tag, value, step):
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def scalars(self, values, step):
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def epoch_row(self, row):
        if self.enabled:
            self._csv.writerow({k: row.get(k, '') for k in CSV_FIELDS})
            self._csv_file.flush()

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if not self.enabled:
            return
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._csv_file.close()
        logging.getLogger().removeHandler(self._text)
        self._text.close()
