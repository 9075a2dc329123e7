"""The repository stands alone: no file names a path outside the checkout, and a test run
that reads one fails (tests/checkout_guard.py holds both checks)."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.checkout_guard import GUARD, ROOT, OutsideReads, scan_tree

SIBLING = ".." + "/shared"  # spelled in parts so that this file does not match the scan
FILE = "__" + "file__"


def test_no_tracked_file_names_a_path_outside_the_checkout():
    hits = scan_tree(ROOT)
    assert not hits, "These lines name paths outside the checkout:\n" + "\n".join(map(str, hits))


def _git_tree(root: Path, files: dict) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)


def test_the_scan_finds_every_kind_of_escape_and_only_those(tmp_path):
    climb = "Path(__file__).resolve()"
    files = {
        "docs/guide.md": f"ok line\nsee {SIBLING}/specs/README.md\n",
        "pkg/specs.py": "SPECS = ROOT" + ".parent / 'specs'\n",
        "pkg/shared.py": "p = here.parent / " + "'shared'\n",
        "pkg/climb.py": f"UP = {climb}" + ".parents[2]\nOK = " + climb + ".parents[1]\n",
        "pkg/chain.py": f"UP = {climb}" + ".parent.parent.parent\nOK = " + climb + ".parent.parent\n",
        "pkg/dirs.py": f"UP = os.path.dirname(os.path.dirname(os.path.dirname({FILE})))\n"
                       f"OK = os.path.dirname(os.path.dirname({FILE}))\n",
        "scripts/run.sh": "cat /wor" + "k/shared/specs/x.json\nHOME=/home/nonroot\n",
        "untracked.bin": "ignored",
    }
    _git_tree(tmp_path, files)
    (tmp_path / "not-added.py").write_text(f"x = '{SIBLING}'\n")  # not tracked: not scanned
    found = {(h.path, h.line) for h in scan_tree(tmp_path)}
    assert found == {("docs/guide.md", 2), ("pkg/specs.py", 1), ("pkg/shared.py", 1), ("pkg/climb.py", 1),
                     ("pkg/chain.py", 1), ("pkg/dirs.py", 1), ("scripts/run.sh", 1)}


def test_the_guard_tells_beside_from_inside(tmp_path):
    parent = tmp_path / "parent"
    for folder in ("checkout/tests", "sibling/specs", ".cache/mlfn"):
        (parent / folder).mkdir(parents=True)
    guard = OutsideReads(parent / "checkout")
    (parent / "made-by-a-test").mkdir()  # created after the guard started: not a sibling
    assert guard.outside(str(parent / "sibling" / "specs" / "x.json"))
    assert guard.outside(str(parent / "checkout" / ".." / "sibling"))
    assert not guard.outside(str(parent / "checkout" / "tests" / "specs" / "README.md"))
    assert not guard.outside(str(parent / ".cache" / "mlfn" / "x"))  # a home folder's hidden entries
    assert not guard.outside(str(parent / "made-by-a-test" / "x"))
    assert not guard.outside(str(parent))
    assert not GUARD.outside(sys.prefix) and not GUARD.outside(str(ROOT / "README.md"))


def _checkout_with_a_test(tmp_path: Path, test_body: str) -> Path:
    """tmp/parent/checkout with the guard and one test module, and tmp/parent/sibling/data.txt."""
    checkout = tmp_path / "parent" / "checkout"
    (checkout / "tests").mkdir(parents=True)
    (checkout / "tests" / "__init__.py").write_text("")
    shutil.copy(ROOT / "tests" / "checkout_guard.py", checkout / "tests" / "checkout_guard.py")
    (checkout / "tests" / "conftest.py").write_text('pytest_plugins = ["tests.checkout_guard"]\n')
    (checkout / "tests" / "test_reads.py").write_text(textwrap.dedent(test_body))
    (tmp_path / "parent" / "sibling").mkdir()
    (tmp_path / "parent" / "sibling" / "data.txt").write_text("x")
    (tmp_path / "parent" / ".cache").mkdir()
    (tmp_path / "parent" / ".cache" / "data.txt").write_text("x")
    return checkout


def _pytest(checkout: Path, tmp_path: Path, temp: Path = None) -> subprocess.CompletedProcess:
    temp = temp or tmp_path / "tmp"  # the child's temp folder (by default not an ancestor of the checkout)
    temp.mkdir(exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(temp), "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=checkout, env=env, capture_output=True, text=True, timeout=120)


INSIDE_READS = """
    from pathlib import Path

    def test_reads_inside_and_hidden_and_temp(tmp_path):
        here = Path(__file__).resolve()
        assert "pytest_plugins" in (here.parent / "conftest.py").read_text()
        assert (here.parents[2] / ".cache" / "data.txt").read_text() == "x"
        (tmp_path / "t").write_text("y")
        assert (tmp_path / "t").read_text() == "y"
"""


def test_a_run_that_reads_only_inside_the_checkout_passes(tmp_path):
    r = _pytest(_checkout_with_a_test(tmp_path, INSIDE_READS), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "outside the checkout" not in r.stdout


@pytest.mark.parametrize("temp", ["beside", "above", "parent"],
                         ids=["temp-elsewhere", "checkout-inside-temp", "checkout-directly-in-temp"])
def test_a_run_that_reads_a_sibling_folder_fails_naming_the_path_and_the_reader(tmp_path, temp):
    body = INSIDE_READS + """
    def test_reads_a_sibling():
        sibling = Path(__file__).resolve().parents[1].parent / "sibling"  # (not spelled as one climb)
        assert (sibling / "data.txt").read_text() == "x"
        assert [p.name for p in sibling.iterdir()] == ["data.txt"]
    """
    checkout = _checkout_with_a_test(tmp_path, body)
    r = _pytest(checkout, tmp_path, {"beside": tmp_path / "tmp", "above": tmp_path, "parent": checkout.parent}[temp])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 passed" in r.stdout  # every test passed: the guard alone fails the run
    sibling = (tmp_path / "parent" / "sibling").resolve()
    assert "reads outside the checkout" in r.stdout
    assert f"{sibling / 'data.txt'} (opened during tests/test_reads.py::test_reads_a_sibling, " \
           f"at tests/test_reads.py:" in r.stdout
    assert f"{sibling} (opened during tests/test_reads.py::test_reads_a_sibling" in r.stdout  # the listing
    assert ".cache" not in r.stdout.split("reads outside the checkout", 1)[1]
