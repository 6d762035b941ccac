"""tools/download_pretrained.py and ops/model_zoo.py against a local HTTP server on 127.0.0.1.

The server (stdlib http.server in a thread) serves a generated official-format checkpoint under
the zoo name of the TSM MobileNetV2 Kinetics file; it honours Range requests (206 + Content-Range)
unless told not to, and can cut the connection after N bytes of the body.
"""
import http.server
import os
import re
import socket
import subprocess
import sys
import threading

import pytest

from ops import model_zoo
from tests.fakes import manifests, official_checkpoint
from tools import download_pretrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = 'TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth'


class Server:
    """Files by URL path; ``ranges`` (honour Range), ``cut_after`` (bytes of body before the
    connection drops); ``requests`` records ``(path, Range header)`` of every GET."""

    def __init__(self):
        self.files, self.ranges, self.cut_after, self.requests = {}, True, None, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                rng = self.headers.get('Range')
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                m = re.fullmatch(r'bytes=(\d+)-', rng or '')
                if m and server.ranges:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header('Content-Range', 'bytes {}-{}/{}'.format(start, len(body) - 1, len(body)))
                else:
                    self.send_response(200)
                if server.ranges:
                    self.send_header('Accept-Ranges', 'bytes')
                self.send_header('Content-Length', str(len(body) - start))
                self.end_headers()
                out = body[start:] if server.cut_after is None else body[start:start + server.cut_after]
                self.wfile.write(out)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = 'http://127.0.0.1:{}'.format(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope='module')
def checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp('served') / NAME
    official_checkpoint(manifests()['tsm_mbv2_k400'], str(path))
    return path.read_bytes()


@pytest.fixture
def server(checkpoint_bytes):
    s = Server()
    s.files['/models/' + NAME] = checkpoint_bytes
    yield s
    s.close()


def run_tool(capsys, *argv):
    """``(exit status, stdout, stderr lines)`` of the tool's main in this process."""
    code = download_pretrained.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def assert_one_error_line(err, *fragments):
    assert len(err) == 1 and err[0].startswith('error: '), err
    for fragment in fragments:
        assert fragment in err[0], err


def test_full_download_verifies_and_prints_the_test_command(server, checkpoint_bytes, tmp_path, capsys):
    target = tmp_path / 'pretrained'
    code, out, err = run_tool(capsys, NAME, '--dir', target, '--base_url', server.url + '/models/')
    assert code == 0, err
    assert sorted(os.listdir(target)) == [NAME]
    assert (target / NAME).read_bytes() == checkpoint_bytes
    assert 'verified' in out and 'every key matched' in out
    # the MobileNetV2 file is reported under the dense protocol: its command is the seed's dense one
    assert ('next: python test_models.py kinetics --weights={} --test_segments=8 --test_crops=3 --batch_size=8 '
            '--dense_sample --full_res'.format(target / NAME)) in out
    assert server.requests == [('/models/' + NAME, None)]
    # a second run finds the file and does not download again
    code, out, _ = run_tool(capsys, NAME[:-len('.pth')], '--dir', target, '--base_url', server.url + '/models')
    assert code == 0 and 'already there' in out and len(server.requests) == 1


def test_interrupted_download_resumes_with_a_range_request(server, checkpoint_bytes, tmp_path, capsys):
    target = tmp_path / 'pretrained'
    server.cut_after = 1 << 20
    code, _, err = run_tool(capsys, NAME, '--dir', target, '--base_url', server.url + '/models')
    assert code == 2
    assert_one_error_line(err, 'interrupted at {} of {} bytes'.format(1 << 20, len(checkpoint_bytes)), 'resume')
    assert sorted(os.listdir(target)) == [NAME + '.part']
    assert (target / (NAME + '.part')).read_bytes() == checkpoint_bytes[:1 << 20]

    server.cut_after = None
    code, out, err = run_tool(capsys, NAME, '--dir', target, '--base_url', server.url + '/models')
    assert code == 0, err
    assert server.requests[-1] == ('/models/' + NAME, 'bytes={}-'.format(1 << 20))
    assert sorted(os.listdir(target)) == [NAME]
    assert (target / NAME).read_bytes() == checkpoint_bytes
    assert 'next: python test_models.py kinetics' in out


