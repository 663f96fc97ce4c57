"""Options of a firmware team's daily builds: a shared build cache (cache=DIR), parallel tests
(jobs=N), and the model x board matrix (`scons all`, see matrix.py) with the team's list of model
files (models=FILE, nnc.frontend.model_list) beside the zoo (zoo=0: the list alone)."""
from __future__ import annotations

import os

import SCons.CacheDir
from SCons.Script import COMMAND_LINE_TARGETS, BoolVariable, Exit, PathVariable

from nnc.errors import NncError
from nnc.frontend.model_list import read_model_list

import matrix  # noqa: F401  (SConstruct: daily.matrix)

# pytest-xdist's scheduling: a test file's tests stay on one worker (their module fixtures, e.g. a
# firmware build or a QEMU session, are made once), files are handed out as workers free up.
TEST_DIST = "loadfile"


def add_options(variables) -> None:
    variables.Add(PathVariable("cache", "shared build cache folder (SCons CacheDir): a second checkout "
                               "or CI machine with the same cache= fetches generated C, objects, "
                               "libraries and firmware instead of rebuilding them", "",
                               PathVariable.PathAccept))
    variables.Add(PathVariable("models", "scons all: a list of the team's model files to build beside the "
                               "zoo, one per line as model= takes it (net.pt2, net.py:build "
                               "calibration=digits, lenet5_pt2e); paths relative to the list", "",
                               PathVariable.PathAccept))
    variables.Add(BoolVariable("zoo", "scons all: build the zoo models, DIANA's and the IMX681's too "
                               "(zoo=0: only the models= list)", True))
    variables.Add("jobs", "tests: pytest-xdist worker processes: auto (one per core), N, or 1 (serial, "
                  "no workers)", "auto")


def check_options(env) -> None:
    """jobs= must be auto or a positive number; cache= switches the shared cache on."""
    jobs = env["jobs"]
    if jobs != "auto" and not (jobs.isdigit() and int(jobs) >= 1):
        print(f"error: jobs={jobs}: give the number of test worker processes (1 runs the tests "
              "serially) or auto (one per core)")
        Exit(2)
    if env["cache"]:
        cache = os.path.abspath(os.path.expanduser(env["cache"]))
        if os.path.exists(cache) and not os.path.isdir(cache):
            print(f"error: cache={env['cache']} is a file, not a folder\n"
                  "  fix:   give a folder for the build cache (it is created if missing)")
            Exit(2)
        env.CacheDir(cache, custom_class=BuildCache)
    if (env["models"] or not env["zoo"]) and "all" not in COMMAND_LINE_TARGETS:
        option = f"models={env['models']}" if env["models"] else "zoo=0"
        print(f"error: {option} chooses the models of the daily matrix, `scons all`\n"
              f"  fix:   add the target all (./scons all {option}), or drop the option")
        Exit(2)
    if not env["zoo"] and not env["models"]:
        print("error: zoo=0 leaves `scons all` nothing to build\n"
              "  fix:   add models=FILE (the team's list of model files), or drop zoo=0")
        Exit(2)


def listed_models(env, reserved: dict) -> list:
    """The entries of the models= list (nnc.frontend.model_list.ListedModel), checked before
    anything is built: a bad list stops the build with its file and line (exit 2).
    reserved: {name: what already builds under it}."""
    if not env["models"]:
        return []
    try:
        return read_model_list(env["models"], reserved)
    except NncError as e:
        print(e.format())
        Exit(2)


class BuildCache(SCons.CacheDir.CacheDir):
    """SCons's CacheDir, without the targets that are always built (AlwaysBuild: a bench's
    numbers, the run of a firmware, the matrix table): they are this run's results, and SCons
    would otherwise fetch an old run's file instead of running them."""

    def retrieve(self, node) -> bool:
        return False if node.always_build else super().retrieve(node)

    def push(self, node):
        return None if node.always_build else super().push(node)


def pytest_jobs(env) -> list:
    """pytest's arguments for jobs=: none for 1 (serial), else pytest-xdist's."""
    return [] if env["jobs"] == "1" else ["-n", env["jobs"], "--dist", TEST_DIST]
