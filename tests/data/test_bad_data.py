"""Bad data under ``data.on_error``: raise names the file and reason; skip drops, counts and logs."""

import codecs
import json
import re

import hydra
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from tests.helpers.config import compose_train
from tests.helpers.videos import (
    FDR,
    SOURCES,
    annotation_files,
    frame_numbers,
    make_jester,
    make_kinetics,
    make_named_list,
    make_sthv2,
    make_ucf101,
    run_fast_dev,
)
from tsm.data.clips import Skipped, collate_skipping
from tsm.data.datamodule import SKIPPED_FILE, ClipDataModule
from tsm.data.decode import DataError
from tsm.data.sources import UCF101, Custom, Jester, Kinetics400, SomethingV2
from tsm.training.task import train

UNREADABLE = "truncated video|cannot open video"  # how much of the header survives decides which


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return path


def empty(folder):
    for frame in folder.iterdir():
        frame.unlink()
    return folder


def datamodule(source, num_classes, tmp_path, on_error, **kw):
    sizes = {"num_segments": 4, "crop_size": 16, "scale_size": 16, "batch_size": 2, **kw}
    return ClipDataModule(source, num_classes, on_error=on_error, log_dir=str(tmp_path / "run"), **sizes)


@pytest.fixture
def broken_sthv2(tmp_path):
    """Something V2 whose validation video 21 (second of two) is truncated."""
    root = make_sthv2(tmp_path / "sthv2")
    truncate(root / "20bn-something-something-v2" / "21.webm")
    return root


@pytest.fixture
def broken_jester(tmp_path):
    """Jester whose validation clip 6 (second of two) has an empty frame folder."""
    root = make_jester(tmp_path / "jester")
    empty(root / "20bn-jester-v1" / "6")
    return root


def source_of(root):
    if (root / "jester-v1-labels.csv").exists():
        return (lambda split: Jester(root, split, frames=True)), 27
    return (lambda split: SomethingV2(root, split)), 174


@pytest.mark.parametrize(("fixture", "reason"), [("broken_sthv2", UNREADABLE), ("broken_jester", "empty frame")])
def test_raise_names_the_file_and_the_reason(fixture, reason, request, tmp_path):
    root = request.getfixturevalue(fixture)
    data = datamodule(*source_of(root), tmp_path, "raise")
    data.dataset("val")[0]  # the good one
    with pytest.raises(DataError, match=reason) as error:
        data.dataset("val")[1]
    assert error.value.path.endswith(("21.webm", "20bn-jester-v1/6"))


@pytest.mark.parametrize(("fixture", "bad"), [("broken_sthv2", "21.webm"), ("broken_jester", "20bn-jester-v1/6")])
def test_skip_drops_the_sample_and_logs_it(fixture, bad, request, tmp_path):
    root = request.getfixturevalue(fixture)
    data = datamodule(*source_of(root), tmp_path, "skip", num_workers=1)
    data.dataset("val")[0]  # read in this process first: the forked worker must not inherit a stuck decoder state
    batches = [data.on_before_batch_transfer(batch, 0) for batch in data.val_dataloader()]
    assert len(batches) == 1 and len(batches[0]) == 3
    clips, labels, indices = batches[0]
    assert indices.tolist() == [0] and clips.shape[0] == labels.shape[0] == 1  # dropped, not replaced
    assert data.skipped["val"] == 1
    (line,) = (tmp_path / "run" / SKIPPED_FILE).read_text().splitlines()
    split, path, reason = line.split("\t")
    assert split == "val" and path.endswith(bad) and reason


def test_a_batch_with_no_readable_sample_becomes_empty_and_is_recorded(broken_sthv2, tmp_path):
    data = datamodule(*source_of(broken_sthv2), tmp_path, "skip")
    item = data.dataset("val")[1]
    batch = collate_skipping([item, item], split="val")
    assert data.on_before_batch_transfer(batch, 0) == () and data.skipped["val"] == 2
    assert len((tmp_path / "run" / SKIPPED_FILE).read_text().splitlines()) == 2


def test_unknown_label_at_parse_time(tmp_path):
    root = make_jester(tmp_path / "jester")
    csv = root / "jester-v1-validation.csv"
    csv.write_text(csv.read_text() + "9;Flying Kites\n")
    with pytest.raises(DataError, match=r"jester-v1-validation.csv:3: label 'Flying Kites' is not a class"):
        Jester(root, "val", frames=True)
    source = Jester(root, "val", frames=True, on_error="skip")
    classes = root / "jester-v1-labels.csv"
    assert len(source) == 2 and source.skipped == [
        (f"{csv}:3", f"label 'Flying Kites' is not a class of jester (classes from {classes})")
    ]
    data = datamodule(lambda split: Jester(root, split, frames=True, on_error="skip"), 27, tmp_path, "skip")
    data.dataset("val")
    assert "jester-v1-validation.csv:3\tlabel 'Flying Kites'" in (tmp_path / "run" / SKIPPED_FILE).read_text()


