"""The model zoo as data, and the download of one of its files: resumable, atomic, verified.

:data:`OFFICIAL` lists every checkpoint file the TSM reference README
(github.com/mit-han-lab/temporal-shift-module, README.md) links, with the top-1 accuracies it
reports and the protocol of each; :data:`OURS` lists our own published checkpoints (none yet).
A file's URL is ``base_url + '/' + name``; the official host has moved twice
(:data:`FORMER_BASE_URLS`), so every download takes a ``base_url`` override for a mirror.

:func:`download` fetches into ``NAME.part`` (resuming it with an HTTP Range request when a
previous transfer was cut), verifies it (:func:`verify`: ``weights_only`` load, the model its name
or stored config describes, every key matched), then renames it to ``NAME``. A file that fails
verification, or a URL that answers 404, leaves nothing behind; only an interrupted transfer from
a server that supports Range keeps its ``.part`` (the next run resumes it).
``tools/download_pretrained.py`` is the command line; ``hubconf.py`` downloads through it too.
"""
import http.client
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Optional, Tuple

from ops.errors import LSNetError

log = logging.getLogger(__name__)

OFFICIAL_BASE_URL = 'https://hanlab18.mit.edu/projects/tsm/models'
# Where the reference README pointed before (2019-2020 and 2021-2023; 2020-2021).
FORMER_BASE_URLS = ('https://hanlab.mit.edu/projects/tsm/models', 'https://file.lzhu.me/projects/tsm/models')
LIST_HINT = 'python tools/download_pretrained.py --list'
CHUNK = 1 << 16


@dataclass(frozen=True)
class Protocol:
    """A testing protocol: how the reference states it, and the ``test_models.py`` flags that run it."""
    label: str
    test_args: str


UNIFORM_1CROP = Protocol('uniform, 1 clip, center crop', '--test_crops=1 --batch_size=64')
UNIFORM_10CROP = Protocol('uniform, 1 clip, 10 crops', '--test_crops=10 --batch_size=64')
UNIFORM_FLOW = Protocol('uniform, 1 clip', '--test_crops=1 --batch_size=64')
DENSE_10CLIP = Protocol('dense, 10 clips, 3 full-res crops', '--test_crops=3 --batch_size=8 --dense_sample --full_res')
STH_1CLIP = Protocol('1 clip, center crop', '--batch_size=72 -j 24 --test_crops=1')
STH_2CLIP = Protocol('full res, 2 clips, 3 crops', '--batch_size=72 -j 24 --test_crops=3 --twice_sample')


@dataclass(frozen=True)
class Result:
    """A reported accuracy (%): ``frames`` test segments per clip under ``protocol``."""
    top1: float
    frames: int
    protocol: Protocol
    top5: Optional[float] = None


DATASETS = {'kinetics': 'Kinetics-400', 'something': 'Something-Something V1',
            'somethingv2': 'Something-Something V2'}


@dataclass(frozen=True)
class ZooEntry:
    """One checkpoint file: ``name`` (its file name), the ``test_models.py`` dataset it was trained on,
    its training ``segments``, a ``model`` description and its reported ``results`` (the first one's
    protocol is the printed test command)."""
    name: str
    dataset: str
    segments: int
    model: str
    results: Tuple[Result, ...]
    base_url: str = OFFICIAL_BASE_URL

    def url(self, base_url=None):
        return '{}/{}'.format((base_url or self.base_url).rstrip('/'), self.name)

    def test_command(self, path):
        """The reference's ``test_models.py`` command for this file at ``path``, under its first protocol."""
        first = self.results[0]
        return 'python test_models.py {} --weights={} --test_segments={} {}'.format(
            self.dataset, path, first.frames, first.protocol.test_args)

    def results_text(self):
        """e.g. ``71.2 (8 frames, uniform, 1 clip, center crop); 72.8 (...)``."""
        return '; '.join('{}{} ({} frames, {})'.format(r.top1, '' if r.top5 is None else ' / top-5 {}'.format(r.top5),
                                                      r.frames, r.protocol.label) for r in self.results)


def _official(name, model, *results):
    dataset = name.split('_')[1]
    segments = int(re.search(r'_segment(\d+)_', name).group(1))
    return ZooEntry(name, dataset, segments, model, tuple(results))


