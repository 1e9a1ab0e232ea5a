"""Prometheus's own tools: ``promtool check metrics`` lints a text exposition, ``promtool
test rules`` evaluates a query over given series."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from tests.support.servers import require_binary


def promtool_problems(exposition: bytes) -> str:
    """What ``promtool check metrics`` finds wrong in ``exposition`` ("" when nothing)."""
    checked = subprocess.run(
        [require_binary("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return "" if checked.returncode == 0 else (checked.stdout + checked.stderr).decode()


def promql_test_problems(
    input_series: dict[str, str], expr: str, at: str, expected: dict[str, float]
) -> str:
    """What ``promtool test rules`` finds wrong when ``expr`` is evaluated at ``at`` over
    ``input_series`` (series -> values, in promtool's notation: ``"0+1x10"``, every minute)
    and should give exactly ``expected`` (series -> value); "" when it does."""
    test = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": series, "values": values} for series, values in input_series.items()
                ],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": at,
                        "exp_samples": [
                            {"labels": labels, "value": value} for labels, value in expected.items()
                        ],
                    }
                ],
            }
        ],
    }
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "test.yml"
        path.write_text(json.dumps(test))  # JSON is YAML
        checked = subprocess.run(
            [require_binary("promtool"), "test", "rules", str(path)],
            capture_output=True,
            timeout=30,
            check=False,
        )
    return "" if checked.returncode == 0 else (checked.stdout + checked.stderr).decode()
