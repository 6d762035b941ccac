"""Label generators on small fixtures in the official annotation formats."""

import json
import os

import pytest

from tools import (gen_label_hmdb51, gen_label_jester, gen_label_kinetics, gen_label_sthv1,
                   gen_label_sthv2, gen_label_ucf101, label_common)


def make_frames(folder, n, tmpl='img_{:05d}.jpg', extra=()):
    os.makedirs(folder, exist_ok=True)
    for i in range(1, n + 1):
        open(os.path.join(folder, tmpl.format(i)), 'wb').close()
    for name in extra:
        open(os.path.join(folder, name), 'wb').close()


def read(path):
    with open(path) as f:
        return f.read().splitlines()


def test_kinetics(tmp_path, capsys):
    frames = tmp_path / 'images'
    make_frames(frames / 'abseiling' / 'aaa_000001_000011', 30)
    make_frames(frames / 'passing_American_football_in_game' / 'b_b_000010_000020', 25,
                extra=['flow_x_00001.jpg'])  # only img_* frames are counted
    make_frames(frames / 'val' / 'abseiling' / 'ccc_000000_000010', 12)  # under a split folder
    make_frames(frames / 'abseiling' / 'ddd_7_17', 9)  # unpadded times
    (frames / 'abseiling' / 'eee_000000_000010').mkdir()  # empty: counts as missing
    (tmp_path / 'train.csv').write_text(
        'label,youtube_id,time_start,time_end,split,is_cc\n'
        'abseiling,aaa,1,11,train,0\n'
        '"passing American football (in game)",b_b,10,20,train,0\n'
        'abseiling,gone,3,13,train,0\n'
        'abseiling,eee,0,10,train,0\n')
    (tmp_path / 'val.csv').write_text(
        'label,youtube_id,time_start,time_end,split\n'
        'abseiling,ccc,0,10,validate\n'
        'abseiling,ddd,7,17,val\n')
    out = tmp_path / 'labels'
    rc = gen_label_kinetics.main(['--train_csv', str(tmp_path / 'train.csv'), '--val_csv',
                                  str(tmp_path / 'val.csv'), '--frame_root', str(frames),
                                  '--out_dir', str(out)])
    assert rc == 0
    assert read(out / 'category.txt') == ['abseiling', 'passing_American_football_in_game']
    assert read(out / 'train_videofolder.txt') == [
        'abseiling/aaa_000001_000011 30 0',
        'passing_American_football_in_game/b_b_000010_000020 25 1']
    assert read(out / 'val_videofolder.txt') == ['val/abseiling/ccc_000000_000010 12 0',
                                                 'abseiling/ddd_7_17 9 0']
    assert read(out / 'missing_train_videofolder.txt') == ['abseiling/gone_000003_000013',
                                                           'abseiling/eee_000000_000010']
    assert not (out / 'missing_val_videofolder.txt').exists()
    assert '2 videos, 2 missing' in capsys.readouterr().out


def test_kinetics_classes_follow_the_model_zoo_order(tmp_path):
    """Sorting folder-safe names would swap 'skiing (not slalom or crosscountry)' and 'skiing
    crosscountry' (labels 308 and 309 of the zoo); without --label_map the zoo's order is kept."""
    frames = tmp_path / 'images'
    rows = []
    for i, label in enumerate(['skiing crosscountry', 'skiing (not slalom or crosscountry)', 'abseiling']):
        folder = gen_label_kinetics.kinetics_class_name(label)
        make_frames(frames / folder / 'v{}_000000_000010'.format(i), 5)
        rows.append('"{}",v{},0,10,train'.format(label, i))
    (tmp_path / 'train.csv').write_text('label,youtube_id,time_start,time_end,split\n' + '\n'.join(rows) + '\n')
    out = tmp_path / 'labels'
    assert gen_label_kinetics.main(['--train_csv', str(tmp_path / 'train.csv'), '--frame_root', str(frames),
                                    '--out_dir', str(out)]) == 0
    assert read(out / 'category.txt') == ['abseiling', 'skiing_not_slalom_or_crosscountry', 'skiing_crosscountry']


