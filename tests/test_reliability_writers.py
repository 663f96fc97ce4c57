"""Writers, checkpoints and the IMX681 configuration, tried as a careless or hostile user would.

* Output folders (nnc.outdir, used by export, deploy, the IMX681 and DIANA compilers): only a
  folder nnc made is replaced; '.', a parent of the working directory, the repository, $HOME and
  '/' never are; a failure leaves the previous output intact and no temporary files; modes follow
  the umask.
* Checkpoints: loaded with torch's safe loader only; a pickle that would run code is refused
  (the marker file it would create never appears), garbage / truncated / empty files are user
  errors (exit 2).
* IMX681 configuration: byte order mark, numbers, paths relative to the configuration file, and
  property tests (hypothesis): garbled text never gives a traceback, bad input never exit 0.
"""
import glob
import os
import stat
import subprocess
import sys

import pytest

from conftest import ROOT

from nnc import outdir
from nnc.errors import NncError

torch = pytest.importorskip("torch")

TOOLS = os.path.join(ROOT, "tools")
I2C_CFG = os.path.join(ROOT, "firmware", "imx681", "configs",
                       "imx681_pytorch_classification_with_state_i2c.cfg")


def run_tool(script, *args, cwd=None, umask=None):
    def child():
        if umask is not None:
            os.umask(umask)
    r = subprocess.run([sys.executable, os.path.join(TOOLS, script), *map(str, args)], cwd=cwd,
                       capture_output=True, text=True, preexec_fn=child)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def user_folder(path):
    """A folder of the user's: a clone with .git and some work."""
    (path / ".git").mkdir(parents=True)
    (path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (path / "notes.txt").write_text("my work\n")
    return path


def snapshot(path):
    return {os.path.relpath(os.path.join(d, f), path): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(path) for f in files}


def leftovers(parent):
    return [n for n in os.listdir(parent) if ".tmp-" in n or ".old-" in n or n.endswith(".tmp")]


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class ReadOnly:
    """A folder nobody may write into, even root (chattr +i); skipped without the means."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.path.mkdir()
        if os.geteuid() != 0:
            os.chmod(self.path, 0o555)
            return self.path
        r = subprocess.run(["chattr", "+i", str(self.path)], capture_output=True, text=True)
        if r.returncode != 0:
            if os.environ.get("CI") == "true":
                pytest.fail(f"chattr +i is needed for the read-only folder test as root: {r.stderr}")
            pytest.skip(f"running as root without chattr +i ({r.stderr.strip()}): no read-only folder")
        return self.path

    def __exit__(self, *exc):
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(self.path)], capture_output=True)
        else:
            os.chmod(self.path, 0o755)


# ---------------------------------------------------------------------------------------------
# nnc.outdir: the one writer
# ---------------------------------------------------------------------------------------------
def fill(path, files, where="--out"):
    with outdir.output_dir(str(path), where) as tmp:
        for name, text in files.items():
            outdir.write_file(os.path.join(tmp, name), text)


def test_output_dir_new_then_replaced(tmp_path):
    out = tmp_path / "gen"
    fill(out, {"a.c": "1", "b.h": "2"})
    assert sorted(os.listdir(out)) == [outdir.MARKER, "a.c", "b.h"]
    fill(out, {"c.c": "3"})
    assert sorted(os.listdir(out)) == [outdir.MARKER, "c.c"]
    assert leftovers(tmp_path) == []


def test_output_dir_left_as_it_is_when_a_run_writes_the_same_files(tmp_path):
    """A repeated export (another build process, a cache) must not make the files vanish under a
    reader, even for an instant: the same inode, and the build's own files in it stay. Any
    difference replaces the folder as a whole."""
    out = tmp_path / "gen"
    fill(out, {"a.c": "1", "b.h": "2"})
    outdir.write_file(os.path.join(out, "a.os"), "object the build put here")
    inode = os.stat(out).st_ino
    fill(out, {"a.c": "1", "b.h": "2"})
    assert os.stat(out).st_ino == inode
    assert sorted(os.listdir(out)) == [outdir.MARKER, "a.c", "a.os", "b.h"]
    fill(out, {"a.c": "1", "b.h": "2 changed"})
    assert os.stat(out).st_ino != inode
    assert sorted(os.listdir(out)) == [outdir.MARKER, "a.c", "b.h"]
    fill(out, {"a.c": "1"})          # a file fewer is a difference too
    assert sorted(os.listdir(out)) == [outdir.MARKER, "a.c"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_output_dir_modes_follow_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        fill(tmp_path / "gen", {"a.c": "1"})
        outdir.write_file(str(tmp_path / "single.txt"), "x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "gen") == 0o777 & ~mask
    assert mode(tmp_path / "gen" / "a.c") == 0o666 & ~mask
    assert mode(tmp_path / "single.txt") == 0o666 & ~mask


def test_output_dir_refuses_a_folder_it_did_not_make(tmp_path):
    user = user_folder(tmp_path / "mine")
    before = snapshot(user)
    with pytest.raises(NncError) as e:
        fill(user, {"a.c": "1"})
    assert "was not made by nnc" in e.value.what and e.value.where == "--out" and e.value.fix
    assert snapshot(user) == before and leftovers(tmp_path) == []


def test_output_dir_refuses_pre_marker_output_with_a_hint(tmp_path):
    old = tmp_path / "gen"
    old.mkdir()
    (old / "tvmgen_lenet5.os").write_text("an object of an older build")
    with pytest.raises(NncError) as e:
        fill(old, {"a.c": "1"})
    assert "delete it once" in e.value.fix and os.listdir(old) == ["tvmgen_lenet5.os"]


def test_output_dir_takes_empty_and_old_diana_folders(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)        # build tools pre-create folders
    fill(tmp_path / "empty", {"a.c": "1"})
    old = tmp_path / "diana"
    old.mkdir()
    (old / ".diana_build").write_text("")
    (old / "placement_report.txt").write_text("old")
    fill(old, {"a.c": "1"})
    assert sorted(os.listdir(old)) == [outdir.MARKER, "a.c"]


@pytest.mark.parametrize("which", ["cwd", "parent_of_cwd", "repository", "home", "root"])
def test_output_dir_never_replaces_protected_folders(tmp_path, monkeypatch, which):
    work = tmp_path / "clone" / "sub"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    target = {"cwd": ".", "parent_of_cwd": "..", "repository": ROOT, "home": str(tmp_path / "home"),
              "root": "/"}[which]
    marker = os.path.join(target, outdir.MARKER)
    if which in ("cwd", "parent_of_cwd", "home"):
        open(marker, "w").close()                     # even a folder carrying the marker
    with pytest.raises(NncError) as e:
        fill(target, {"a.c": "1"})
    assert "nnc replaces its output folder as a whole" in e.value.what
    assert os.path.isdir(work) and not os.path.exists(os.path.join(target, "a.c"))


def test_output_dir_failure_keeps_the_previous_output(tmp_path):
    out = tmp_path / "gen"
    fill(out, {"a.c": "old"})
    before = snapshot(out)
    with pytest.raises(RuntimeError):
        with outdir.output_dir(str(out), "--out") as tmp:
            outdir.write_file(os.path.join(tmp, "a.c"), "new")
            raise RuntimeError("the compiler failed half-way")
    assert snapshot(out) == before and leftovers(tmp_path) == []


def test_output_dir_file_and_read_only_targets(tmp_path):
    (tmp_path / "f").write_text("a file")
    with pytest.raises(NncError, match="is not a folder"):
        fill(tmp_path / "f", {"a.c": "1"})
    with ReadOnly(tmp_path / "ro") as ro:
        with pytest.raises(NncError, match="cannot write output folder"):
            fill(ro / "gen", {"a.c": "1"})
    assert (tmp_path / "f").read_text() == "a file"


def test_write_file_leaves_no_temporary_on_failure(tmp_path):
    with pytest.raises(TypeError):
        outdir.write_file(str(tmp_path / "x"), object())
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# the tools: export, deploy, IMX681, DIANA never delete a user's folder
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tool,args", [
    ("export.py", ["--model", "lenet5", "--out"]),
    ("deploy.py", ["--model", "lenet5", "--out"]),
    ("diana_compile.py", ["--graph", "single_layer", "--samples", "1", "--out"]),
    ("imx681_compile.py", ["--config", I2C_CFG, "--output-dir"]),
])
def test_tools_refuse_the_working_copy_and_user_folders(tmp_path, tool, args):
    clone = user_folder(tmp_path / "clone")
    before = snapshot(clone)
    for target in (".", str(clone)):
        r = run_tool(tool, *args, target, cwd=clone)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "error:" in r.stderr and "fix:" in r.stderr
        assert snapshot(clone) == before, f"{tool} {target} changed the folder"
    assert leftovers(tmp_path) == [] and leftovers(clone) == []


def test_imx681_output_directory_parent_is_refused(tmp_path):
    """`OUTPUT_DIRECTORY ../` wiped the parent folder."""
    clone = user_folder(tmp_path / "clone")
    cfg = clone / "configs" / "a.cfg"
    cfg.parent.mkdir()
    cfg.write_text(open(I2C_CFG).read().replace("../../../build/imx681/stateful/i2c", "../"))
    before = snapshot(clone)
    r = run_tool("imx681_compile.py", "--config", cfg, cwd=cfg.parent)
    assert r.returncode == 2 and f"{cfg}:" in r.stderr, r.stderr
    assert snapshot(clone) == before


def test_imx681_relative_paths_follow_the_configuration_file(tmp_path):
    """OUTPUT_DIRECTORY and MODEL_CHECKPOINT in a file: relative to its folder; --output-dir:
    relative to the working directory."""
    import shutil
    confdir, elsewhere = tmp_path / "conf", tmp_path / "elsewhere"
    confdir.mkdir()
    elsewhere.mkdir()
    shutil.copy(os.path.join(ROOT, "models", "checkpoints", "stateful_int8.pt"), confdir / "mine.pt")
    cfg = confdir / "a.cfg"
    cfg.write_text(open(I2C_CFG).read().replace("../../../build/imx681/stateful/i2c", "pkg")
                   + "MODEL_CHECKPOINT mine.pt\n")
    r = run_tool("imx681_compile.py", "--config", cfg, "--quiet", cwd=elsewhere, umask=0o022)
    assert r.returncode == 0, r.stderr
    assert (confdir / "pkg" / "summary.txt").exists() and os.listdir(elsewhere) == []
    r = run_tool("imx681_compile.py", "--config", cfg, "--quiet", "--output-dir", "cli", cwd=elsewhere,
                 umask=0o022)
    assert r.returncode == 0, r.stderr
    assert (elsewhere / "cli" / "summary.txt").exists()
    assert mode(elsewhere / "cli") == 0o755 and mode(elsewhere / "cli" / "summary.txt") == 0o644


def test_export_replaces_its_own_output_with_normal_modes(tmp_path):
    out = tmp_path / "gen"
    for _ in range(2):
        r = run_tool("export.py", "--model", "ffn", "--out", out, "--quiet", umask=0o022)
        assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == [outdir.MARKER, "model.json", "tvmgen_ffn.c", "tvmgen_ffn.h"]
    assert {mode(out / f) for f in os.listdir(out)} == {0o644} and mode(out) == 0o755


def test_export_out_is_a_file_or_read_only(tmp_path):
    (tmp_path / "f").write_text("mine")
    r = run_tool("export.py", "--model", "ffn", "--out", tmp_path / "f")
    assert r.returncode == 2 and "is not a folder" in r.stderr
    with ReadOnly(tmp_path / "ro") as ro:
        r = run_tool("export.py", "--model", "ffn", "--out", ro / "gen")
        assert r.returncode == 2 and "cannot write output folder" in r.stderr, r.stderr
    assert (tmp_path / "f").read_text() == "mine"


def test_failed_export_changes_nothing(tmp_path, monkeypatch):
    """All or nothing: no model.json.tmp, no new C beside the old model.json."""
    from nnc.cli.main import main as nnc
    out = tmp_path / "gen"
    assert nnc(["export", "--model", "ffn", "--out", str(out), "--quiet"]) == 0
    (out / "tvmgen_ffn.c").write_text("/* previous output */\n")
    before = snapshot(out)

    def disk_full(path, data):
        raise OSError(28, "No space left on device", path)
    monkeypatch.setattr(outdir, "write_json", disk_full)
    assert nnc(["export", "--model", "ffn", "--out", str(out), "--quiet"]) == 2
    assert snapshot(out) == before and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# checkpoints: the safe loader only
# ---------------------------------------------------------------------------------------------
class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "CODE_RAN"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": RunsCode(marker)}}, path)
    return path, marker


def bad_checkpoints(tmp_path):
    real = open(os.path.join(ROOT, "models", "checkpoints", "stateful_int8.pt"), "rb").read()
    files = {"empty.pt": b"", "garbage.pt": b"not a checkpoint\n" * 20, "truncated.pt": real[:len(real) // 2],
             "truncated_head.pt": real[:100]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    return sorted(files) + ["list.pt", "module.pt"]


def test_committed_checkpoints_load_with_the_safe_loader():
    paths = sorted(glob.glob(os.path.join(ROOT, "models", "checkpoints", "*.pt")))
    assert len(paths) >= 10
    for p in paths:
        torch.load(p, map_location="cpu", weights_only=True)


def test_saved_checkpoints_load_with_the_safe_loader(tmp_path):
    from models import recipes
    from models.registry import get
    q = get("ffn").load_quantized()
    recipes.save_checkpoint(str(tmp_path / "q.pt"), "ffn", "int8", q.state_dict())
    q2 = get("ffn").load_quantized(str(tmp_path / "q.pt"))
    x = torch.rand(5, *get("ffn").input_shape[1:])
    assert torch.equal(q(x), q2(x))


def test_load_checkpoint_refuses_code_and_garbage(tmp_path, evil):
    from models import recipes
    path, marker = evil
    with pytest.raises(recipes.CheckpointError, match="posix.system") as e:
        recipes.load_checkpoint(str(path))
    assert "refused" in e.value.what and "state_dict" in e.value.fix and not marker.exists()
    for name in bad_checkpoints(tmp_path):
        with pytest.raises(recipes.CheckpointError) as e:
            recipes.load_checkpoint(str(tmp_path / name))
        assert name in e.value.what and e.value.fix


@pytest.mark.parametrize("key,value", [("quant.scale", float("nan")), ("quant.scale", 0.0),
                                       ("conv1.scale", -1.0), ("conv1.bias", float("inf")),
                                       ("fc1._packed_params._packed_params", "nan bias")])
def test_checkpoint_with_nan_inf_or_bad_scales_is_refused(tmp_path, key, value):
    """A NaN/inf weight, bias or scale (a diverged training run, a hand-edited file): torch quantizes
    a NaN bias to an arbitrary int32 and compiled it without a word; refused, naming the tensor."""
    from models import recipes
    from models.registry import get
    blob = torch.load(os.path.join(ROOT, "models", "checkpoints", "lenet5_int8.pt"), weights_only=True)
    sd = blob["state_dict"]
    if value == "nan bias":
        weight, bias = sd[key]
        sd[key] = (weight, torch.full_like(bias, float("nan")))
    else:
        sd[key] = torch.full_like(sd[key], value)
    path = tmp_path / "bad.pt"
    torch.save(blob, path)
    with pytest.raises(recipes.CheckpointError, match="NaN or infinite") as e:
        get("lenet5").load_quantized(str(path))
    assert f"'{key}'" in e.value.what and str(path) in e.value.what


def test_checkpoint_zip_bomb_is_refused_by_its_declared_size(tmp_path):
    """A 1 MB checkpoint whose tensor member inflates to 1.1 GiB: torch.load inflated it whole (a
    2 GiB one took 2.3 GB of memory). Both readers refuse it from the zip's directory."""
    import zipfile
    from models import recipes
    from nnc.errors import NncError
    from nnc.frontend.model_files import load_state_dict
    torch.save({"w": torch.zeros(4)}, tmp_path / "small.pt")
    with zipfile.ZipFile(tmp_path / "small.pt") as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w") as out:
        for name, body in members.items():
            if name.endswith("data/0"):
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with out.open(info, "w", force_zip64=True) as f:
                    for _ in range(72):
                        f.write(bytes(1 << 24))
            else:
                out.writestr(name, body)
    for read in (recipes.load_checkpoint, load_state_dict):
        with pytest.raises(NncError, match=r"unpacks to 1,207,959,\d{3} bytes, more than the 1,073,741,824"):
            read(str(bomb))


def test_malicious_checkpoint_through_every_tool(tmp_path, evil):
    path, marker = evil
    runs = [run_tool("quantize.py", "--model", "ffn", "--float-checkpoint", path, "--out", tmp_path / "o.pt",
                     "--no-eval", "--quiet"),
            run_tool("evaluate.py", "--model", "ffn", "--checkpoint", path, "--limit", "2", "--quiet")]
    cfg = tmp_path / "a.cfg"
    cfg.write_text(open(I2C_CFG).read().replace("../../../build/imx681/stateful/i2c", "pkg")
                   + f"MODEL_CHECKPOINT {path}\n")
    runs.append(run_tool("imx681_compile.py", "--config", cfg))
    for r in runs:
        assert r.returncode == 2, r.stdout + r.stderr
        assert "refused" in r.stderr and "posix.system" in r.stderr
    assert not marker.exists() and not (tmp_path / "o.pt").exists() and not (tmp_path / "pkg").exists()


def test_bad_checkpoints_are_user_errors(tmp_path):
    names = bad_checkpoints(tmp_path)
    cfg = tmp_path / "a.cfg"
    base = open(I2C_CFG).read().replace("../../../build/imx681/stateful/i2c", "pkg")
    for name in ("garbage.pt", "truncated.pt", "empty.pt"):
        cfg.write_text(base + f"MODEL_CHECKPOINT {name}\n")
        r = run_tool("imx681_compile.py", "--config", cfg)
        assert r.returncode == 2 and "internal error" not in r.stderr and name in r.stderr, r.stderr
        assert f"{cfg}:" in r.stderr
    assert {"empty.pt", "truncated.pt", "module.pt"} <= set(names)
    for name in ("empty.pt", "truncated.pt", "module.pt"):
        r = run_tool("quantize.py", "--model", "ffn", "--float-checkpoint", tmp_path / name,
                     "--out", tmp_path / "o.pt", "--no-eval", "--quiet")
        assert r.returncode == 2 and name in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["garbage.pt", "truncated_head.pt", "empty.pt", "list.pt"])