def test_fewer_frames_than_segments_repeat_frames(tmp_path):
    root = make_jester(tmp_path / "jester")
    for k in range(4, 13):
        (root / "20bn-jester-v1" / "5" / f"{k:05d}.jpg").unlink()
    source = Jester(root, "val", frames=True)
    data = datamodule(lambda split: source, 27, tmp_path, "raise", num_segments=8)
    indices = data.sampler(source.num_frames(0), False, None)
    assert source.num_frames(0) == 3 and indices == [0, 0, 0, 1, 1, 2, 2, 2]
    assert frame_numbers(source.read(0, indices)) == indices
    assert data.dataset("val")[0][0].shape[0] == 8


def test_training_run_skips_counts_and_reports(broken_sthv2, tmp_path):
    run = tmp_path / "run"
    metrics = run_fast_dev("sthv2", broken_sthv2, run, "data.on_error=skip")
    assert metrics["val/skipped"] == 1 and metrics["test/skipped"] == 1 and metrics["train/skipped"] == 0
    lines = (run / SKIPPED_FILE).read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["val", "test"]
    assert all(re.search(rf"21.webm\t({UNREADABLE})", line) for line in lines)
    assert json.loads((run / "metrics.json").read_text()) == metrics


def test_training_run_stops_under_raise(broken_sthv2, tmp_path):
    with pytest.raises(DataError, match=rf"21.webm: ({UNREADABLE})"):
        run_fast_dev("sthv2", broken_sthv2, tmp_path / "run")


def test_skip_run_with_batch_size_one_survives_unreadable_batches(tmp_path):
    """Every training clip unreadable, one of two validation/test clips too, one clip per batch: training
    finishes, every skipped batch is counted, and skipped steps leave the weights exactly as they were."""
    root = make_jester(tmp_path / "jester")
    for clip in ("1", "2", "3", "4", "6"):
        empty(root / "20bn-jester-v1" / clip)
    fdr_free = [o for o in FDR if o != "debug=fdr"]
    overrides = ["data=jester", f"data.root={root}", *fdr_free, "data.batch_size=1", "data.num_workers=0"]
    overrides += ["data.on_error=skip", "trainer.max_epochs=1"]
    cfg = compose_train(overrides, tmp_path / "run")
    metrics = train(cfg)
    assert metrics["train/skipped"] == 4 and metrics["val/skipped"] == 1 and metrics["test/skipped"] == 1
    assert metrics["test/acc"] in (0.0, 1.0)  # the one readable test clip was scored
    pl.seed_everything(cfg.seed, workers=True)
    initial = hydra.utils.instantiate(cfg.model).net.state_dict()
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[f"net.{k}"], v) for k, v in initial.items())


@pytest.mark.parametrize("split", ["test", "val"])
def test_train_refuses_an_unlabelled_split_before_it_trains(split, tmp_path, monkeypatch):
    """Jester's test split is unlabelled (labels -1): as train.py's test or validation split it is refused before
    training starts (before, the test after training died in the loss with an IndexError, and with no sanity
    check the validation after the first epoch), naming the key and the eval.py command that predicts it."""

    def fit(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(pl.Trainer, "fit", fit)
    root = make_jester(tmp_path / "jester")
    fdr_free = [o for o in FDR if o != "debug=fdr"]
    message = (
        rf"jester-v1-test.csv: 2 of its 2 {split} videos have no label.*set data.source.splits.{split} to a "
        r"labelled split.*predict these with python src/eval.py ... data.source.splits.test=test"
    )
    overrides = ["data=jester", f"data.root={root}", *fdr_free, "+trainer.num_sanity_val_steps=0"]
    with pytest.raises(DataError, match=message):
        train(compose_train([*overrides, f"data.source.splits.{split}=test"], tmp_path / "run"))
    assert not (tmp_path / "run" / "config.yaml").exists()


# Annotation files: what each reader refuses, naming the file and line (or JSON entry).


def opened(name, root, split="train", **kw):
    return SOURCES[name][1](root, split, **kw)


def append(path, text):
    path.write_text(path.read_text() + text)
    return path


@pytest.mark.parametrize("name", [name for name in SOURCES if name != "tree"])
def test_annotation_files_may_start_with_a_byte_order_mark(name, tmp_path):
    root = SOURCES[name][0](tmp_path / name)
    before = [(source.classes, source.samples) for source in (opened(name, root), opened(name, root, "val"))]
    for path in annotation_files(root):
        path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    assert [(source.classes, source.samples) for source in (opened(name, root), opened(name, root, "val"))] == before


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("jester", "jester-v1-labels.csv"),
        ("jester", "jester-v1-train.csv"),
        ("kinetics", "annotations/train.csv"),
        ("sthv2", "something-something-v2-labels.json"),
        ("ucf101", "ucfTrainTestlist/classInd.txt"),
        ("hmdb51", "testTrainMulti_7030_splits/cartwheel_test_split1.txt"),
        ("named_list", "classes.txt"),
    ],
)
def test_text_that_is_not_utf8_is_refused_at_its_line(name, file, tmp_path):
    root = SOURCES[name][0](tmp_path / name)
    lines = (root / file).read_bytes().split(b"\n")
    line = min(2, len(lines))
    lines[line - 1] += b" caf\xe9"  # Latin-1
    (root / file).write_bytes(b"\n".join(lines))
    for on_error in ("raise", "skip"):
        with pytest.raises(DataError, match=rf"{re.escape(file)}:{line}: not UTF-8 text"):
            opened(name, root, on_error=on_error)