def test_kinetics_label_map_and_errors(tmp_path, capsys):
    frames = tmp_path / 'images'
    make_frames(frames / 'zumba' / 'aaa_000001_000011', 4)
    (tmp_path / 'map.txt').write_text('zumba\nabseiling\n')
    (tmp_path / 'train.csv').write_text('label,youtube_id,time_start,time_end,split\nzumba,aaa,1,11,train\n')
    out = tmp_path / 'labels'
    args = ['--train_csv', str(tmp_path / 'train.csv'), '--frame_root', str(frames), '--out_dir', str(out)]
    assert gen_label_kinetics.main(args + ['--label_map', str(tmp_path / 'map.txt')]) == 0
    assert read(out / 'category.txt') == ['zumba', 'abseiling']  # label-map order kept
    assert read(out / 'train_videofolder.txt') == ['zumba/aaa_000001_000011 4 0']
    capsys.readouterr()

    (tmp_path / 'bad.csv').write_text('youtube_id,time_start\naaa,1\n')
    assert gen_label_kinetics.main(['--train_csv', str(tmp_path / 'bad.csv'), '--frame_root', str(frames)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'bad.csv' in err and 'label' in err

    (tmp_path / 'map2.txt').write_text('abseiling\n')
    assert gen_label_kinetics.main(args + ['--label_map', str(tmp_path / 'map2.txt')]) == 2
    assert "train.csv:2: class 'zumba'" in capsys.readouterr().err


@pytest.mark.parametrize('module, prefix', [(gen_label_sthv1, 'something-something-v1'),
                                            (gen_label_jester, 'jester-v1')])
def test_sthv1_and_jester(tmp_path, module, prefix):
    anno = tmp_path / 'anno'
    anno.mkdir()
    (anno / ('%s-labels.csv' % prefix)).write_text('Pushing something\nHolding something\nDoing other things\n')
    (anno / ('%s-train.csv' % prefix)).write_text('1;Pushing something\n2;Holding something\n3;Doing other things\n')
    (anno / ('%s-validation.csv' % prefix)).write_text('4;Holding something\n')
    frames = tmp_path / 'frames'
    make_frames(frames / '1', 40, '{:05d}.jpg')
    make_frames(frames / '2', 35, '{:05d}.jpg')
    make_frames(frames / '4', 20, '{:05d}.jpg')
    out = tmp_path / 'out'
    rc = module.main(['--anno_dir', str(anno), '--frame_root', str(frames), '--out_dir', str(out)])
    assert rc == 0
    # classes sorted by name, as the reference does
    assert read(out / 'category.txt') == ['Doing other things', 'Holding something', 'Pushing something']
    assert read(out / 'train_videofolder.txt') == ['1 40 2', '2 35 1']
    assert read(out / 'val_videofolder.txt') == ['4 20 1']
    assert read(out / 'missing_train_videofolder.txt') == ['3']


def test_sthv1_bad_line(tmp_path, capsys):
    anno = tmp_path
    (anno / 'something-something-v1-labels.csv').write_text('A\n')
    (anno / 'something-something-v1-train.csv').write_text('1;A\n2,A\n')
    (anno / 'something-something-v1-validation.csv').write_text('')
    assert gen_label_sthv1.main(['--anno_dir', str(anno), '--frame_root', str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and 'something-something-v1-train.csv:2' in err


def test_sthv2(tmp_path):
    anno = tmp_path / 'anno'
    anno.mkdir()
    labels = {'Putting something on something': '1', 'Pushing something from left to right': '0',
              'Holding something': '2'}
    (anno / 'something-something-v2-labels.json').write_text(json.dumps(labels))
    train = [{'id': '11', 'label': 'putting a cup on a table', 'template': 'Putting [something] on [something]',
              'placeholders': ['a cup', 'a table']},
             {'id': '12', 'label': 'pushing pen from left to right',
              'template': 'Pushing [something] from left to right', 'placeholders': ['pen']},
             {'id': '13', 'label': 'holding x', 'template': 'Holding [something]', 'placeholders': ['x']}]
    val = [{'id': '21', 'label': 'holding y', 'template': 'Holding [something]', 'placeholders': ['y']}]
    test = [{'id': '31'}]
    for name, data in (('train', train), ('validation', val), ('test', test)):
        (anno / ('something-something-v2-%s.json' % name)).write_text(json.dumps(data))
    frames = tmp_path / 'frames'
    make_frames(frames / '11', 47, '{:06d}.jpg')
    make_frames(frames / '12', 33, '{:06d}.jpg')
    make_frames(frames / '21', 50, '{:06d}.jpg')
    make_frames(frames / '31', 8, '{:06d}.jpg')
    out = tmp_path / 'out'
    assert gen_label_sthv2.main(['--anno_dir', str(anno), '--frame_root', str(frames), '--out_dir', str(out)]) == 0
    assert read(out / 'category.txt') == ['Pushing something from left to right',
                                          'Putting something on something', 'Holding something']
    assert read(out / 'train_videofolder.txt') == ['11 47 1', '12 33 0']
    assert read(out / 'missing_train_videofolder.txt') == ['13']
    assert read(out / 'val_videofolder.txt') == ['21 50 2']
    assert read(out / 'test_videofolder.txt') == ['31 8 0']


def test_sthv2_unknown_template(tmp_path, capsys):
    (tmp_path / 'something-something-v2-labels.json').write_text(json.dumps({'A [x]': '0'}))
    (tmp_path / 'something-something-v2-train.json').write_text(json.dumps([{'id': 5, 'template': 'B'}]))
    (tmp_path / 'something-something-v2-validation.json').write_text('[]')
    assert gen_label_sthv2.main(['--anno_dir', str(tmp_path), '--frame_root', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and "id 5" in err and "'B'" in err


def test_ucf101(tmp_path):
    splits = tmp_path / 'ucfTrainTestlist'
    splits.mkdir()
    (splits / 'classInd.txt').write_text('1 ApplyEyeMakeup\n2 HandstandPushups\n')
    (splits / 'trainlist01.txt').write_text(
        'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n'
        'HandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n'
        'HandstandPushups/v_HandStandPushups_g09_c01.avi 2\r\n')
    (splits / 'testlist01.txt').write_text('ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n'
                                           'HandstandPushups/v_HandStandPushups_g01_c01.avi\n')
    frames = tmp_path / 'jpg'
    make_frames(frames / 'ApplyEyeMakeup' / 'v_ApplyEyeMakeup_g08_c01', 100, extra=['flow_x_00001.jpg'])
    make_frames(frames / 'v_HandStandPushups_g08_c01', 60)  # flat layout
    make_frames(frames / 'v_ApplyEyeMakeup_g01_c01', 70)
    make_frames(frames / 'HandstandPushups' / 'v_HandStandPushups_g01_c01', 80)
    out = tmp_path / 'lists'
    assert gen_label_ucf101.main(['--split_dir', str(splits), '--frame_root', str(frames),
                                  '--out_dir', str(out), '--splits', '1']) == 0
    assert read(out / 'category.txt') == ['ApplyEyeMakeup', 'HandstandPushups']
    assert read(out / 'ucf101_rgb_train_split_1.txt') == [
        'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01 100 0', 'v_HandStandPushups_g08_c01 60 1']
    assert read(out / 'missing_ucf101_rgb_train_split_1.txt') == ['HandstandPushups/v_HandStandPushups_g09_c01']
    assert read(out / 'ucf101_rgb_val_split_1.txt') == [
        'v_ApplyEyeMakeup_g01_c01 70 0', 'HandstandPushups/v_HandStandPushups_g01_c01 80 1']


def test_ucf101_missing_split_file(tmp_path, capsys):
    (tmp_path / 'classInd.txt').write_text('1 A\n')
    assert gen_label_ucf101.main(['--split_dir', str(tmp_path), '--frame_root', str(tmp_path),
                                  '--out_dir', str(tmp_path / 'o'), '--splits', '2']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'trainlist02.txt' in err


def test_hmdb51(tmp_path):
    splits = tmp_path / 'splits'
    splits.mkdir()
    (splits / 'brush_hair_test_split1.txt').write_text('a1.avi 1 \nb1.avi 2 \nc1.avi 0 \n')
    (splits / 'cartwheel_test_split1.txt').write_text('d1.avi 1 \ne1.avi 2 \n')
    (splits / 'brush_hair_test_split2.txt').write_text('a1.avi 2 \n')
    (splits / 'cartwheel_test_split2.txt').write_text('d1.avi 1 \n')
    frames = tmp_path / 'images'
    make_frames(frames / 'brush_hair' / 'a1', 30)
    make_frames(frames / 'b1', 20)
    make_frames(frames / 'c1', 10)
    make_frames(frames / 'cartwheel' / 'd1', 15)
    out = tmp_path / 'lists'
    assert gen_label_hmdb51.main(['--split_dir', str(splits), '--frame_root', str(frames),
                                  '--out_dir', str(out), '--splits', '1', '2']) == 0
    assert read(out / 'category.txt') == ['brush_hair', 'cartwheel']
    assert read(out / 'hmdb51_rgb_train_split_1.txt') == ['brush_hair/a1 30 0', 'cartwheel/d1 15 1']
    assert read(out / 'hmdb51_rgb_val_split_1.txt') == ['b1 20 0']  # c1 is unused (0)
    assert read(out / 'missing_hmdb51_rgb_val_split_1.txt') == ['cartwheel/e1']
    assert read(out / 'hmdb51_rgb_train_split_2.txt') == ['cartwheel/d1 15 1']
    assert read(out / 'hmdb51_rgb_val_split_2.txt') == ['brush_hair/a1 30 0']


def test_hmdb51_flow_counts_x_frames(tmp_path):
    splits = tmp_path / 'splits'
    splits.mkdir()
    (splits / 'run_test_split1.txt').write_text('r.avi 1\n')
    folder = tmp_path / 'images' / 'run' / 'r'
    make_frames(folder, 12, 'flow_x_{:05d}.jpg')
    make_frames(folder, 12, 'flow_y_{:05d}.jpg')
    make_frames(folder, 13, 'img_{:05d}.jpg')
    out = tmp_path / 'lists'
    assert gen_label_hmdb51.main(['--split_dir', str(splits), '--frame_root', str(tmp_path / 'images'),
                                  '--out_dir', str(out), '--splits', '1', '--modality', 'Flow']) == 0
    assert read(out / 'hmdb51_flow_train_split_1.txt') == ['run/r 12 0']


@pytest.mark.parametrize('module, flag', [(gen_label_sthv1, '--labels'), (gen_label_sthv2, '--labels'),
                                          (gen_label_kinetics, '--train_csv')])
def test_annotation_file_that_is_not_text(tmp_path, capsys, module, flag):
    binary = tmp_path / 'binary.csv'
    binary.write_bytes(b'\xff\xfe\x00 not text\n')
    assert module.main([flag, str(binary), '--frame_root', str(tmp_path), '--out_dir', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err and '{} is not UTF-8 text'.format(binary) in err
    assert not (tmp_path / 'out').exists()


def test_out_dir_that_cannot_be_made(tmp_path, capsys):
    (tmp_path / 'something-something-v1-labels.csv').write_text('A\n')
    for split in ('train', 'validation'):
        (tmp_path / 'something-something-v1-{}.csv'.format(split)).write_text('1;A\n')
    a_file = tmp_path / 'a_file'
    a_file.write_text('')
    argv = ['--anno_dir', str(tmp_path), '--frame_root', str(tmp_path), '--out_dir', str(a_file / 'lists')]
    assert gen_label_sthv1.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'error: --out_dir {}: cannot create folder (Not a directory)'.format(a_file / 'lists'), err


def test_missing_frame_root(tmp_path, capsys):
    assert gen_label_jester.main(['--frame_root', str(tmp_path / 'nope')]) == 2
    assert capsys.readouterr().err.startswith('error: --frame_root folder not found')


def test_kinetics_class_name():
    assert label_common.kinetics_class_name('"passing American football (in game)"') == \
        'passing_American_football_in_game'
    assert label_common.kinetics_class_name("massaging person's head") == 'massaging_persons_head'
