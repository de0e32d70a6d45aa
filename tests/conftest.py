from __future__ import annotations


# -- fault-injection summary (tests/faults.py) -----------------------------------------------
def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    from faults import summary_line

    line = summary_line()
    if line:
        terminalreporter.write_sep("=", "fault injection")
        terminalreporter.write_line(line)