def test_export_with_a_bad_checkpoint(tmp_path, monkeypatch, capsys, name):
    from nnc.cli.main import main as nnc
    from models.registry import get
    bad_checkpoints(tmp_path)
    monkeypatch.setattr(get("ffn"), "checkpoint", str(tmp_path / name))
    assert nnc(["export", "--model", "ffn", "--out", str(tmp_path / "gen"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert name in err and "fix:" in err and not (tmp_path / "gen").exists()


# ---------------------------------------------------------------------------------------------
# the IMX681 configuration parser
# ---------------------------------------------------------------------------------------------
from nnc.targets.imx681.config import KEYS, ConfigError, parse_config, resolve_path  # noqa: E402

REGION_LINES = {"PARAMS_START": "0x0", "PARAMS_SIZE": "0x40000", "STATIC_DATA_START": "0x290000",
                "STATIC_DATA_SIZE": "0x10000", "SCRATCH_RAM_START": "0x2A0000",
                "SCRATCH_RAM_SIZE": "0x20000"}
GOOD = dict(REGION_LINES, MODEL="stateful", OUTPUT_DIRECTORY="out", OUTPUT_MODE="C_SOURCES")


def cfg_text(values, bom=False, newline="\n"):
    text = newline.join(f"{k} {v}" for k, v in values.items()) + newline
    return ("\ufeff" if bom else "") + text


def test_byte_order_mark_and_crlf_are_accepted(tmp_path):
    p = tmp_path / "a.cfg"
    p.write_text("\ufeff# a comment first\r\n" + cfg_text(GOOD, newline="\r\n"), newline="")
    assert parse_config(str(p))["MODEL"] == "stateful"
    p.write_text(cfg_text(GOOD, bom=True))
    assert parse_config(str(p))["OUTPUT_MODE"] == "C_SOURCES"


@pytest.mark.parametrize("key,value", [
    ("PROCESSOR_CLOCK_MHZ", v) for v in ("inf", "-inf", "nan", "NaN", "infinity", "1e999", "-5", "0",
                                         "1_000", "0x10", "100MHz", "\u0661\u0660")
] + [
    ("PARAMS_SIZE", v) for v in ("-1", "1_0", "0o7", "0b1", "1.5", "0x", "4294967296", "+4", "\u0663")
] + [("MODEL", "two words"), ("MODEL", "tab\there"), ("OUTPUT_DIRECTORY", "a\x01b"),
     ("NETWORK_NAME", "1abc"), ("MODEL_STATE_AUTO_DETECT", "maybe")])
def test_every_numeric_and_text_key_is_validated(tmp_path, key, value):
    p = tmp_path / "a.cfg"
    p.write_text(cfg_text(dict(GOOD, **{key: value})))
    with pytest.raises(ConfigError) as e:
        parse_config(str(p))
    assert key in e.value.what and e.value.where.startswith(str(p) + ":") and e.value.fix


def test_resolve_path_against_the_file_or_the_command_line(tmp_path, monkeypatch):
    p = tmp_path / "conf" / "a.cfg"
    p.parent.mkdir()
    p.write_text(cfg_text(dict(GOOD, OUTPUT_DIRECTORY="../pkg", MODEL_CHECKPOINT="c.pt")))
    monkeypatch.chdir("/")
    cfg = parse_config(str(p))
    assert resolve_path(cfg, "OUTPUT_DIRECTORY") == str(tmp_path / "pkg")
    assert resolve_path(cfg, "MODEL_CHECKPOINT") == str(tmp_path / "conf" / "c.pt")
    cfg = parse_config(str(p), {"OUTPUT_DIRECTORY": "cli"})
    assert resolve_path(cfg, "OUTPUT_DIRECTORY") == "/cli"


# -- property tests ----------------------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _int_text(n):
    return st.sampled_from([str(n), hex(n), hex(n).upper().replace("0X", "0x")])


GOOD_VALUES = {
    "MODEL": st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True),
    "OUTPUT_DIRECTORY": st.from_regex(r"[A-Za-z0-9_./-]{1,16}", fullmatch=True),
    "MODEL_CHECKPOINT": st.from_regex(r"[A-Za-z0-9_./-]{1,16}", fullmatch=True),
    "MODEL_FILE": st.from_regex(r"[A-Za-z0-9_./-]{1,16}", fullmatch=True),
    "NETWORK_NAME": st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True),
    "OUTPUT_MODE": st.sampled_from(["C_SOURCES", "I2C_IMAGES"]),
    "MEMORY_ORDER": st.sampled_from(["LITTLE_ENDIAN", "BIG_ENDIAN"]),
    "MODEL_STATE_AUTO_DETECT": st.sampled_from(["ON", "off", "True", "no", "1", "0"]),
    "MODEL_STATE_READ_BUFFER_ID": st.integers(0, 2**32 - 1).flatmap(_int_text),
    "MODEL_STATE_WRITE_BUFFER_ID": st.integers(0, 2**32 - 1).flatmap(_int_text),
    "PROCESSOR_CLOCK_MHZ": st.floats(1e-3, 1e6).map(repr),
}
BAD_INTS = ["-1", "1_0", "0o7", "0b1", "1.5", "0x", "4294967296", "0x100000000", "+4", "\u0663", "ten"]
BAD_VALUES = {
    "MODEL": ["two words", "a\tb", "x\x07"],
    "OUTPUT_DIRECTORY": ["a\x00b", "a\x1bb"],
    "MODEL_CHECKPOINT": ["a\x7fb"],
    "MODEL_FILE": ["a\x00b"],
    "NETWORK_NAME": ["1abc", "a-b", "a.b"],
    "OUTPUT_MODE": ["c_sources", "BOTH"],
    "MEMORY_ORDER": ["MIDDLE_ENDIAN"],
    "MODEL_STATE_AUTO_DETECT": ["maybe", "2"],
    "MODEL_STATE_READ_BUFFER_ID": BAD_INTS,
    "MODEL_STATE_WRITE_BUFFER_ID": BAD_INTS,
    "PROCESSOR_CLOCK_MHZ": ["inf", "nan", "-1", "0", "1e999", "-0.0", "1_0", "0x10", "abc"],
    **{k: BAD_INTS for k in REGION_LINES},
}


@st.composite
def configurations(draw):
    """(text, is_bad): every key absent, good or bad; maybe a duplicate or an unknown key."""
    lines, bad, present = [], False, set()
    for key, spec in KEYS.items():
        choice = draw(st.sampled_from(["good", "good", "good", "bad", "absent"]))
        if choice == "absent":
            bad |= spec.required
            continue
        if choice == "bad":
            value, bad = draw(st.sampled_from(BAD_VALUES[key])), True
        else:
            value = REGION_LINES[key] if key in REGION_LINES else draw(GOOD_VALUES[key])
        present.add(key)
        lines.append(f"{key}{draw(st.sampled_from([' ', '   ', chr(9)]))}{value}"
                     + draw(st.sampled_from(["", "  # comment", "\t"])))
    if ("MODEL_STATE_READ_BUFFER_ID" in present) != ("MODEL_STATE_WRITE_BUFFER_ID" in present):
        bad = True
    if ("MODEL" in present) == ("MODEL_FILE" in present):    # exactly one of them
        bad = True
    if lines and draw(st.booleans()) and draw(st.booleans()):
        lines.append(draw(st.sampled_from(lines)))                 # a key given twice
        bad = True
    if draw(st.booleans()) and draw(st.booleans()):
        lines.append(draw(st.sampled_from(["OUTPUT_DIR x", "model stateful", "MODEL_STATE x", "="])))
        bad = True
    lines = draw(st.permutations(lines))
    extra = draw(st.lists(st.sampled_from(["", "# comment", "   ", "\t# x"]), max_size=3))
    text = "\n".join(list(lines) + extra) + draw(st.sampled_from(["", "\n", "\r\n"]))
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    return ("\ufeff" if draw(st.booleans()) else "") + text, bad


@PROPERTY
@given(configurations())
def test_property_bad_configurations_are_refused_good_ones_accepted(tmp_path, case):
    text, bad = case
    p = tmp_path / "p.cfg"
    p.write_text(text, newline="")
    if bad:
        with pytest.raises(ConfigError):
            parse_config(str(p))
    else:
        parse_config(str(p))


@PROPERTY
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400),
                 st.lists(st.sampled_from(list(KEYS) + ["#", " ", "\t", "\r", "\n", "0x1", "inf", "\ufeff",
                                                        "\x00", "\u2028", "ON", "-1", "C_SOURCES"]),
                          max_size=60).map("".join)))