def test_interruption_without_range_support_keeps_nothing(server, tmp_path, capsys):
    target = tmp_path / 'pretrained'
    server.ranges, server.cut_after = False, 100_000
    code, _, err = run_tool(capsys, NAME, '--dir', target, '--base_url', server.url + '/models')
    assert code == 2
    assert_one_error_line(err, 'interrupted', 'cannot resume')
    assert os.listdir(target) == []


def test_a_server_ignoring_the_range_starts_over(server, checkpoint_bytes, tmp_path, capsys):
    target = tmp_path / 'pretrained'
    target.mkdir()
    (target / (NAME + '.part')).write_bytes(b'stale bytes of another transfer')
    server.ranges = False
    code, _, err = run_tool(capsys, NAME, '--dir', target, '--base_url', server.url + '/models')
    assert code == 0, err
    assert server.requests[-1][1] is not None  # it asked to resume, got the whole file, started over
    assert sorted(os.listdir(target)) == [NAME] and (target / NAME).read_bytes() == checkpoint_bytes


def test_404_is_one_line_and_leaves_nothing(server, tmp_path, capsys):
    target = tmp_path / 'pretrained'
    code, _, err = run_tool(capsys, NAME, '--dir', target, '--base_url', server.url + '/elsewhere')
    assert code == 2
    assert_one_error_line(err, 'HTTP 404', '/elsewhere/' + NAME, '--base_url')
    assert not target.exists() or os.listdir(target) == []


