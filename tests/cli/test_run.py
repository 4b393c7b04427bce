"""CLI conventions shared by every command: global options anywhere, run directories, --trial knee|front|N,
short flags, help text for every option, exit codes 0/1/2/3/130, quiet output."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hwtune.cli import EXIT_BAD_INPUT, EXIT_INTERNAL, GlobalOptions, build_parser, main, split_global_options
from hwtune.cli._run import parse_trial_spec, resolve_source
from hwtune.errors import ConfigError, UnknownNameError

OLD_STUDY = Path(__file__).resolve().parents[1] / "data" / "study-0.1.0"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished run directory (study.db + artifacts/) as `hwtune tune --out DIR` leaves it."""
    run = tmp_path / "run"
    shutil.copytree(OLD_STUDY, run)
    return run


# ---- global options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--debug", "-q", "--json", "devices", "show", "host"],
        ["devices", "--debug", "show", "host", "-q", "--json"],
        ["devices", "show", "host", "--format", "json", "--quiet", "--debug"],
        ["devices", "show", "--format=json", "host", "--debug", "-q"],
    ],
)
def test_global_options_are_taken_from_anywhere(argv):
    opts, rest = split_global_options(argv)
    assert opts == GlobalOptions(debug=True, quiet=True, verbose=0, output_format="json")
    assert rest == ["devices", "show", "host"]


def test_verbose_counts_and_other_format_values_stay_with_the_command():
    opts, rest = split_global_options(["export", "run", "-vv", "--format", "onnx", "-v"])
    assert opts.verbose == 3 and opts.output_format == "table"
    assert rest == ["export", "run", "--format", "onnx"]


def test_nothing_after_double_dash_is_taken():
    opts, rest = split_global_options(["profile", "-q", "--", "--json"])
    assert opts.quiet and not opts.json and rest == ["profile", "--", "--json"]


@pytest.mark.parametrize("argv", [["--json", "--format", "table", "devices"], ["-q", "-v", "devices"]])
def test_contradicting_global_options_are_one_line_exit_2(argv, capsys):
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "contradict" in err


def test_debug_after_the_command_shows_the_exception():
    with pytest.raises(UnknownNameError):
        main(["devices", "show", "raspbery-pi-4", "--debug"])


