"""The test tiers: registered once (pytest.ini), given to every test file by tests/conftest.py."""
import configparser
import glob
import os

from conftest import ROOT, TIERS, tier_of


def registered_markers() -> set:
    ini = configparser.ConfigParser()
    ini.read(os.path.join(ROOT, "pytest.ini"))
    lines = ini["pytest"]["markers"].strip().splitlines()
    return {line.split(":", 1)[0].strip() for line in lines if line.strip()}


def test_every_tier_is_registered_in_pytest_ini():
    assert registered_markers() == set(TIERS)


def test_files_get_their_tier():
    tests = os.path.join(ROOT, "tests")
    assert tier_of(os.path.join(tests, "unit", "test_planner.py"), "test_x") == "unit"
    assert tier_of(os.path.join(tests, "test_stm32.py"), "test_x") == "firmware"
    assert tier_of(os.path.join(tests, "test_diana.py"), "test_firmware_seed_graphs_under_qemu") == "firmware"
    assert tier_of(os.path.join(tests, "test_diana.py"), "test_grid_covers_htvm") == "bitexact"
    assert tier_of(os.path.join(tests, "test_errors.py"), "test_x") == "tools"
    assert tier_of(os.path.join(tests, "test_some_new_feature.py"), "test_x") == "bitexact"
    for path in glob.glob(os.path.join(tests, "**", "test_*.py"), recursive=True):
        assert tier_of(path, "test_x") in TIERS
