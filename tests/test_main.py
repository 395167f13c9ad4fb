"""Every documented entry point answers as ``python -m tflatent.<name>`` and as ``tflatent <name>``."""

import importlib
import shutil
import subprocess
import sys

import pytest

from tflatent import __main__ as command


@pytest.mark.parametrize("name", list(command.COMMANDS))
def test_each_entry_point_module_and_subcommand_parse_their_arguments(name, capsys):
    entry = importlib.import_module(f"tflatent.{name}")
    for main in (entry.main, lambda argv: command.main([name, *argv])):
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])
        assert exit_info.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_the_command_lists_its_subcommands_and_refuses_unknown_ones(capsys):
    assert command.main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert all(name in usage for name in command.COMMANDS)
    assert command.main([]) == 2
    assert command.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_the_installed_console_script_runs_a_subcommand():
    script = shutil.which("tflatent") or shutil.which("tflatent", path=str(sys.prefix) + "/bin")
    assert script, "the tflatent console script is not installed (pip install -e .)"
    done = subprocess.run([script, "evaluate", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--run" in done.stdout, done.stderr[-1000:]
