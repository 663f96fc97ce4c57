"""The seeds' workflows misused as a careless or hostile user would: each test is one mistake
found by running the README's commands with wrong files, and checks that the tool names what
is wrong and where, exits non-zero, and prints no traceback through nnc's code.
"""
import subprocess

from conftest import require_tools
from test_reliability_writers import run_tool


def test_serial_client_refuses_a_file_that_is_not_an_elf(tmp_path):
    """Passing a text file as the firmware used to crash QEMU and end in a pyserial traceback."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for flag in ("--qemu", "--native"):
        r = run_tool("serial_client.py", flag, notes, "--random", "1")
        assert r.returncode == 2, r.stderr
        assert f"{notes} is not an ELF file" in r.stderr
        assert "build it: scons board=" in r.stderr


def test_serial_client_reports_qemu_dying_instead_of_a_traceback(tmp_path):
    """An ELF for the wrong machine (an x86 program) makes QEMU abort: the client says the
    connection was lost, that QEMU exited and with what words; exit 1, no traceback."""
    require_tools("qemu-system-arm", "gcc", needed_for="to run an x86 ELF under QEMU")
    src, elf = tmp_path / "main.c", tmp_path / "x86.elf"
    src.write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", str(src), "-o", str(elf)], check=True)
    r = run_tool("serial_client.py", "--qemu", elf, "--random", "1", "--timeout", "10")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "connection to the firmware lost" in r.stderr or "timeout" in r.stderr, r.stderr
    assert "QEMU exited with status" in r.stderr, r.stderr
