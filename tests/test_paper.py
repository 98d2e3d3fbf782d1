"""``sn40l paper --quick``: the report's files exist and its tables hold numbers (the reduced
configuration runs every experiment over the real runner, compiler and CoE benchmark)."""

from __future__ import annotations

import json
import re

import pytest

from sn40l.errors import ConfigError
from sn40l.paper.experiments import PaperConfig
from sn40l.paper.report import check_out, run


def test_quick_report_has_every_table_and_plot(ray_session, tmp_path):
    out = tmp_path / "report"
    res = run(out, PaperConfig.quick(), quiet=True)
    for name in ("report.md", "results.json", "table4.png", "fig10_11.png", "fig12.png",
                 "fig13.png"):
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    for heading in ("## Table IV", "## Fig. 10 / Fig. 11", "## Table V / Fig. 12",
                    "## Fig. 13"):
        assert heading in text
    # the paper's own figure beside ours; ours is a number
    row = next(line for line in text.splitlines() if line.startswith("| llama3.1-8b"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) > 0 and cells[-1] == "1042"
    spec = next(r for r in res["table_iv"]["rows"] if r["model"] == "llama3.1-70b")
    assert spec["spec_tokens_per_s_per_user"] > spec["tokens_per_s_per_user"]
    assert res["table_iv"]["switch"]["switch_ms"] > 0
    # decode gains more from fusion and hardware orchestration than prefill does
    fus = {(r["model"], r["seq_len"], r["mode"]): r for r in res["fusion"]["rows"]
           if "error" not in r}
    assert fus[("llama2-7b", 4096, "decode")]["speedup_fused_ho"] > \
        fus[("llama2-7b", 4096, "prefill")]["speedup_fused_ho"] > 1
    assert re.search(r"\| 10 \| 1 \| 20 \| dgx-h100 \| 1/1 \| \d+\.\d \|", text)
    assert json.loads((out / "results.json").read_text())["coe"]["speedups"]
    # a Table III model that is not a preset is named as missing, not a crash
    missing = [m for m in res["fusion"]["missing_presets"]]
    for m in missing:
        assert m in text


def test_report_refuses_a_directory_of_other_files(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="non-empty directory"):
        check_out(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