@pytest.mark.parametrize("digit", ["\u0661", "\u00b2"])  # Arabic-Indic one, superscript two: str.isdigit() takes both
def test_list_numbers_are_ascii_digits(digit, tmp_path):
    root = make_named_list(tmp_path / "list")
    train = root / "train.txt"
    lines = train.read_text().splitlines()
    lines[1] = f"frames/clip1 12 {digit}"
    lines[2] = f"frames/clip2 1{digit} 0"
    train.write_text("\n".join(lines))
    with pytest.raises(DataError, match=rf"train.txt:2: label '{digit}' is not in 0..2 \(.*classes.txt\)"):
        opened("named_list", root)
    source = opened("named_list", root, on_error="skip")
    assert [where.rsplit(":", 1)[1] for where, _ in source.skipped] == ["2", "3"] and len(source) == 2
    assert "expected '<path> <num_frames> <label>'" in source.skipped[1][1]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("3", "expected '<index> <class>' with an integer index"),
        ("x Basketball", "expected '<index> <class>'"),
        ("\u0663 Basketball", "expected '<index> <class>'"),
        ("2 Basketball", "index 2 is already used at .*classInd.txt:2"),
        ("3 applyeyemakeup", "class 'applyeyemakeup' is already named at .*classInd.txt:1"),
    ],
)
def test_ucf101_class_index_lines(line, reason, tmp_path):
    root = make_ucf101(tmp_path / "ucf")
    append(root / "ucfTrainTestlist" / "classInd.txt", f"{line}\n")
    for on_error in ("raise", "skip"):  # the class list is never partly read
        with pytest.raises(DataError, match=rf"classInd.txt:3: {reason}"):
            UCF101(root, "train", on_error=on_error)


@pytest.mark.parametrize(
    ("labels", "where", "reason"),
    [
        ('{"a": "0",', ":1", r"invalid JSON: Expecting property name enclosed in double quotes \(column 11\)"),
        ('{"a": "0", "b": "x"}', " entry 2", "index 'x' of 'b' is not an integer"),
        ('{"a": "0", "b": "\u0661"}', " entry 2", "index '\u0661' of 'b' is not an integer"),
        ('{"a": "0", "b": 1.5}', " entry 2", "index 1.5 of 'b' is not an integer"),
        ('{"a": "0", "a": "1"}', "", "key 'a' appears twice in one object"),
        ('["a"]', "", "expected a JSON object of class -> index, got list"),
        ('{"a": "0", "b": "2"}', "", r"indices are not 0..1"),
        (
            '{"Moving [something] 0 times": "0", "moving something  0 Times": "1"}',
            " entry 2",
            "class 'moving something  0 Times' is already named at .*labels.json entry 1",
        ),
    ],
)
def test_sthv2_labels_json(labels, where, reason, tmp_path):
    root = make_sthv2(tmp_path / "sthv2")
    (root / "something-something-v2-labels.json").write_text(labels)
    with pytest.raises(DataError, match=rf"labels.json{where}: {reason}"):
        SomethingV2(root, "train", on_error="skip")


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("[1, 2]", 'expected an object with an "id"'),
        ('{"template": "Moving something 0 times"}', 'expected an object with an "id"'),
        ('{"id": "14", "template": 7}', "template 7 is not a string"),
    ],
)
def test_sthv2_entries(entry, reason, tmp_path):
    root = make_sthv2(tmp_path / "sthv2")
    path = root / "something-something-v2-train.json"
    path.write_text(path.read_text()[:-1] + f", {entry}]")
    with pytest.raises(DataError, match=rf"train.json entry 5.*: {reason}"):
        SomethingV2(root, "train")
    source = SomethingV2(root, "train", on_error="skip")
    assert len(source) == 4 and [where for where, _ in source.skipped] == [
        f"{path} entry 5" + (" (id 14)" if "id" in entry else "")
    ]


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ('[{"id": "10"}', ":1", "invalid JSON"),
        ('{"id": "10"}', "", "expected a JSON list of entries, got dict"),
        ("[" * 100_000, "", "invalid JSON: maximum recursion depth"),
    ],
)
def test_sthv2_split_json(text, where, reason, tmp_path):
    root = make_sthv2(tmp_path / "sthv2")
    (root / "something-something-v2-train.json").write_text(text)
    with pytest.raises(DataError, match=rf"train.json{where}: {reason}"):
        SomethingV2(root, "train", on_error="skip")


