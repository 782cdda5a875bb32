"""``rlhfkit feedback ...`` end to end through argparse, with the errors users will actually make."""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sqlite3
from pathlib import Path

import pytest

from rlhfkit.data.preference_readers import read_trl_pairs
from rlhfkit.feedback import cli
from rlhfkit.feedback.annotators import annotator_by_token
from rlhfkit.feedback.store import FeedbackStore


@pytest.fixture(autouse=True)
def _no_store_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.STORE_ENV, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["feedback", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_full_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "fb.sqlite")
    code, out, _ = run(capsys, "init", "--store", store, "--overlap", "2", "--name", "toxicity")
    assert code == 0 and "created feedback project 'toxicity'" in out and "2 annotator(s) per item" in out

    code, out, _ = run(capsys, "add-annotator", "alice", "--store", store, "--admin")
    token = out.strip().splitlines()[-1]
    assert code == 0 and "created admin alice" in out
    with FeedbackStore.open(store) as opened:
        assert annotator_by_token(opened, token).name == "alice"

    source = tmp_path / "pairs.jsonl"
    source.write_text(
        "".join(
            json.dumps(
                {"prompt": f"dialogue {i}", "chosen": f"calm summary {i}", "rejected": f"you idiot {i}"}
            )
            + "\n"
            for i in range(5)
        )
    )
    code, out, _ = run(capsys, "import", str(source), "--store", store, "--unlabeled")
    assert code == 0 and "read 5 records" in out and "5 new items" in out

    code, out, _ = run(
        capsys, "simulate", "--store", store, "--annotators", "2", "--error-rate", "0,0.5", "--seed", "3"
    )
    assert code == 0 and "simulated 10 labels" in out and "5 of 5 retired" in out

    code, out, _ = run(capsys, "stats", "--store", store)
    assert code == 0 and "5 retired (100%)" in out and "Krippendorff's alpha" in out and "sim-2" in out
    code, out, _ = run(capsys, "stats", "--store", store, "--json")
    stats = json.loads(out)
    assert (
        stats["items_retired"] == 5
        and stats["labels_live"] == 10
        and "krippendorff_alpha" in stats["agreement"]
    )

    output = tmp_path / "prefs.jsonl"
    code, out, _ = run(capsys, "export", "--store", store, "--output", str(output))
    assert code == 0 and out.startswith("wrote ") and "preference pairs" in out
    assert len(list(read_trl_pairs(output))) == int(out.split()[1])
    code, out, _ = run(
        capsys, "export", "--store", store, "-o", str(tmp_path / "u.jsonl"), "--kind", "unpaired"
    )
    assert code == 0 and "unpaired labels" in out


def test_import_reports_pairs_skipped_as_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "fb.sqlite")
    assert run(capsys, "init", "--store", store, "--overlap", "1")[0] == 0
    source = tmp_path / "pairs.jsonl"
    source.write_text(
        json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"})
        + "\n"
        + json.dumps({"prompt": "q", "chosen": "calm", "rejected": "rude"})
        + "\n"
    )
    code, out, _ = run(capsys, "import", str(source), "--store", store)
    assert code == 0 and "read 2 records" in out and "1 new items" in out and "labels: 1 added" in out
    assert "skipped 1 pair(s) whose chosen and rejected are identical" in out
    code, out, _ = run(capsys, "export", "--store", store, "--output", str(tmp_path / "out.jsonl"))
    assert code == 0 and "wrote 1 preference pairs" in out


def test_a_full_disk_during_export_exits_2_and_keeps_the_previous_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = str(tmp_path / "fb.sqlite")
    assert run(capsys, "init", "--store", store, "--overlap", "1")[0] == 0
    for n in (1, 2):
        source = tmp_path / f"pairs{n}.jsonl"
        source.write_text(json.dumps({"prompt": f"p{n}", "chosen": "calm", "rejected": "rude"}) + "\n")
        assert run(capsys, "import", str(source), "--store", store)[0] == 0
        if n == 1:
            output = tmp_path / "prefs.jsonl"
            assert run(capsys, "export", "--store", store, "--output", str(output))[0] == 0
            previous = output.read_bytes()

    def disk_full(_fd: int) -> None:  # the data is written, but the disk cannot hold it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    code, out, err = run(capsys, "export", "--store", store, "--output", str(output))
    monkeypatch.undo()
    assert code == 2 and out == ""
    assert str(output) in err and "no space left on device" in err and "free some space" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert output.read_bytes() == previous, "the previous export is intact"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".prefs")) == [], (
        "no temp file left"
    )


