"""``dlq`` and ``reconcile`` arguments an operator can get wrong: each is refused with exit 2 and
one line, before Kafka is asked anything (the configured broker here does not exist)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.service.cli import main
from tests.service.support import service_document, write_yaml


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--since", "99999999d"),  # before year 1
        ("replay", "--until", "1000000000d"),  # past what a time span can hold
        ("list", "--limit", "0"),
        ("show", "--max-bytes", "-1"),
        ("list", "--width", "0"),
        ("replay", "--batch", "0"),
        ("replay", "--max-replays", "0"),
    ],
)
def test_an_out_of_range_argument_is_refused_with_exit_2_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    config = write_yaml(tmp_path / "bridge.yaml", service_document(tmp_path))
    try:
        code = main(["-c", str(config), "dlq", *args])
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and err.strip(), err


@pytest.mark.parametrize("since", ["99999999d", "1000000000d", "9" * 400 + "s"])
def test_reconcile_refuses_a_window_start_past_what_a_date_can_hold_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    config = write_yaml(tmp_path / "bridge.yaml", service_document(tmp_path))
    code = main(["-c", str(config), "reconcile", "--since", since])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and "reconcile failed" not in err and "before the year 1" in err, err


def test_reconcile_table_escapes_the_provider_supplied_key_and_statuses() -> None:
    import io

    from bridge.consumer.reconcile import Drift, DriftKind, Window
    from bridge.service.reconcile_cli import Report, TableWriter

    hostile = "\x1b]0;owned\x07\x1b[2J\u202e"
    drift = Drift(DriftKind.STATUS_DIFFERS, f"okx:deposit:{hostile}", "okx", "okx:main", 0, "completed", f"2{hostile}",
                  "pending", f"0{hostile}", "t/0@1")  # fmt: skip
    out = io.StringIO()
    TableWriter(out, Report(Window(0, 1))).row(drift)
    assert not any(ch in out.getvalue() for ch in "\x1b\x07\u202e")
    assert "okx:deposit:\\x1b]0;owned\\x07" in out.getvalue()