@pytest.mark.parametrize(
    ("name", "classes", "file", "twice"),
    [
        ("jester", ("Thumb Up", "Stop Sign", "No gesture", "Stop Sign"), "jester-v1-labels.csv", (2, 4)),
        ("named_list", ("walk", "run", "walk"), "classes.txt", (1, 3)),
    ],
)
def test_a_class_named_twice_is_refused_at_its_second_line(name, classes, file, twice, tmp_path):
    root = SOURCES[name][0](tmp_path / name, classes=classes)
    first, second = twice
    for on_error in ("raise", "skip"):
        with pytest.raises(
            DataError, match=rf"{file}:{second}: class '{classes[-1]}' is already named at .*{file}:{first}"
        ):
            opened(name, root, on_error=on_error)


@pytest.mark.parametrize(
    ("split", "header", "lacks"),
    [
        ("train", "youtube_id,time_start,time_end,split", "label"),
        ("val", "label,youtube_id,time_end,split", "time_start"),
        ("train", "", "label,time_end,time_start,youtube_id"),
    ],
)
def test_kinetics_csv_without_its_header(split, header, lacks, tmp_path):
    root = make_kinetics(tmp_path / "k400")
    path = root / "annotations" / ("train.csv" if split == "train" else "validate.csv")
    rows = path.read_text().splitlines()[1:]
    path.write_text("\n".join([header, *rows] if header else []))
    with pytest.raises(DataError, match=rf"{path.name}:1: header .* lacks {lacks}"):
        Kinetics400(root, split)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("abseiling,train0000009,\u0661\u0660,20,train", "malformed row"),  # Arabic-Indic 10
        ("abseiling,train0000009,inf,20,train", "malformed row"),
        ("abseiling,train0000009,0,10", "malformed row"),  # a field short
        ("abseiling,train0000009,0,10,train,extra", "malformed row"),
        (",train0000009,0,10,train", "no label in a train row"),
        ('abseiling,"train0000009', "malformed row"),  # a quote left open swallows the rest
    ],
)
def test_kinetics_rows(row, reason, tmp_path):
    root = make_kinetics(tmp_path / "k400")
    path = append(root / "annotations" / "train.csv", f"{row}\n")
    with pytest.raises(DataError, match=rf"train.csv:9: {reason}"):
        Kinetics400(root, "train")
    source = Kinetics400(root, "train", on_error="skip")
    assert len(source) == 6 and [where for where, _ in source.skipped] == [f"{path}:9"]


def test_frames_too_small_to_crop_are_skipped_in_training(tmp_path):
    root = make_jester(tmp_path / "jester")
    folder = root / "20bn-jester-v1" / "1"
    for frame in folder.iterdir():
        Image.new("RGB", (1, 1)).save(frame)
    data = datamodule(lambda split: Jester(root, split, frames=True), 27, tmp_path, "skip")
    item = data.dataset("train")[0]
    assert isinstance(item, Skipped) and item.path == str(folder) and "frames of 1x1 pixels" in item.reason
    data = datamodule(lambda split: Jester(root, split, frames=True), 27, tmp_path, "raise")
    with pytest.raises(DataError, match=r"20bn-jester-v1/1: frames of 1x1 pixels"):
        data.dataset("train")[0]


def test_a_split_with_nothing_usable_names_its_file_and_the_first_skip(tmp_path):
    root = make_jester(tmp_path / "jester")
    path = root / "jester-v1-validation.csv"
    path.write_text("5;Flying Kites\n6;Flying Kites\n")
    with pytest.raises(
        DataError, match=rf"validation.csv: jester val .* no usable samples; 2 skipped, the first {path}:1"
    ):
        Jester(root, "val", frames=True, on_error="skip")


def test_inferred_class_count_is_bounded(tmp_path):
    root = make_named_list(tmp_path / "list")
    append(root / "train.txt", "frames/clip0 12 123456789012\n")
    with pytest.raises(DataError, match=r"train.txt:5: label 123456789012 would make over 100000 classes"):
        Custom(root, "val", frames=True)