def test_property_garbled_text_gives_a_config_error_or_a_config(tmp_path, data):
    p = tmp_path / "g.cfg"
    (p.write_bytes if isinstance(data, bytes) else lambda d: p.write_text(d, newline=""))(data)
    try:
        cfg = parse_config(str(p))
    except ConfigError as e:
        assert e.what
        return
    for key, spec in KEYS.items():               # accepted: then every required key is there
        assert not spec.required or cfg[key] is not None


def test_cli_on_garbled_configurations_exits_2_without_writing(tmp_path):
    import random
    rng = random.Random(681)
    good = open(I2C_CFG).read().replace("../../../build/imx681/stateful/i2c", "pkg")
    cases = ["\ufeff" + good.replace("PROCESSOR_CLOCK_MHZ     100", "PROCESSOR_CLOCK_MHZ inf"),
             good + "OUTPUT_MODE C_SOURCES\n",
             bytes(rng.randrange(256) for _ in range(300)),
             good.replace("PARAMS_SIZE             0x00040000", "PARAMS_SIZE 0x4_0000")]
    for i, case in enumerate(cases):
        p = tmp_path / f"c{i}.cfg"
        p.write_bytes(case) if isinstance(case, bytes) else p.write_text(case)
        r = run_tool("imx681_compile.py", "--config", p, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.startswith("error:"), r.stderr
        assert not (tmp_path / "pkg").exists()