# In the reference README's order (its two Kinetics tables both list the TSN file: one entry here).
OFFICIAL = (
    _official('TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth', 'TSN ResNet-50',
              Result(68.8, 8, UNIFORM_1CROP), Result(69.9, 8, UNIFORM_10CROP), Result(70.6, 8, DENSE_10CLIP)),
    _official('TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense.pth', 'TSM ResNet-50',
              Result(74.1, 8, DENSE_10CLIP)),
    _official('TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense_nl.pth', 'NL TSM ResNet-50',
              Result(75.6, 8, DENSE_10CLIP)),
    _official('TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth', 'TSM MobileNetV2',
              Result(69.5, 8, DENSE_10CLIP)),
    _official('TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth', 'TSM ResNet-50',
              Result(71.2, 8, UNIFORM_1CROP), Result(72.8, 8, UNIFORM_10CROP)),
    _official('TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment16_e50.pth', 'TSM ResNet-50',
              Result(72.6, 16, UNIFORM_1CROP), Result(73.7, 16, UNIFORM_10CROP)),
    _official('TSM_kinetics_Flow_resnet50_shift8_blockres_avg_segment8_e50.pth', 'TSM ResNet-50, optical flow',
              Result(55.7, 8, UNIFORM_FLOW, top5=79.5)),
    _official('TSM_something_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth', 'TSM ResNet-50',
              Result(45.6, 8, STH_1CLIP), Result(47.2, 8, STH_2CLIP)),
    _official('TSM_something_RGB_resnet50_shift8_blockres_avg_segment16_e45.pth', 'TSM ResNet-50',
              Result(47.2, 16, STH_1CLIP), Result(48.4, 16, STH_2CLIP)),
    _official('TSM_something_RGB_resnet101_shift8_blockres_avg_segment8_e45.pth', 'TSM ResNet-101',
              Result(46.9, 8, STH_1CLIP), Result(48.7, 8, STH_2CLIP)),
    _official('TSM_somethingv2_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth', 'TSM ResNet-50',
              Result(61.2, 8, STH_2CLIP)),
    _official('TSM_somethingv2_RGB_resnet50_shift8_blockres_avg_segment16_e45.pth', 'TSM ResNet-50',
              Result(63.1, 16, STH_2CLIP)),
    _official('TSM_somethingv2_RGB_resnet101_shift8_blockres_avg_segment8_e45.pth', 'TSM ResNet-101',
              Result(63.3, 8, STH_2CLIP)),
)

# Our own trained checkpoints, once published (ZooEntry with their own base_url).
OURS = ()


def entries():
    """Every downloadable entry: the official files, then ours."""
    return OFFICIAL + OURS


def find(name, table=None):
    """The entry called ``name`` (its file name, ``.pth`` optional); an unknown name raises."""
    for entry in entries() if table is None else table:
        if name in (entry.name, entry.name[:-len('.pth')]):
            return entry
    raise LSNetError('unknown model-zoo name {!r} (see the names with: {})'.format(name, LIST_HINT))


# ---------------------------------------------------------------------- tables

def format_table(table=None):
    """Plain-text listing (``--list``): per entry its name, then dataset, model, segments, results."""
    table = entries() if table is None else table
    lines = []
    for title, group in (('official TSM model zoo', [e for e in table if e in OFFICIAL]),
                         ('our checkpoints', [e for e in table if e not in OFFICIAL])):
        lines.append('{} ({} files):'.format(title, len(group)))
        if not group:
            lines.append('  none published yet')
        for e in group:
            lines.append('  ' + e.name)
            lines.append('      {}, {}, {} segments; top-1 {}'.format(
                DATASETS.get(e.dataset, e.dataset), e.model, e.segments, e.results_text()))
    lines.append('URL: BASE_URL/NAME, BASE_URL {} by default (former hosts: {}).'.format(
        OFFICIAL_BASE_URL, ', '.join(FORMER_BASE_URLS)))
    return '\n'.join(lines)


def markdown_tables():
    """The tables of ``pretrained/README.md`` (``tests/test_download.py`` checks the two agree)."""
    head = ['| file | dataset | model | segments | top-1 % (test frames, protocol) |', '|---|---|---|---:|---|']

    def rows(group):
        return ['| [`{}`]({}) | {} | {} | {} | {} |'.format(
            e.name, e.url(), DATASETS.get(e.dataset, e.dataset), e.model, e.segments, e.results_text())
            for e in group]
    ours = head + rows(OURS) if OURS else ['None published yet.']
    return '\n'.join(['### Official TSM model zoo', ''] + head + rows(OFFICIAL)
                     + ['', '### Our checkpoints', ''] + ours) + '\n'


# ---------------------------------------------------------------------- download

def verify(path, name=None):
    """Load checkpoint ``path`` (``weights_only=True``), build the model its stored config or file
    ``name`` describes and load it with every key matched; returns the ModelConfig."""
    from ops.checkpoint import load_checkpoint, load_weights
    from ops.config import config_from_checkpoint
    from ops.models import build_model
    name = name or os.path.basename(path)
    _sniff(path)
    ckpt = load_checkpoint(path)
    cfg = config_from_checkpoint(name, ckpt, pretrain='none')
    load_weights(build_model(cfg), ckpt, finetune=False, source=name)
    return cfg


