"""The one `nnc` command (nnc.cli): every subcommand registers its parser and answers --help; one
exit policy (user error 2 without a traceback, internal error 3 with the --debug hint, Ctrl-C 130);
`python -m nnc`, the console script and the old tools/<name>.py paths all lead to it; nothing edits
sys.path; and the issue-13 leftovers (deploy= named in errors, evaluate --c-lib checked first,
flash --elf checked to be an ARM ELF, a clear message outside the set-up environment)."""
import os
import re
import subprocess
import sys

import pytest

from nnc.cli import COMMANDS
from nnc.cli.main import main as nnc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_PATHS = {"export": "export", "deploy": "deploy", "divergence": "divergence", "evaluate": "evaluate",
             "quantize": "quantize", "quantize-pt2e": "quantize_pt2e", "train": "train",
             "diana": "diana_compile", "imx681": "imx681_compile", "flash": "flash",
             "serial": "serial_client", "pad": "digit_pad", "plots": "plots"}


def run(*argv, cwd=ROOT, python=(sys.executable,)):
    return subprocess.run([*python, *argv], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_the_subcommands_of_the_issue_are_all_there():
    assert set(COMMANDS) == set(OLD_PATHS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_answers_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        nnc([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: nnc {name}") and "--debug" in out


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        nnc(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert re.search(rf"^\s+{re.escape(name)}\b", out, re.M), f"{name} missing from nnc --help"
    assert "exit status" in out.lower()


@pytest.mark.parametrize("sub", ["memory-map", "footprint", "all"])
def test_plots_subcommands_answer_help(sub):
    with pytest.raises(SystemExit) as e:
        nnc(["plots", sub, "--help"])
    assert e.value.code == 0


def test_python_dash_m_nnc_and_the_console_script():
    r = run("-m", "nnc", "--help")
    assert r.returncode == 0 and "usage: nnc" in r.stdout, r.stderr
    r = run("-m", "nnc", "export", "--model", "no_such_model", "--out", "unused")
    assert r.returncode == 2 and "error: unknown model 'no_such_model'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    script = os.path.join(os.path.dirname(sys.executable), "nnc")
    if not os.path.isfile(script):
        if os.environ.get("CI") == "true":
            pytest.fail(f"the console script {script} is missing: ./scons installs the project")
        pytest.skip(f"the project is not installed into this environment ({script} missing): ./scons")
    r = run("--help", python=(script,))
    assert r.returncode == 0 and "usage: nnc" in r.stdout, r.stderr


@pytest.mark.parametrize("name", sorted(OLD_PATHS))
def test_old_script_paths_are_the_same_command(name):
    r = run(os.path.join("tools", OLD_PATHS[name] + ".py"), "--help")
    assert r.returncode == 0 and r.stdout.startswith(f"usage: nnc {name}"), r.stderr


def test_usage_errors_exit_2_without_traceback(capsys):
    with pytest.raises(SystemExit) as e:     # argparse: a missing required option
        nnc(["export", "--model", "lenet5"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:     # no subcommand
        nnc([])
    assert e.value.code == 2
    assert nnc(["diana"]) == 2               # no --graph/--script: an NncError
    err = capsys.readouterr().err
    assert "where: --graph / --script" in err and "Traceback" not in err


def test_user_error_exits_2_with_what_where_fix(tmp_path, capsys):
    assert nnc(["imx681", "--config", str(tmp_path / "missing.cfg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.cfg" in err and "Traceback" not in err


def _broken_export(*args, **kwargs):
    return {}["a bug"]      # KeyError inside nnc: an internal error


def test_internal_error_exits_3_with_the_debug_hint(monkeypatch, capsys):
    from nnc.cli import export
    monkeypatch.setattr(export, "export", _broken_export)
    monkeypatch.delenv("NNC_DEBUG", raising=False)
    assert nnc(["export", "--model", "lenet5", "--out", "unused"]) == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "KeyError" in err and "rerun with --debug" in err
    assert "Traceback" not in err
    for argv in (["--debug", "export"], ["export", "--debug"]):    # before or after the name
        assert nnc(argv + ["--model", "lenet5", "--out", "unused"]) == 3
        err = capsys.readouterr().err
        assert "Traceback" in err and "_broken_export" in err and "internal error" in err


def test_ctrl_c_exits_130_without_traceback(monkeypatch, capsys):
    from nnc.cli import export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(export, "export", interrupted)
    assert nnc(["export", "--model", "lenet5", "--out", "unused"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_a_missing_package_is_a_set_up_error(monkeypatch, capsys):
    from nnc.cli import export

    def no_torch(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")
    monkeypatch.setattr(export, "export", no_torch)
    monkeypatch.delenv("NNC_DEBUG", raising=False)
    assert nnc(["export", "--model", "lenet5", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "'torch' is not installed" in err and "./scons" in err and "Traceback" not in err


def test_outside_the_environment_the_old_paths_say_how_to_set_up():
    """`python -S`: no site-packages, as a Python without the project's venv: a clear message."""
    r = run("-S", os.path.join("tools", "export.py"), "--model", "lenet5", "--out", "unused")
    assert r.returncode == 2, r.stderr
    assert "is not installed for" in r.stderr and "./scons" in r.stderr and "Traceback" not in r.stderr


SYS_PATH_EDIT = re.compile(r"sys\.path\s*(\[|\.insert|\.append|\.extend|\+?=)")


def test_nothing_edits_sys_path():
    offenders = []
    for top in ("tools", "tests", "site_scons", "firmware"):
        for dirpath, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "build")]
            for f in files:
                if f.endswith(".py") or f == "SConscript":
                    path = os.path.join(dirpath, f)
                    for i, line in enumerate(open(path, encoding="utf-8"), 1):
                        if SYS_PATH_EDIT.search(line.split("#")[0]) and path != os.path.abspath(__file__):
                            offenders.append(f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}")
    for f in ("SConstruct",):
        for i, line in enumerate(open(os.path.join(ROOT, f)), 1):
            if SYS_PATH_EDIT.search(line.split("#")[0]):
                offenders.append(f"{f}:{i}: {line.strip()}")
    assert not offenders, "sys.path edits (the project is installed; import it):\n" + "\n".join(offenders)


# ---- issue 13 leftovers ------------------------------------------------------------------------

def test_deploy_errors_name_the_option_the_user_typed(tmp_path, capsys):
    """`scons deploy=DIR` runs `nnc deploy --out-label deploy=`: the error says `where: deploy=`."""
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my file")
    assert nnc(["deploy", "--model", "lenet5", "--out", str(user), "--out-label", "deploy="]) == 2
    err = capsys.readouterr().err
    assert "where: deploy=" in err and "--out" not in err, err
    assert (user / "notes.txt").read_text() == "my file"
    sconstruct = open(os.path.join(ROOT, "SConstruct")).read()
    assert '"--out-label=deploy="' in sconstruct


def test_scons_deploy_error_names_deploy(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my file")
    r = run("-m", "SCons", "-Q", "host", "model=lenet5", f"deploy={user}")
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "where: deploy=" in out and "where: --out" not in out, out[-3000:]
    assert (user / "notes.txt").read_text() == "my file"


def test_evaluate_checks_the_c_library_before_the_evaluation(tmp_path, capsys):
    bogus = tmp_path / "libbogus.so"
    bogus.write_text("not a library\n")
    assert nnc(["evaluate", "--model", "lenet5", "--c-lib", str(bogus), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "not a shared library" in captured.err and "Traceback" not in captured.err
    assert "accuracy" not in captured.out, "the fp32/int8 evaluation ran before the check"
    assert nnc(["evaluate", "--model", "lenet5", "--c-lib", str(tmp_path / "none.so"), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "does not exist" in captured.err and "accuracy" not in captured.out


@pytest.mark.parametrize("programmer", ["openocd", "stlink"])
def test_flash_refuses_a_file_that_is_not_an_arm_elf(tmp_path, capsys, programmer):
    text = tmp_path / "fw.elf"
    text.write_text("hello\n")
    assert nnc(["flash", "--programmer", programmer, "--elf", str(text)]) == 2
    err = capsys.readouterr().err
    assert "is not an ELF file" in err and "where: --elf" in err and "Traceback" not in err
    host_elf = sys.executable if programmer == "openocd" else os.path.realpath(sys.executable)
    assert nnc(["flash", "--programmer", programmer, "--elf", host_elf]) == 2
    err = capsys.readouterr().err
    assert "another machine" in err and "not a 32-bit ARM firmware" in err, err
    assert not (tmp_path / "fw.bin").exists()
