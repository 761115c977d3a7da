"""Runs transformers' shared model tests against eagle-hf (`test_eagle_shared.py`) and prints per-config counts.

    python tools/transformers_shared_tests/run.py --tests-from DIR [--only LlavaPreset] [-- extra pytest args]

DIR holds transformers' `tests/` package, at least `test_modeling_common.py`, `test_configuration_common.py`,
`generation/test_utils.py` and `utils/test_configuration_utils.py` (the sdist of the installed transformers carries the
top-level files; the rest come from a transformers checkout of the same version). Missing `exporters/test_export.py`
is replaced by an empty mixin (the export tests are out of scope), as is any missing `__init__.py`. Nothing is
downloaded; DIR is copied, never changed.
"""

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REQUIRED = ("test_modeling_common.py", "test_configuration_common.py", "generation/test_utils.py")


def prepare(tests_from, workdir):
    source = Path(tests_from) / "tests"
    missing = [name for name in REQUIRED if not (source / name).is_file()]
    if missing:
        raise SystemExit(f"{source} lacks {missing}: expected transformers' tests/ package (see this file's docstring).")
    tests = Path(workdir) / "tests"
    shutil.copytree(source, tests)
    for folder in {tests, *(path.parent for path in tests.rglob("*.py"))}:
        (folder / "__init__.py").touch()
    export = tests / "exporters" / "test_export.py"
    if not export.exists():
        export.parent.mkdir(exist_ok=True)
        (export.parent / "__init__.py").touch()
        export.write_text("class ExportTesterMixin:  # stand-in: the export tests are out of scope\n    pass\n")
    shutil.copy(HERE / "test_eagle_shared.py", tests / "test_eagle_shared.py")
    return tests


def summarize(junit):
    counts = collections.defaultdict(collections.Counter)
    reasons = collections.defaultdict(collections.Counter)
    failures = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        config = case.get("classname").rsplit(".", 1)[-1]
        if case.find("failure") is not None or case.find("error") is not None:
            counts[config]["failed"] += 1
            failures.append(f"{config}.{case.get('name')}")
        elif case.find("skipped") is not None:
            counts[config]["skipped"] += 1
            reasons[config][case.find("skipped").get("message", "").split(": ", 1)[-1][:140]] += 1
        else:
            counts[config]["passed"] += 1
    for config, count in counts.items():
        print(f"{config}: {count['passed']} passed, {count['failed']} failed, {count['skipped']} skipped")
        for reason, number in reasons[config].most_common():
            print(f"    {number:3d} skipped: {reason}")
    for name in failures:
        print(f"FAILED {name}")
    return not failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests-from", required=True, help="folder holding transformers' tests/ package")
    parser.add_argument("--only", help="a pytest -k expression, e.g. LlavaPreset")
    args, extra = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        prepare(args.tests_from, workdir)
        junit = Path(workdir) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "tests/test_eagle_shared.py", "-q", "-p", "no:cacheprovider",
                   "--tb=short", f"--junitxml={junit}", *(["-k", args.only] if args.only else []), *extra]
        env = dict(os.environ, EAGLE_HF_REPO=str(REPO), OMP_NUM_THREADS="1")
        subprocess.run(command, cwd=workdir, env=env)
        return 0 if summarize(junit) else 1


if __name__ == "__main__":
    sys.exit(main())
