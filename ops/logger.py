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


class RunLogger:
    """Writes ``log.txt``, ``log.csv``, ``args.txt`` and tensorboardX events into ``log_dir``."""

    def __init__(self, log_dir, enabled=True, append=False, tensorboard=True):
        self.enabled = enabled
        self.log_dir = log_dir
        self._writer = None
        self._text = None
        if not enabled:
            return
        os.makedirs(log_dir, exist_ok=True)
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