@pytest.mark.parametrize('damage, reason', [
    ('truncated', 'corrupt or not a torch file'),
    ('garbage', 'not a torch checkpoint'),
    ('html', 'an HTML/XML page, not a checkpoint'),
    ('pickle garbage', 'corrupt or not a torch file'),
])
def test_a_bad_file_fails_verification_and_is_deleted(server, checkpoint_bytes, tmp_path, capsys, damage, reason):
    """Served whole (the transfer completes), but not a checkpoint: deleted, one line saying why."""
    target = tmp_path / 'pretrained'
    body = {'truncated': checkpoint_bytes[:len(checkpoint_bytes) // 2],
            'garbage': b'\x00\x17' + bytes(range(256)) * 200,
            'html': b'<!DOCTYPE html><html><body>This page has moved</body></html>\n',
            'pickle garbage': b'\x80\x02' + bytes(range(256)) * 200}[damage]
    server.files['/models/' + NAME] = body
    code, _, err = run_tool(capsys, NAME, '--dir', target, '--base_url', server.url + '/models')
    assert code == 2
    assert_one_error_line(err, 'failed verification and was deleted', reason)
    assert os.listdir(target) == []


def test_a_checkpoint_of_another_model_fails_verification(server, tmp_path, capsys):
    """A readable checkpoint whose keys are not those of the model its name describes."""
    other = tmp_path / 'other.pth'
    official_checkpoint(manifests()['tsn_r18_k400'], str(other))
    server.files['/models/' + NAME] = other.read_bytes()
    target = tmp_path / 'pretrained'
    code, _, err = run_tool(capsys, NAME, '--dir', target, '--base_url', server.url + '/models')
    assert code == 2
    assert_one_error_line(err, 'failed verification', 'does not fit the model')
    assert os.listdir(target) == []


def test_connection_refused_is_one_line(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    target = tmp_path / 'pretrained'
    code, _, err = run_tool(capsys, NAME, '--dir', target, '--base_url', 'http://127.0.0.1:{}'.format(port))
    assert code == 2
    assert_one_error_line(err, 'cannot reach', '--base_url')
    assert not target.exists()


def test_a_dir_under_a_file_is_one_line(checkpoint_bytes, tmp_path, capsys):
    mirror = tmp_path / 'mirror'  # a file:// mirror: no server thread to complain about the closed connection
    mirror.mkdir()
    (mirror / NAME).write_bytes(checkpoint_bytes)
    a_file = tmp_path / 'a_file'
    a_file.write_text('')
    code, _, err = run_tool(capsys, NAME, '--dir', a_file / 'pretrained', '--base_url', 'file://{}'.format(mirror))
    assert code == 2
    assert_one_error_line(err, 'cannot write {}'.format(a_file / 'pretrained' / NAME), 'Not a directory')


@pytest.mark.parametrize('flags, fragment', [(['--timeout', '0'], '--timeout must be positive'),
                                             (['--base_url', 'mirror.example/tsm'], 'unknown url type')])
def test_bad_timeout_or_base_url_is_one_line(tmp_path, capsys, flags, fragment):
    code, _, err = run_tool(capsys, NAME, '--dir', tmp_path / 'pretrained', *flags)
    assert code == 2
    assert_one_error_line(err, fragment)
    assert not (tmp_path / 'pretrained').exists()


def test_unknown_name_points_at_list(tmp_path, capsys):
    code, _, err = run_tool(capsys, 'TSM_kinetics_RGB_resnet18_nothing.pth', '--dir', tmp_path)
    assert code == 2
    assert_one_error_line(err, "unknown model-zoo name 'TSM_kinetics_RGB_resnet18_nothing.pth'", '--list')
    code, _, err = run_tool(capsys, '--dir', tmp_path)
    assert code == 2
    assert_one_error_line(err, '--all', '--list')
    code, _, err = run_tool(capsys, '--all', 'TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth',
                            '--dir', tmp_path)
    assert code == 2
    assert_one_error_line(err, '--all downloads every file: give it without names')
    assert os.listdir(tmp_path) == []


def test_list_prints_every_entry_as_a_script():
    res = subprocess.run([sys.executable, 'tools/download_pretrained.py', '--list'], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for entry in model_zoo.entries():
        assert entry.name in res.stdout
        for r in entry.results:
            assert str(r.top1) in res.stdout
    assert len(model_zoo.OFFICIAL) == 13 and 'none published yet' in res.stdout


def test_zoo_entries_agree_with_their_file_names():
    from ops.config import parse_weight_name
    for entry in model_zoo.entries():
        dataset, fields = parse_weight_name(entry.name)
        assert (dataset, fields['num_segments']) == (entry.dataset, entry.segments)
        assert entry.dataset in model_zoo.DATASETS
        assert entry.url() == model_zoo.OFFICIAL_BASE_URL + '/' + entry.name
        assert entry.url('http://mirror/x/') == 'http://mirror/x/' + entry.name
    assert model_zoo.find(NAME[:-len('.pth')]).name == NAME


def test_seed_test_commands_come_from_the_table():
    """The TSN and TSM files of scripts/test_tsm_kinetics_rgb_8f.sh print the seed's own commands."""
    for name in ('TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth',
                 'TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth'):
        assert model_zoo.find(name).test_command('pretrained/' + name) == (
            'python test_models.py kinetics --weights=pretrained/{} --test_segments=8 --test_crops=1 '
            '--batch_size=64'.format(name))


def test_pretrained_readme_tables_are_generated_from_the_zoo():
    with open(os.path.join(REPO, 'pretrained', 'README.md'), encoding='utf-8') as f:
        text = f.read()
    start = text.index('-->\n', text.index('<!-- generated by')) + len('-->\n')
    end = text.index('<!-- end of generated tables -->')
    assert text[start:end] == model_zoo.markdown_tables(), \
        'pretrained/README.md is stale: regenerate with python tools/download_pretrained.py --markdown'