def test_export_onto_a_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "fb.sqlite")
    assert run(capsys, "init", "--store", store)[0] == 0
    folder = tmp_path / "exports"
    folder.mkdir()
    code, _, err = run(capsys, "export", "--store", store, "--output", str(folder))
    assert code == 2 and f"could not write {folder}: is a directory" in err and "not a folder" in err


def test_user_errors_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "fb.sqlite")
    code, _, err = run(capsys, "init", "--store", store, "--question", "ranking")
    assert code == 2 and "unknown question type 'ranking'" in err
    assert run(capsys, "init", "--store", store)[0] == 0
    code, _, err = run(capsys, "init", "--store", store)
    assert code == 2 and "already holds a feedback project" in err

    code, _, err = run(capsys, "stats")
    assert code == 2 and "no feedback store given" in err and cli.STORE_ENV in err
    code, _, err = run(capsys, "stats", "--store", str(tmp_path / "missing.sqlite"))
    assert code == 2 and "no feedback project" in err

    assert run(capsys, "add-annotator", "bob", "--store", store)[0] == 0
    code, _, err = run(capsys, "add-annotator", "bob", "--store", store)
    assert code == 2 and "already exists" in err
    code, out, _ = run(capsys, "add-annotator", "bob", "--store", store, "--new-token")
    assert code == 0 and "the old one no longer works" in out

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "p", "rejected": "r"}\n')
    code, _, err = run(capsys, "import", str(bad), "--store", store)
    assert code == 2 and "bad.jsonl:2: missing field 'chosen'" in err
    code, _, err = run(capsys, "import", str(bad), "--store", store, "--format", "parquet")
    assert code == 2 and "unknown import format 'parquet'" in err
    code, _, err = run(capsys, "simulate", "--store", store, "--error-rate", "lots")
    assert code == 2 and "--error-rate 'lots'" in err


def test_an_unreadable_schema_version_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "fb.sqlite")
    assert run(capsys, "init", "--store", store)[0] == 0
    with sqlite3.connect(store) as db:
        db.execute("UPDATE feedback_project SET schema_version = 'abc'")
    code, _, err = run(capsys, "stats", "--store", store)
    assert code == 2 and "schema version is unreadable ('abc'" in err and "Traceback" not in err


def test_unreachable_database_url(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = run(capsys, "stats", "--store", f"postgresql://someone:pw@127.0.0.1:{port}/labels")
    assert code == 2 and "cannot connect to the store" in err and "pw" not in err.replace("password", "")


def test_store_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = str(tmp_path / "env.sqlite")
    monkeypatch.setenv(cli.STORE_ENV, store)
    code, out, _ = run(capsys, "init")
    assert code == 0 and "env.sqlite" in out


def test_serve_binds_loopback_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    store = str(tmp_path / "fb.sqlite")
    run(capsys, "init", "--store", store)
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    code, out, err = run(capsys, "serve", "--store", store)
    assert code == 0 and calls == [{"host": "127.0.0.1", "port": 8000, "log_level": "warning"}]
    assert "http://127.0.0.1:8000/login" in out and err == ""
    code, _, err = run(capsys, "serve", "--store", store, "--host", "0.0.0.0", "--port", "9000")
    assert calls[-1]["host"] == "0.0.0.0" and "exposes the app" in err


def test_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("init", "add-annotator", "serve", "simulate", "stats", "export", "import"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["feedback", command, "--help"])
        assert exit_info.value.code == 0
        assert "--store" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["feedback", "--help"])
    assert "typical session" in capsys.readouterr().out


def test_register_accepts_extra_commands() -> None:
    def add_generate(commands: argparse._SubParsersAction) -> None:
        generate = commands.add_parser("generate", help="sample candidates")
        cli.add_store_argument(generate)
        generate.set_defaults(func=lambda args: 0)

    parser = argparse.ArgumentParser(prog="rlhfkit")
    cli.register(parser.add_subparsers(dest="command"), extra_commands=[add_generate])
    args = parser.parse_args(["feedback", "generate", "--store", "x.sqlite"])
    assert args.func(args) == 0 and args.store == "x.sqlite"
