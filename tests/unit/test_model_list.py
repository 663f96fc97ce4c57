"""The team's list of model files for `scons all models=FILE` (nnc.frontend.model_list): what a
list may say, and every bad list refused with its file and line, without running any of it.

A .pt2 here is a zip with the PT2 archive's format member: what the list reader checks (the
exporter checks the members when it runs; tests/test_daily_matrix.py builds real programs)."""
import os
import zipfile

import pytest

from nnc.errors import NncError
from nnc.frontend.model_list import read_model_list

RESERVED = {"lenet5": "a zoo model", "stateful": "a zoo model", "inference": "the host inference program"}
FACTORY = "import torch\n\n\ndef build():\n    return torch.nn.Identity(), torch.zeros(1)\n"


def pt2(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("net/archive_format", "pt2")
    return path


@pytest.fixture
def team(tmp_path):
    """A team folder: a program, a factory, calibration data, and a list to write."""
    pt2(str(tmp_path / "models" / "kws.pt2"))
    (tmp_path / "models" / "det.py").write_text(FACTORY)
    (tmp_path / "models" / "calib.npy").write_bytes(b"\x93NUMPY")
    return tmp_path


def read(folder, text, reserved=RESERVED):
    path = folder / "models" / "list.txt"
    path.write_text(text)
    return read_model_list(str(path), reserved)


def test_a_list_of_programs_factories_and_variants(team):
    entries = read(team, "# the team's models\n\n"
                         "kws.pt2                # a program\n"
                         "det.py:build calibration=npy:calib.npy\n")
    folder = str(team / "models")
    assert [(e.name, e.line) for e in entries] == [("kws", 3), ("det", 4)]
    assert entries[0].source == os.path.join(folder, "kws.pt2") and entries[0].calibration is None
    assert entries[0].inputs == (os.path.join(folder, "kws.pt2"),)
    assert entries[1].source == os.path.join(folder, "det.py") + ":build"
    assert entries[1].calibration == "npy:" + os.path.join(folder, "calib.npy")
    assert entries[1].inputs == (os.path.join(folder, "det.py"), os.path.join(folder, "calib.npy"))


def test_paths_with_spaces_a_default_function_digits_and_a_byte_order_mark(team):
    pt2(str(team / "models" / "my net.pt2"))
    (team / "models" / "list.txt").write_text("\ufeff'my net.pt2'\ndet.py calibration=digits\n",
                                              encoding="utf-8")
    entries = read_model_list(str(team / "models" / "list.txt"), RESERVED)
    assert [e.name for e in entries] == ["my_net", "det"]
    assert entries[1].source.endswith("det.py:build") and entries[1].calibration == "digits"


def test_a_pt2e_zoo_variant_reads_its_weights(team):
    entry, = read(team, "lenet5_pt2e\n")
    assert (entry.name, entry.source) == ("lenet5_pt2e", "lenet5_pt2e")
    assert entry.inputs[0].endswith(os.path.join("models", "checkpoints", "lenet5_qat.pt"))


BAD = [
    ("nothere.pt2", "nothere.pt2 does not exist", 1),
    ("kws.pt2\nresnet9000", "unknown model 'resnet9000'", 2),
    ("kws.pt2\n\n../models/kws.pt2", "would build as 'kws', like line 1", 3),
    ("kws.pt2\nsub/kws.py", "sub/kws.py does not exist", 2),
    ("notes.txt", "notes.txt is not a model file", 1),
    ("junk.pt2", "not a PT2 archive", 1),
    ("lenet5.pt2", "would build as 'lenet5', the name of a zoo model", 1),
    ("inference.pt2", "the name of the host inference program", 1),
    ("lenet5", "lenet5 is a zoo model, not a model file", 1),
    ("det.py:buld", "det.py defines no function buld()", 1),
    ("det.py:2x", "'2x' is not a Python function name", 1),
    ("broken.py", "the factory file is not valid Python", 1),
    ("deep.py", "nested too deeply for Python to parse", 1),
    ("kws.pt2 calibration=digits", "calibration= applies to a factory file", 1),
    ("det.py calib=digits", "'calib=digits' is not an option", 1),
    ("det.py calibration=imagenet", "unknown calibration data 'imagenet'", 1),
    ("det.py calibration=npy:none.npy", "none.npy does not exist", 1),
    ("'kws.pt2", "No closing quotation", 1),
]


@pytest.mark.parametrize("text, what, line", BAD, ids=[b[1] for b in BAD])
def test_a_bad_line_is_refused_with_the_list_and_line(team, text, what, line):
    (team / "models" / "junk.pt2").write_text("junk")
    pt2(str(team / "models" / "lenet5.pt2"))
    pt2(str(team / "models" / "inference.pt2"))
    (team / "models" / "broken.py").write_text("def build(:\n")
    (team / "models" / "deep.py").write_text("x = " + "-" * 200_000 + "1\ndef build():\n    pass\n")
    with pytest.raises(NncError) as e:
        read(team, text + "\n")
    assert what in str(e.value.what), e.value.format()
    path = str(team / "models" / "list.txt")
    assert e.value.where.startswith(f"{path}, line {line}: "), e.value.format()
    assert e.value.fix, "no fix given"


@pytest.mark.parametrize("text", ["", "# only comments\n\n"])
def test_a_list_without_models_is_refused(team, text):
    with pytest.raises(NncError, match="names no model"):
        read(team, text)


def test_a_missing_list_or_a_folder_is_refused(team):
    with pytest.raises(NncError, match="does not exist") as e:
        read_model_list(str(team / "no-list.txt"), RESERVED)
    assert e.value.where == f"models={team / 'no-list.txt'}"
    with pytest.raises(NncError, match="is a folder"):
        read_model_list(str(team), RESERVED)


def test_the_factory_is_not_run(team):
    (team / "models" / "side.py").write_text(f"open({str(team / 'ran')!r}, 'w').close()\n"
                                             "def build():\n    pass\n")
    read(team, "side.py\n")
    assert not (team / "ran").exists(), "reading the list ran the factory file"