def test_json_before_a_nested_command_is_honoured(capsys):
    assert main(["devices", "--json", "show", "stm32h743"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "stm32h743"


def test_a_command_without_json_output_refuses_json(tmp_path, monkeypatch, capsys):
    (tmp_path / "hwtune_fake_cmd.py").write_text(
        "def add_parser(subparsers):\n"
        "    p = subparsers.add_parser('fake', help='a command with no JSON output')\n"
        "    p.set_defaults(func=lambda args: print('table') or 0)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("hwtune.cli._OPTIONAL_COMMAND_MODULES", ("hwtune_fake_cmd",))
    assert main(["fake"]) == 0 and capsys.readouterr().out == "table\n"
    assert main(["fake", "--json"]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == "" and "hwtune fake has no JSON output" in captured.err


def test_an_unexpected_error_is_one_line_exit_3(tmp_path, monkeypatch, capsys):
    (tmp_path / "hwtune_bug_cmd.py").write_text(
        "def add_parser(subparsers):\n"
        "    p = subparsers.add_parser('bug', help='a command with a bug')\n"
        "    p.set_defaults(func=lambda args: {}['missing'])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("hwtune.cli._OPTIONAL_COMMAND_MODULES", ("hwtune_bug_cmd",))
    assert main(["bug"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err and "--debug" in err
    with pytest.raises(KeyError):
        main(["bug", "--debug"])


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("hwtune.cli.recipes.run", interrupted)
    assert main(["recipes"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_console_script_debug_anywhere():
    proc = subprocess.run([sys.executable, "-m", "hwtune", "devices", "show", "nope", "--debug"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "Traceback" in proc.stderr  # the exception escapes with --debug


# ---- help text and short flags ------------------------------------------------------------------


def _all_parsers(parser: argparse.ArgumentParser, name: str = "hwtune"):
    yield name, parser
    for action in parser._actions:  # argparse has no public way to walk sub-commands
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _all_parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_command_has_help_text():
    missing = []
    for name, parser in _all_parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not (action.help or "").strip():
                missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_every_command_lists_the_global_options_and_exit_codes_are_documented():
    top = build_parser()
    assert "exit codes: 0 ok, 1" in top.format_help() and "130 interrupted" in top.format_help()
    for name, parser in _all_parsers(top):
        text = parser.format_help()
        assert "--debug" in text and "--quiet" in text and "--verbose" in text and "--json" in text, name


def test_short_flags():
    parser = build_parser()
    args = parser.parse_args(["tune", "fashion-convnet", "--device", "host", "-n", "3", "-o", "runs/x"])
    assert args.trials == 3 and args.out == "runs/x"
    args = parser.parse_args(["export", "runs/x", "--trial", "knee", "-o", "deploy"])
    assert args.run == "runs/x" and args.out == "deploy" and args.trial == "knee"
    args = parser.parse_args(["demo", "-n", "5", "-o", "d"])
    assert args.trials == 5 and args.out == "d"


# ---- run directories and --trial ----------------------------------------------------------------


def test_trial_spec():
    assert parse_trial_spec(None).kind == "knee"
    assert parse_trial_spec("knee").kind == "knee" and parse_trial_spec("FRONT").kind == "front"
    assert parse_trial_spec("7").numbers == (7,) and parse_trial_spec("3, 7").numbers == (3, 7)
    with pytest.raises(ConfigError, match="knee, front or trial numbers"):
        parse_trial_spec("kne")


def test_a_run_directory_a_db_file_and_a_url_name_the_same_study(run_dir):
    by_dir = resolve_source(str(run_dir), None, None)
    assert by_dir.storage == f"sqlite:///{run_dir.resolve() / 'study.db'}" and by_dir.run_dir == run_dir
    assert resolve_source(str(run_dir / "study.db"), None, None).storage == by_dir.storage
    assert resolve_source(by_dir.storage, None, "tiny") == type(by_dir)(by_dir.storage, "tiny")
    assert resolve_source(None, by_dir.storage, "tiny").study_name == "tiny"


def test_a_run_directory_with_a_remote_storage_is_found_from_front_json(tmp_path):
    (tmp_path / "front.json").write_text(json.dumps({"study": "s1", "storage": "postgresql://db/x"}))
    src = resolve_source(str(tmp_path), None, None)
    assert (src.storage, src.study_name) == ("postgresql://db/x", "s1")


@pytest.mark.parametrize(
    ("run", "storage", "message"),
    [
        (None, None, "which study?"),
        ("a", "sqlite:///b.db", "not both"),
        ("no/such/dir", None, "no such run directory"),
    ],
)
def test_bad_study_sources_are_config_errors(run, storage, message):
    with pytest.raises(ConfigError, match=message):
        resolve_source(run, storage, None)


def test_front_takes_a_run_directory(run_dir, capsys):
    assert main(["front", str(run_dir)]) == 0
    by_dir = capsys.readouterr().out
    assert main(["front", "--storage", f"sqlite:///{run_dir / 'study.db'}", "--study", "tiny"]) == 0
    assert capsys.readouterr().out == by_dir and "hypervolume" in by_dir
    assert main(["front", str(run_dir), "--json", "-q"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)


def test_front_of_a_directory_that_is_not_a_run_is_exit_2(tmp_path, capsys):
    assert main(["front", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "not a hwtune run directory" in capsys.readouterr().err


def test_report_writes_into_the_run_directory(run_dir, capsys):
    assert main(["report", str(run_dir), "--json"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert {"front", "report"} <= set(paths)
    assert (run_dir / "report.md").is_file() and (run_dir / "front.json").is_file()


def test_export_knee_from_a_run_directory(run_dir, capsys, fashion_dir):
    from hwtune.tuner import load_result

    knee = load_result(f"sqlite:///{run_dir / 'study.db'}", "tiny").knee
    assert main(["export", str(run_dir), "--trial", "knee", "-q"]) == 0
    assert capsys.readouterr().out == ""  # -q: nothing but errors
    manifest = json.loads((run_dir / "export" / f"trial-{knee.number}" / "manifest.json").read_text())
    assert manifest["study"]["trial"] == knee.number
    assert (run_dir / "export" / f"trial-{knee.number}" / "model.onnx").is_file()


def test_export_with_storage_needs_an_output_directory(run_dir, capsys):
    assert main(["export", "--storage", f"sqlite:///{run_dir / 'study.db'}", "--trial", "0"]) == EXIT_BAD_INPUT
    assert "needs -o DIR" in capsys.readouterr().err


def test_export_unknown_trial_word_is_exit_2(run_dir, capsys):
    assert main(["export", str(run_dir), "--trial", "best", "-o", str(run_dir / "x")]) == EXIT_BAD_INPUT
    assert "--trial must be knee, front or trial numbers" in capsys.readouterr().err


# ---- recipes, profile exit code, quiet ---------------------------------------------------------


def test_recipes_lists_the_bundled_recipes(capsys):
    from hwtune.space import list_recipes

    assert main(["recipes"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in list_recipes())
    assert main(["recipes", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_recipes() and all(r["candidates"] > 0 for r in rows)
    assert main(["recipes", "show", "fashion-convnet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "convnet"
    assert main(["recipes", "show", "fashion-convnt"]) == EXIT_BAD_INPUT
    assert "did you mean 'fashion-convnet'" in capsys.readouterr().err


def test_profile_of_a_model_that_does_not_fit_exits_1(tmp_path, capsys):
    # a Raspberry Pi 4 with 1 MiB of RAM and 2 MiB of storage: ResNet-18 fits neither (and the runtime stays ORT)
    text = (Path(__file__).resolve().parents[2] / "profiles" / "raspberry-pi-4.toml").read_text()
    text = re.sub(r"(?m)^ram_kb = .*$", "ram_kb = 1024", text)
    text = re.sub(r"(?m)^storage_kb = .*$", "storage_kb = 2048", text)
    text = re.sub(r'(?m)^id = .*$', 'id = "tiny-pi"', text)
    small = tmp_path / "tiny-pi.toml"
    small.write_text(text)
    argv = ["profile", "torchvision:resnet18", "--device", str(small), "--no-latency", "--precision", "int8"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "DOES NOT FIT" in captured.out and "does not fit tiny-pi" in captured.err
    assert main([*argv, "--json", "-q"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["fits"]["overall"] is False and captured.err == ""


def test_tune_quiet_prints_nothing(tuner_recipe, tmp_path, capfd, fashion_dir):
    argv = ["tune", str(tuner_recipe), "--device", "host", "-n", "1", "--epochs", "0.05", "--rungs", "1",
            "--train-limit", "256", "--val-limit", "64", "--seed", "0", "-o", str(tmp_path / "run"), "-q"]
    assert main(argv) == 0
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert (tmp_path / "run" / "study.db").is_file()
