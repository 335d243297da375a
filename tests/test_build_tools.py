"""scripts/build-tools: `make setup` fails early and says what to install when the machine cannot
compile quant_core/native (no compiler, no Python headers), instead of a pip build traceback."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build-tools"


def run(python: str, path: str) -> subprocess.CompletedProcess[str]:
    # A PATH without cc, gcc and apt-get stands for a machine that has none of them.
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), python],
        env={"PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_this_machine_has_what_the_build_needs() -> None:
    done = run(sys.executable, "/usr/local/bin:/usr/bin:/bin")
    assert done.returncode == 0, done.stderr


def test_no_compiler_is_a_clear_error(tmp_path: Path) -> None:
    done = run(sys.executable, str(tmp_path))
    assert done.returncode == 1
    assert "no C compiler (cc/gcc) on PATH; install gcc" in done.stderr


def test_missing_python_headers_name_the_package(tmp_path: Path) -> None:
    # A Python whose include directory has no Python.h (a fake interpreter answering the two
    # questions the script asks), on a machine with a compiler but no apt-get.
    include = tmp_path / "include"
    include.mkdir()
    fake = tmp_path / "python"
    fake.write_text(
        f'#!/bin/bash\ncase "$2" in *sysconfig*) echo {include};; *) echo 3.11;; esac\n'
    )
    fake.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cc").symlink_to("/usr/bin/gcc")
    done = run(str(fake), str(bin_dir))
    assert done.returncode == 1
    assert f"no Python.h in {include}" in done.stderr
    assert "python3.11-dev" in done.stderr