def _sniff(path):
    """Raise unless the file starts like a torch checkpoint: a zip archive (torch >= 1.6) or a pickle
    (the legacy format of the 2019 zoo files). Catches the HTML page a moved host answers with."""
    with open(path, 'rb') as f:
        head = f.read(64)
    if head.startswith(b'PK\x03\x04') or head.startswith(b'\x80'):
        return
    if head.lstrip().startswith(b'<'):
        raise LSNetError('{} is an HTML/XML page, not a checkpoint (has the host moved? try --base_url)'.format(path))
    raise LSNetError('{} is not a torch checkpoint (neither a zip archive nor a pickle; it starts with {!r})'
                     .format(path, head[:8]))


def download(entry, folder, base_url=None, timeout=60.0, progress=None):
    """``(path, ModelConfig or None)``: ``entry``'s file in ``folder``, downloaded and verified
    (the config is None when the file was already there; it is then left as it is)."""
    path = os.path.join(folder, entry.name)
    if os.path.isfile(path):
        log.info('%s is already there', path)
        return path, None
    part = path + '.part'
    url = entry.url(base_url)
    _transfer(url, part, timeout, progress)
    try:
        cfg = verify(part, entry.name)
    except LSNetError as exc:
        _remove(part)
        raise LSNetError('{}: the downloaded file failed verification and was deleted: {}'
                         .format(url, _one_line(exc))) from None
    os.replace(part, path)
    return path, cfg


def _one_line(exc):
    return ' '.join(str(exc).split()) or type(exc).__name__


def _remove(path):
    if os.path.exists(path):
        os.remove(path)


def _content_range_start(value):
    m = re.fullmatch(r'\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*', value or '')
    return int(m.group(1)) if m else None


def _open(url, offset, timeout):
    headers = {'User-Agent': 'lsnet-download'}
    if offset:
        headers['Range'] = 'bytes={}-'.format(offset)
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _request(url, part, timeout):
    """``(response, offset)``: the response to a fresh or resuming GET; a range the server refuses
    or answers at another offset starts over. HTTP and connection errors raise LSNetError."""
    for _ in range(2):
        offset = os.path.getsize(part) if os.path.isfile(part) else 0
        try:
            resp = _open(url, offset, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # the partial file is not a prefix the server can continue
                log.info('%s: the server cannot resume at byte %d; starting over', url, offset)
                _remove(part)
                continue
            if exc.code in (404, 410):
                _remove(part)
            raise LSNetError('cannot download {}: HTTP {} {} (the host has moved before: a mirror goes in --base_url)'
                             .format(url, exc.code, _one_line(exc.reason))) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:  # ValueError: a bad URL
            reason = getattr(exc, 'reason', exc)
            raise LSNetError('cannot reach {}: {} (the host has moved before: a mirror goes in --base_url)'
                             .format(url, _one_line(reason))) from None
        if resp.status == 206 and _content_range_start(resp.headers.get('Content-Range')) != offset:
            resp.close()
            log.info('%s: the server resumed at another byte than %d; starting over', url, offset)
            _remove(part)
            continue
        if resp.status != 206 and offset:
            log.info('%s: the server ignored the range request; starting over', url)
            offset = 0
        return resp, offset
    raise LSNetError('cannot download {}: the server refuses to resume and to restart'.format(url))


def _transfer(url, part, timeout, progress):
    """Stream ``url`` into ``part`` (appending from a resumed offset), with a tqdm bar on stderr
    (``progress=None``: only on a terminal). An interrupted transfer raises LSNetError and keeps
    ``part`` only when the server supports Range requests."""
    from tqdm import tqdm
    resp, offset = _request(url, part, timeout)
    with resp:
        resumable = resp.status == 206 or resp.headers.get('Accept-Ranges', '').strip().lower() == 'bytes'
        length = resp.headers.get('Content-Length')
        total = offset + int(length) if length and length.isdigit() else None
        if offset:
            log.info('resuming %s at byte %d', part, offset)
        else:
            log.info('downloading %s to %s', url, part)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(part)), exist_ok=True)
            f = open(part, 'ab' if offset else 'wb')
        except OSError as exc:
            raise LSNetError('cannot write {}: {}'.format(part, exc.strerror)) from None
        received, error = offset, None
        with f, \
                tqdm(total=total, initial=offset, unit='B', unit_scale=True, unit_divisor=1024, file=sys.stderr,
                     desc=os.path.basename(part)[:-len('.part')], disable=None if progress is None else not progress,
                     leave=False) as bar:
            try:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                error = exc
            f.flush()
            os.fsync(f.fileno())
    if error is None and (total is None or received >= total):
        return
    what = '{} of {} bytes'.format(received, total) if total else '{} bytes'.format(received)
    reason = _one_line(error) if error is not None else 'the connection closed early'
    if resumable:
        raise LSNetError('download of {} interrupted at {} ({}); {} is kept: rerun the same command to resume'
                         .format(url, what, reason, part))
    _remove(part)
    raise LSNetError('download of {} interrupted at {} ({}); the server cannot resume, so nothing is kept: rerun '
                     'to start over'.format(url, what, reason))
